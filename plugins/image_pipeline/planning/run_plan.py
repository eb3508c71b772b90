"""The run plan: params + data interval -> one explicit, JSON-serialisable description of a run.

Everything later tasks need (URIs, labels, every setting) is decided here, once, and validated:
a bad value fails the run at ``plan_run`` with a message naming the param, before any cluster
exists. Labels default to every class folder found under the images URI.

Class folder names are taken literally (spaces, accents, CJK, quotes, ';', '$(...)'): they travel as
JSON and as single arguments of an argument list, never through a shell. Names starting with '.' or
'_' are hidden to Spark's file sources, so they are not classes here either (see ``conventions.hidden_to_spark``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from image_pipeline.conventions import MAX_CLASSES, hidden_to_spark, min_images_per_class, runtime_lacks_weights
from image_pipeline.planning import PlanError
from image_pipeline.planning.layout import RunLayout, run_key_for, run_layout
from image_pipeline.wiring.params import LOCAL_PARAMS, PARAM_SPECS, emr_defaults
from image_pipeline.wiring.settings import Settings, prepared_weights_uri

TRAINING_KIND = "training"


def flat_plan(plan) -> dict[str, Any]:
    """A plan as the flat dict that crosses XCom: its own fields, with its layout's URIs in place of
    the layout (every task reads ``plan["report_uri"]``, whichever kind of plan it got)."""
    fields = asdict(plan)
    return {**fields.pop("layout"), **fields}


def utc_instant(moment: datetime) -> str:
    """An instant as ISO-8601 UTC with a Z (a naive datetime is taken as UTC)."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def require_local_uris(uris: dict[str, str], compute: str) -> None:
    """The local backend reads and writes the local file system only: name any URI that is not."""
    not_local = [k for k, v in uris.items() if k.endswith("_uri") and v and not v.startswith("file://")]
    if compute == "local" and not_local:
        raise PlanError(f"the local backend works on file:// URIs; not local: {not_local} "
                        f"(set IMAGE_PIPELINE_ROOT_URI, or use IMAGE_PIPELINE_COMPUTE=emr)")


@dataclass(frozen=True)
class RunPlan:
    """Everything one training run does, as plain values; ``as_dict`` is what crosses XCom."""

    run_id: str
    compute: str
    modified_before: str  # ISO-8601 UTC: the run sees images modified before it
    layout: RunLayout
    labels: list[str]
    backbone: str
    weights_uri: str | None
    pair_mode: str
    focus_class: str | None
    split_ratios: list[float]
    max_per_class: int
    iterations: int
    pca_components: int
    test_fraction: float
    min_accuracy: float
    batch_size: int
    read_concurrency: int  # photos each featurizing task reads at once
    seed: int
    local_workers: int
    local_worker_cores: int
    local_worker_memory_gb: int
    target_precision: float  # of the multiclass model's answered photos: sets its answer threshold
    runtime: str  # what runs the CNN forward pass of extraction
    precision: str
    emr: dict[str, Any] | None = None  # the EMR backend's cluster choices
    kind: str = TRAINING_KIND  # steps.steps_for builds the training steps from such a plan

    def as_dict(self) -> dict[str, Any]:
        return flat_plan(self)


def given(params: dict, name: str) -> Any:
    """The param's value; its declared default when the params lack it (a run triggered with the params of
    an earlier version)."""
    spec = PARAM_SPECS[name]
    return spec.default_value() if name not in params and spec.has_default else params.get(name)


def _integer(name: str, value: Any) -> int:
    spec = PARAM_SPECS[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not value.is_integer()):
        raise PlanError(f"param {name!r} must be an integer, got {value!r}")
    value = int(value)
    if not spec.within(value):
        bounds = f"in {spec.interval}" if spec.open else f"between {spec.low} and {spec.high}"
        raise PlanError(f"param {name!r} must be {bounds}, got {value}")
    return value


def _number(name: str, value: Any) -> float:
    spec = PARAM_SPECS[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PlanError(f"param {name!r} must be a number, got {value!r}")
    if not spec.within(value):
        raise PlanError(f"param {name!r} must be in {spec.interval}, got {value}")
    return float(value)


def bounded(params: dict, name: str) -> int | float | None:
    """The number param ``name`` checked against its one declaration in ``wiring.params.PARAM_SPECS``
    (None stays None where the declaration is nullable)."""
    value = given(params, name)
    if value is None and PARAM_SPECS[name].nullable:
        return None
    return _integer(name, value) if PARAM_SPECS[name].kind == "integer" else _number(name, value)


def choice(params: dict, name: str) -> str:
    """The param ``name``, one of its declared choices."""
    value, choices = given(params, name), PARAM_SPECS[name].enum or ()
    if value not in choices:
        raise PlanError(f"param {name!r} must be one of {', '.join(choices)}, got {value!r}")
    return value


def matching(params: dict, name: str) -> str:
    """The string param ``name`` (stripped), matching its declared pattern."""
    import re

    spec = PARAM_SPECS[name]
    value = str(given(params, name) or "").strip()
    if not re.fullmatch(spec.pattern or ".*", value):
        raise PlanError(f"param {name!r} must look like {spec.example}, got {value!r}")
    return value


def inference_choice(params: dict) -> tuple[str, str]:
    """(runtime, precision) of the forward pass: the params, an empty one taking its declared default."""
    runtime, precision = (choice({name: params.get(name) or PARAM_SPECS[name].default}, name)
                          for name in ("runtime", "precision"))
    if runtime == "tensorflow" and precision != "fp32":
        raise PlanError(f"param 'precision' {precision!r} needs param 'runtime' openvino (tensorflow runs fp32)")
    return runtime, precision


def _weights_uri(params: dict, backbone: str, runtime: str, settings: Settings) -> str | None:
    """The backbone's weights: the param, else the ImageNet weights 'make weights' prepares for it (mobilenet_v2:
    ``IMAGE_PIPELINE_WEIGHTS_URI``; efficientnet_lite2: ``<root>/weights/efficientnet_lite2_imagenet.keras``),
    else None (Keras' cache)."""
    weights_uri = (params.get("weights_uri") or "").strip() or None
    if weights_uri is None and backbone == "mobilenet_v2":
        weights_uri = settings.default_weights_uri
    elif weights_uri is None:
        weights_uri = prepared_weights_uri(settings.root_uri, backbone)
    if runtime_lacks_weights(runtime, weights_uri):
        raise PlanError("param 'runtime' openvino runs exported weights; weights_uri 'random' (timing runs) "
                        "needs runtime tensorflow")
    return weights_uri


def _labels(params: dict) -> list[str]:
    value = params.get("labels") or []
    if isinstance(value, str):  # a comma-separated string typed into a text field
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PlanError(f"param 'labels' must be a list of class folder names, got {value!r}")
    bad = [v for v in value if "/" in v or "\0" in v or v in (".", "..")]
    if bad:
        raise PlanError(f"param 'labels' has names that cannot be class folders (a folder name has no '/' "
                        f"and is not '.' or '..'): {bad}")
    hidden = [v for v in value if hidden_to_spark(v)]
    if hidden:
        raise PlanError(f"param 'labels' has folders Spark skips as hidden (names starting with '.' or '_'), "
                        f"so they cannot be classes: {hidden}; rename those folders")
    return sorted(set(value))


def emr_choices(params: dict, emr_settings) -> dict[str, Any]:
    """The run's EMR choices: trigger-form params over the deployment's defaults, validated."""
    merged = emr_defaults(emr_settings)
    unknown = sorted(k for k in params if k.startswith("emr_") and k not in merged)
    if unknown:
        raise PlanError(f"unknown EMR param(s) {unknown}: the EMR params are {', '.join(merged)}")
    merged.update({k: v for k, v in params.items() if k.startswith("emr_") and v is not None})
    return {
        "release_label": matching(merged, "emr_release_label"),
        "instance_type": choice(merged, "emr_instance_type"),
        "core_instance_count": bounded(merged, "emr_core_instance_count"),
        "spot_task_count": bounded(merged, "emr_spot_task_count"),
        "capacity": emr_settings.capacity,
        "idle_timeout_minutes": bounded(merged, "emr_idle_timeout_minutes"),
        "subnet_id": matching(merged, "emr_subnet_id"),
        "job_flow_role": emr_settings.job_flow_role,
        "service_role": emr_settings.service_role,
        "security_configuration": emr_settings.security_configuration,
        "region": emr_settings.region,  # the cluster's: the jobs' S3 client reads the photos there
    }


def _run_labels(params: dict, available_labels: list[str] | dict[str, int]) -> list[str]:
    """The run's classes: the requested ones (each must have a folder), else every folder found; 2 at least."""
    requested = _labels(params)
    missing = [label for label in requested if label not in available_labels]
    if missing:
        raise PlanError(f"param 'labels': no class folder with images for {missing} under the images URI "
                        f"(found: {sorted(available_labels)})")
    labels = requested or sorted(available_labels)
    if len(labels) < 2:
        raise PlanError(f"param 'labels': need at least 2 classes, the run would have {labels}")
    if len(labels) > MAX_CLASSES:
        raise PlanError(f"param 'labels': the run would have {len(labels)} classes, more than the maximum of "
                        f"{MAX_CLASSES}" + ("" if requested else " (every class folder found): choose the classes "
                                             "to train on with param 'labels'"))
    return labels


def _focus_class(params: dict, pair_mode: str, labels: list[str]) -> str | None:
    """The focus class: required by one_vs_each and one_vs_rest, and one of the run's labels."""
    focus = (params.get("focus_class") or "").strip() or None
    if pair_mode != "all_pairs" and focus is None:
        raise PlanError(f"param 'focus_class' is required with pair_mode {pair_mode}")
    if focus is not None and focus not in labels:
        raise PlanError(f"param 'focus_class' {focus!r} is not among the run's labels {labels}")
    return focus


def _split_ratios(params: dict) -> list[float]:
    """The pairwise splits' training shares: a non-empty list of numbers, each inside the declared item bounds."""
    ratios, item = given(params, "split_ratios"), PARAM_SPECS["split_ratios"].items
    if not isinstance(ratios, list) or not ratios or not all(
            isinstance(r, int | float) and not isinstance(r, bool) for r in ratios):
        raise PlanError(f"param 'split_ratios' must be a non-empty list of numbers, got {ratios!r}")
    outside = [r for r in ratios if not item.within(r)]
    if outside:
        raise PlanError(f"param 'split_ratios' must all be in {item.interval}, got {outside}")
    return ratios


def _check_class_sizes(counts: dict[str, int], labels: list[str], ratios: list[float], test_fraction: float) -> None:
    """Fail the plan, naming the classes, when a class has too few images for the splits."""
    need = min_images_per_class(ratios, test_fraction)
    too_few = {label: counts[label] for label in labels if counts[label] < need}
    if too_few:
        raise PlanError(
            f"param 'labels': too few images in {', '.join(repr(k) for k in too_few)} ({too_few}): with "
            f"split_ratios {sorted(ratios)} and test_fraction {test_fraction} every class needs at least "
            f"{need} images (one on each side of every train/test split); add photos, leave the class out "
            f"with param 'labels', or change split_ratios/test_fraction")


def write_labels(plan: dict, conn_id: str | None = None) -> str:
    """Write the run's class list to its ``labels_uri`` (JSON; the steps read it from the object store: a list
    of up to ``MAX_CLASSES`` names would not fit EMR's step arguments); returns the URI."""
    import json

    from image_pipeline.planning.objects import write_text_atomically

    write_text_atomically(plan["labels_uri"], json.dumps(plan["labels"], ensure_ascii=False), conn_id)
    return plan["labels_uri"]


# the plan's numbers checked as declared, besides test_fraction (checked first: the class sizes need it)
_NUMBERS = ("max_per_class", "iterations", "pca_components", "min_accuracy", "target_precision", "batch_size",
            "read_concurrency", "seed", *LOCAL_PARAMS)


def build_run_plan(params: dict, run_id: str, modified_before: datetime, settings: Settings,
                   available_labels: list[str] | dict[str, int], emr_settings=None) -> RunPlan:
    """Validate params and resolve them into a RunPlan.

    ``available_labels`` are the class folders found under the images URI (see ``discover_labels``),
    or their image counts (``listing.scan_images(...).counts``): with counts, a class with too few images for
    the splits fails the plan, naming the class; ``emr_settings`` (an ``emr.requests.EmrSettings``) gives the
    EMR defaults when the backend is EMR.
    """
    backbone = choice(params, "backbone")
    runtime, precision = inference_choice(params)
    pair_mode = choice(params, "pair_mode")
    labels = _run_labels(params, available_labels)
    focus = _focus_class(params, pair_mode, labels)
    ratios = _split_ratios(params)
    test_fraction = bounded(params, "test_fraction")
    if isinstance(available_labels, dict):
        _check_class_sizes(available_labels, labels, ratios, test_fraction)
    weights_uri = _weights_uri(params, backbone, runtime, settings)
    images_uri = (params.get("images_uri") or "").strip() or None
    layout = run_layout(settings.root_uri, run_key_for(run_id), images_uri)
    require_local_uris(layout.as_dict(), settings.compute)
    return RunPlan(
        run_id=run_id,
        compute=settings.compute,
        modified_before=utc_instant(modified_before),
        layout=layout,
        labels=labels,
        backbone=backbone,
        weights_uri=weights_uri,
        pair_mode=pair_mode,
        focus_class=focus,
        split_ratios=sorted({round(float(r), 6) for r in ratios}),
        test_fraction=test_fraction,
        **{name: bounded(params, name) for name in _NUMBERS},
        emr=emr_choices(params, emr_settings) if settings.compute == "emr" and emr_settings else None,
        runtime=runtime,
        precision=precision,
    )
