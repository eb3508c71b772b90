"""The Spark steps of a run, backend-neutral: entry script + arguments from the run plan.

A training run (``image_classification``, a plan of kind ``TRAINING_KIND``) has three steps; a scoring
run (``image_scoring``, kind ``SCORING_KIND``) has one. Step names, task ids and entry scripts are one
name each, declared here. The local backend passes these arguments to ``spark-submit``
against its standalone master; the EMR backend wraps exactly the same ones in
``command-runner.jar spark-submit`` steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from image_pipeline.conventions import RANDOM_WEIGHTS
from image_pipeline.planning.layout import join
from image_pipeline.planning.run_plan import TRAINING_KIND
from image_pipeline.planning.scoring_plan import SCORING_KIND

EXTRACT, TRAIN, EVALUATE, SCORE = "extract_features", "train_models", "evaluate_models", "score_inbox"
STEP_NAMES = (EXTRACT, TRAIN, EVALUATE)  # a training run's steps, in order
SCORING_STEP_NAMES = (SCORE,)
# A plan serialised before the inference choice existed has no "runtime" (nor "precision"): it means what
# ran then, TensorFlow at fp32, not today's declared defaults (openvino). A plan without "target_precision"
# passes none: the training job's own default.
RUNTIME_OF_PLANS_WITHOUT_ONE = "tensorflow"
PRECISION_OF_PLANS_WITHOUT_ONE = "fp32"


@dataclass(frozen=True)
class StepSpec:
    """One Spark step: a name (also its task id), the entry script, its arguments."""

    name: str
    args: tuple[str, ...]

    @property
    def entry_script(self) -> str:
        """Each step's entry script is named after it (``spark_jobs/<name>.py``)."""
        return f"{self.name}.py"


def opt(name: str, value: object) -> str:
    """One option and its value as a single argument, ``--name=value``: argparse then never mistakes a value
    that starts with ``-`` (a class named ``-x``, a run key ``--y``) for an option of its own."""
    return f"--{name}={value}"


def _weights_args(plan: dict) -> list[str]:
    if plan["weights_uri"] == RANDOM_WEIGHTS:
        return ["--random-weights"]
    return [opt("weights-uri", plan["weights_uri"])] if plan["weights_uri"] else []


def _inference_args(plan: dict) -> list[str]:
    return [opt("runtime", plan.get("runtime", RUNTIME_OF_PLANS_WITHOUT_ONE)),
            opt("precision", plan.get("precision", PRECISION_OF_PLANS_WITHOUT_ONE))]


def _read_args(plan: dict) -> list[str]:
    # a plan serialised before the setting existed passes none: the jobs' default
    return [opt("read-concurrency", plan["read_concurrency"])] if "read_concurrency" in plan else []


def _run_args(plan: dict, *names: str) -> list[str]:
    """``--<name>=<plan value>`` for plan keys named like the options (``features_uri`` -> ``--features-uri``)."""
    return [opt(name.replace("_", "-"), plan[name]) for name in names]


def build_steps(plan: dict, staged_weights_uri: str | None = None) -> list[StepSpec]:
    """The run's steps, in order. ``plan`` is a RunPlan as a dict (what crosses XCom).

    ``staged_weights_uri`` replaces the plan's weights URI where the weights were copied next to
    the code for the cluster (EMR); every other argument comes from the plan as it is. Every option is one
    argument with its value (``opt``).
    """
    if staged_weights_uri:
        plan = {**plan, "weights_uri": staged_weights_uri}
    # the class list in a file the plan wrote (plans from before it: the list itself, short enough then)
    labels = [opt("labels-uri", plan["labels_uri"])] if plan.get("labels_uri") else [
        opt("labels-json", json.dumps(plan["labels"]))]
    extract_summary = join(plan["steps_uri"], f"{EXTRACT}.json")
    extract = [
        *_run_args(plan, "images_uri", "features_uri", "rejects_uri", "backbone"), *_weights_args(plan),
        *_run_args(plan, "run_key", "modified_before", "batch_size"), *labels,
        opt("summary-uri", extract_summary), *_read_args(plan), *_inference_args(plan),
    ]
    train = [
        *_run_args(plan, "features_uri", "backbone", "models_uri", "run_key", "modified_before"), *labels,
        opt("pair-mode", plan["pair_mode"]),
        *([opt("focus-class", plan["focus_class"])] if plan["focus_class"] else []),
        opt("split-ratios", ",".join(str(r) for r in plan["split_ratios"])),
        *_run_args(plan, "max_per_class", "iterations", "pca_components", "test_fraction", "seed"),
        opt("extract-summary-uri", extract_summary),
        *([opt("target-precision", plan["target_precision"])] if "target_precision" in plan else []),
        # recorded in the model for prediction ("random" included, so prediction builds the same backbone)
        *([opt("weights-uri", plan["weights_uri"])] if plan["weights_uri"] else []),
    ]
    evaluate = [
        *_run_args(plan, "models_uri", "report_uri", "rejects_uri", "backbone", "run_key", "modified_before"),
        opt("extract-summary-uri", extract_summary),
    ]
    return [StepSpec(EXTRACT, tuple(extract)), StepSpec(TRAIN, tuple(train)), StepSpec(EVALUATE, tuple(evaluate))]


def _model_args(plan: dict) -> list[str]:
    """The scoring job's model: the gated model.json and its digest, or (a plan from before models were
    published immutably) the run's models folder."""
    if plan.get("model_json_uri"):
        return [opt("model-json-uri", plan["model_json_uri"]), opt("model-sha256", plan["model_sha256"])]
    return [opt("model-uri", plan["models_uri"])]


def build_scoring_steps(plan: dict, staged_weights_uri: str | None = None) -> list[StepSpec]:
    """The scoring run's step. ``plan`` is a ScoringPlan as a dict; ``staged_weights_uri`` as for
    ``build_steps``. Without a weights URI the job loads the weights recorded in the model."""
    weights = staged_weights_uri or plan["weights_uri"]
    score = [
        *_run_args(plan, "inbox_uri", "predictions_uri"), *_model_args(plan),
        *_run_args(plan, "run_key", "modified_before", "batch_size"),
        *([opt("weights-uri", weights)] if weights and weights != RANDOM_WEIGHTS else []),
        *([opt("threshold", plan["answer_threshold"])] if plan.get("answer_threshold") is not None else []),
        opt("summary-uri", join(plan["steps_uri"], f"{SCORE}.json")),
        *_read_args(plan), *_inference_args(plan),
    ]
    return [StepSpec(SCORE, tuple(score))]


def steps_for(plan: dict, staged_weights_uri: str | None = None) -> list[StepSpec]:
    """The steps of any plan, by the kind the plan says it is (``TRAINING_KIND`` or ``SCORING_KIND``)."""
    builders = {TRAINING_KIND: build_steps, SCORING_KIND: build_scoring_steps}
    if plan.get("kind") not in builders:
        raise ValueError(f"plan kind {plan.get('kind')!r} is not one of {', '.join(builders)}")
    return builders[plan["kind"]](plan, staged_weights_uri)


def step_by_name(plan: dict, name: str) -> StepSpec:
    """One step of the run by name; a clear error for an unknown one."""
    steps = steps_for(plan)
    for step in steps:
        if step.name == name:
            return step
    raise ValueError(f"unknown step {name!r}; steps are {', '.join(s.name for s in steps)}")
