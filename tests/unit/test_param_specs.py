"""Each param is declared once (``wiring.params.PARAM_SPECS``): the trigger forms' Params and the plans'
checks and defaults all come from that declaration. Parametrized over the table, so a new param is covered."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import pytest

from image_pipeline.compute.emr.requests import load_emr_settings
from image_pipeline.compute.steps import (
    PRECISION_OF_PLANS_WITHOUT_ONE,
    RUNTIME_OF_PLANS_WITHOUT_ONE,
    build_scoring_steps,
    build_steps,
    steps_for,
)
from image_pipeline.conventions import PREPARED_WEIGHTS
from image_pipeline.planning.layout import join
from image_pipeline.planning.run_plan import TRAINING_KIND, PlanError, RunPlan, build_run_plan
from image_pipeline.planning.scoring_plan import SCORING_KIND, ScoringPlan, build_scoring_plan
from image_pipeline.wiring.params import PARAM_SPECS, ParamSpec, dag_params, scoring_params
from image_pipeline.wiring.settings import load_settings

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LABELS = ["beagle", "pug", "Siamese"]
LOCAL = load_settings({"IMAGE_PIPELINE_ROOT_URI": "file:///data/root"})
ON_EMR = load_settings({"IMAGE_PIPELINE_ROOT_URI": "s3://bucket/root", "IMAGE_PIPELINE_COMPUTE": "emr"})
EMR = load_emr_settings({})
TRAINING_FORM = dag_params(ON_EMR, EMR)
SCORING_FORM = scoring_params(ON_EMR, EMR)
# params whose empty default means "derive it" (the images folder, every class found, the prepared weights)
RESOLVED_BY_THE_PLAN = {"images_uri", "labels", "weights_uri"}
NEEDED_WITH = {"one_vs_each": {"focus_class": "pug"}, "one_vs_rest": {"focus_class": "pug"}}


def latest(root: str) -> dict:
    return {"run_key": "train", "models_uri": f"{root}/runs/train/models", "backbone": "mobilenet_v2",
            "weights_uri": f"{root}/weights/mobilenet_v2_imagenet.keras", "labels": ["beagle", "pug"]}


def training_plan(params: dict, settings=ON_EMR) -> dict:
    return build_run_plan(params, "r", WHEN, settings, LABELS, EMR).as_dict()


def scoring_plan(params: dict, settings=ON_EMR) -> dict:
    return build_scoring_plan(params, "r", WHEN, settings, latest(settings.root_uri), EMR).as_dict()


def plans_of(name: str) -> list:
    """The plan builders of every DAG whose form shows the param."""
    return [build for form, build in ((TRAINING_FORM, training_plan), (SCORING_FORM, scoring_plan)) if name in form]


def test_every_form_param_is_declared_and_every_declaration_is_in_a_form():
    assert set(TRAINING_FORM) | set(SCORING_FORM) == set(PARAM_SPECS)
    assert all(spec.name == name for name, spec in PARAM_SPECS.items())


@pytest.mark.parametrize("name", sorted(PARAM_SPECS))
def test_the_forms_param_has_the_declarations_schema_title_and_description(name):
    spec = PARAM_SPECS[name]
    for form in (f for f in (TRAINING_FORM, SCORING_FORM) if name in f):
        param = form[name]
        assert param.schema == {"title": spec.title, **spec.schema()}
        assert spec.title and param.description
        if spec.has_default:
            assert param.value == spec.default_value()
    if not spec.has_default:  # the deployment's settings give it
        with pytest.raises(ValueError, match=name):
            spec.param()


def _edges(spec: ParamSpec) -> tuple[list[float], list[float]]:
    """(values at the bounds the plan must accept, values just outside it must refuse)."""
    if spec.kind == "integer":
        return [spec.low, spec.high], [spec.low - 1, spec.high + 1]
    inside = [math.nextafter(spec.low, math.inf), math.nextafter(spec.high, -math.inf)]
    outside = [math.nextafter(spec.low, -math.inf), math.nextafter(spec.high, math.inf)]
    return (inside, [spec.low, spec.high]) if spec.open else ([spec.low, spec.high], outside)


BOUNDED = sorted(n for n, s in PARAM_SPECS.items() if s.low is not None or (s.items and s.items.low is not None))


@pytest.mark.parametrize("name", BOUNDED)
def test_every_plan_accepts_the_declared_bounds_and_refuses_just_outside(name):
    spec = PARAM_SPECS[name]
    rule, wrap = (spec.items, lambda v: [v]) if spec.low is None else (spec, lambda v: v)
    accepted, refused = _edges(rule)
    for build in plans_of(name):
        for value in accepted:
            build({name: wrap(value)})
        for value in refused:
            with pytest.raises(PlanError, match=f"param '{name}'"):
                build({name: wrap(value)})


@pytest.mark.parametrize("name", sorted(n for n, s in PARAM_SPECS.items() if s.enum or s.pattern))
def test_every_plan_accepts_the_declared_choices_or_pattern_and_refuses_others(name):
    spec = PARAM_SPECS[name]
    accepted = list(spec.enum) if spec.enum else [spec.example]
    for build in plans_of(name):
        for value in accepted:
            build({name: value, **NEEDED_WITH.get(value, {})})
        with pytest.raises(PlanError, match=f"param '{name}'"):
            build({name: "not-a-declared-value"})


@pytest.mark.parametrize("build,form", [(training_plan, TRAINING_FORM), (scoring_plan, SCORING_FORM)])
def test_the_plans_defaults_are_the_forms_defaults(build, form):
    """A plan of no params is the plan of the form's defaults, and it holds each declared default as is."""
    from_form = build({name: param.value for name, param in form.items()})
    assert build({}) == from_form
    for name in form:
        spec = PARAM_SPECS[name]
        if spec.has_default and name in from_form and name not in RESOLVED_BY_THE_PLAN:
            assert from_form[name] == spec.default_value(), name


def test_no_plan_field_of_a_param_has_a_default_of_its_own():
    """The plans' param fields take their values from the declarations only: a dataclass default would be a
    second home for the rule (the plan builders fill every field)."""
    fields = [(plan_class.__name__, field) for plan_class in (RunPlan, ScoringPlan)
              for field in dataclasses.fields(plan_class) if field.name in PARAM_SPECS]
    assert len(fields) > 20  # the params the plans carry
    assert [(name, field.name) for name, field in fields if field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING] == []


def test_plans_say_their_kind_with_the_named_constants():
    training, scoring = training_plan({}, LOCAL), scoring_plan({}, LOCAL)
    assert (training["kind"], scoring["kind"]) == (TRAINING_KIND, SCORING_KIND) == ("training", "scoring")
    assert steps_for(training) == build_steps(training) and steps_for(scoring) == build_scoring_steps(scoring)


def test_a_plan_serialised_before_the_inference_choice_still_runs_tensorflow_at_fp32():
    import train_models

    old = {k: v for k, v in training_plan({}, LOCAL).items() if k not in ("runtime", "precision", "target_precision")}
    extract, train, _ = build_steps(old)
    assert extract.args[-2:] == (f"--runtime={RUNTIME_OF_PLANS_WITHOUT_ONE}",
                                 f"--precision={PRECISION_OF_PLANS_WITHOUT_ONE}") == ("--runtime=tensorflow",
                                                                                      "--precision=fp32")
    # the job's own default, as when such a plan ran
    assert not [a for a in train.args if a.startswith("--target-precision")]
    assert train_models.parse_args(list(train.args)).target_precision == PARAM_SPECS["target_precision"].default
    old_scoring = {k: v for k, v in scoring_plan({}, LOCAL).items() if k not in ("runtime", "precision")}
    assert build_scoring_steps(old_scoring)[0].args[-2:] == ("--runtime=tensorflow", "--precision=fp32")


def test_the_prepared_weights_are_named_by_the_conventions():
    assert LOCAL.default_weights_uri == join(LOCAL.root_uri, "weights", PREPARED_WEIGHTS["mobilenet_v2"])
    for backbone, name in PREPARED_WEIGHTS.items():
        assert training_plan({"backbone": backbone}, LOCAL)["weights_uri"] == join(LOCAL.root_uri, "weights", name)
    assert training_plan({"backbone": "vgg16"}, LOCAL)["weights_uri"] is None  # Keras' cache
