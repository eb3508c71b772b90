"""The run plan: params + data interval -> one explicit, JSON-serialisable description of a run.

Everything later tasks need (URIs, labels, every setting) is decided here, once, and validated:
a bad value fails the run at ``plan_run`` with a message naming the param, before any cluster
exists. Labels default to every class folder found under the images URI.

Class folder names are taken literally (spaces, accents, CJK, quotes, ';', '$(...)'): they travel as
JSON and as single arguments of an argument list, never through a shell. Names starting with '.' or
'_' are hidden to Spark's file sources, so they are not classes here either (see ``listing.hidden_to_spark``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from image_pipeline.conventions import min_images_per_class
from image_pipeline.planning import PlanError
from image_pipeline.planning.layout import RunLayout, run_key_for, run_layout
from image_pipeline.planning.listing import hidden_to_spark
from image_pipeline.wiring.params import (
    BACKBONES,
    BOUNDS,
    DEFAULT_RUNTIME,
    PAIR_MODES,
    PRECISIONS,
    RELEASE_LABEL_PATTERN,
    RUNTIMES,
    SUBNET_ID_PATTERN,
)
from image_pipeline.wiring.settings import Settings

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
    seed: int
    local_workers: int
    local_worker_cores: int
    local_worker_memory_gb: int
    emr: dict[str, Any] | None = None  # the EMR backend's cluster choices
    target_precision: float = 0.95  # of the multiclass model's answered photos: sets its answer threshold
    runtime: str = "tensorflow"  # what runs the CNN forward pass of extraction
    precision: str = "fp32"
    kind: str = TRAINING_KIND  # steps.steps_for builds the training steps from such a plan

    def as_dict(self) -> dict[str, Any]:
        return flat_plan(self)


def int_param(params: dict, name: str, low: int, high: int) -> int:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not value.is_integer()):
        raise PlanError(f"param {name!r} must be an integer, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise PlanError(f"param {name!r} must be between {low} and {high}, got {value}")
    return value


def number_param(params: dict, name: str, low: float, high: float, *, open_interval: bool = False) -> float:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PlanError(f"param {name!r} must be a number, got {value!r}")
    inside = low < value < high if open_interval else low <= value <= high
    if not inside:
        interval = f"({low}, {high})" if open_interval else f"[{low}, {high}]"
        raise PlanError(f"param {name!r} must be in {interval}, got {value}")
    return float(value)


def bounded(params: dict, name: str) -> int | float:
    """The param ``name`` checked against its one declaration in ``wiring.params.BOUNDS``."""
    rule = BOUNDS[name]
    if rule.kind == "integer":
        return int_param(params, name, int(rule.low), int(rule.high))
    return number_param(params, name, rule.low, rule.high, open_interval=rule.open)


def _choice(params: dict, name: str, choices: tuple[str, ...]) -> str:
    value = params.get(name)
    if value not in choices:
        raise PlanError(f"param {name!r} must be one of {', '.join(choices)}, got {value!r}")
    return value


def inference_choice(params: dict) -> tuple[str, str]:
    """(runtime, precision) of the forward pass: the params, defaulting to openvino at fp32."""
    choice = {"runtime": params.get("runtime") or DEFAULT_RUNTIME, "precision": params.get("precision") or "fp32"}
    runtime, precision = _choice(choice, "runtime", RUNTIMES), _choice(choice, "precision", PRECISIONS)
    if runtime == "tensorflow" and precision != "fp32":
        raise PlanError(f"param 'precision' {precision!r} needs param 'runtime' openvino (tensorflow runs fp32)")
    return runtime, precision


def _weights_uri(params: dict, backbone: str, runtime: str, settings: Settings) -> str | None:
    """The backbone's weights: the param, else the ImageNet weights 'make weights' prepares for it (mobilenet_v2:
    ``IMAGE_PIPELINE_WEIGHTS_URI``; efficientnet_lite2: ``<root>/weights/efficientnet_lite2_imagenet.keras``),
    else None (Keras' cache)."""
    from image_pipeline.conventions import PREPARED_WEIGHTS

    weights_uri = (params.get("weights_uri") or "").strip() or None
    if weights_uri is None and backbone == "mobilenet_v2":
        weights_uri = settings.default_weights_uri
    elif weights_uri is None and backbone in PREPARED_WEIGHTS:
        weights_uri = f"{settings.root_uri}/weights/{PREPARED_WEIGHTS[backbone]}"
    if runtime == "openvino" and weights_uri == "random":
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
    import re

    from image_pipeline.compute.emr.capacity import INSTANCE_TYPES

    merged = {
        "emr_release_label": emr_settings.release_label, "emr_instance_type": emr_settings.instance_type,
        "emr_core_instance_count": emr_settings.core_instance_count,
        "emr_spot_task_count": emr_settings.spot_task_count,
        "emr_idle_timeout_minutes": emr_settings.idle_timeout_minutes, "emr_subnet_id": emr_settings.subnet_id,
    }
    unknown = sorted(k for k in params if k.startswith("emr_") and k not in merged)
    if unknown:
        raise PlanError(f"unknown EMR param(s) {unknown}: the EMR params are {', '.join(merged)}")
    merged.update({k: v for k, v in params.items() if k.startswith("emr_") and v is not None})
    if not re.fullmatch(RELEASE_LABEL_PATTERN, str(merged["emr_release_label"])):
        raise PlanError(f"param 'emr_release_label' must look like emr-7.13.0, got {merged['emr_release_label']!r}")
    _choice(merged, "emr_instance_type", INSTANCE_TYPES)
    subnet = str(merged["emr_subnet_id"] or "").strip()
    if subnet and not re.fullmatch(SUBNET_ID_PATTERN, subnet):
        raise PlanError(f"param 'emr_subnet_id' must be a subnet id like subnet-0123abcd, got {subnet!r}")
    return {
        "release_label": merged["emr_release_label"],
        "instance_type": merged["emr_instance_type"],
        "core_instance_count": bounded(merged, "emr_core_instance_count"),
        "spot_task_count": bounded(merged, "emr_spot_task_count"),
        "capacity": emr_settings.capacity,
        "idle_timeout_minutes": bounded(merged, "emr_idle_timeout_minutes"),
        "subnet_id": subnet,
        "job_flow_role": emr_settings.job_flow_role,
        "service_role": emr_settings.service_role,
        "security_configuration": emr_settings.security_configuration,
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
    """The pairwise splits' training shares: a non-empty list of numbers, each in (0, 1)."""
    ratios = params.get("split_ratios")
    if not isinstance(ratios, list) or not ratios or not all(
            isinstance(r, int | float) and not isinstance(r, bool) for r in ratios):
        raise PlanError(f"param 'split_ratios' must be a non-empty list of numbers, got {ratios!r}")
    outside = [r for r in ratios if not 0 < r < 1]
    if outside:
        raise PlanError(f"param 'split_ratios' must all be in (0, 1), got {outside}")
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


def build_run_plan(params: dict, run_id: str, modified_before: datetime, settings: Settings,
                   available_labels: list[str] | dict[str, int], emr_settings=None) -> RunPlan:
    """Validate params and resolve them into a RunPlan.

    ``available_labels`` are the class folders found under the images URI (see ``discover_labels``),
    or their image counts (``listing.scan_images(...).counts``): with counts, a class with too few images for
    the splits fails the plan, naming the class; ``emr_settings`` (an ``emr.EmrSettings``) gives the
    EMR defaults when the backend is EMR.
    """
    backbone = _choice(params, "backbone", BACKBONES)
    runtime, precision = inference_choice(params)
    pair_mode = _choice(params, "pair_mode", PAIR_MODES)
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
        max_per_class=bounded(params, "max_per_class"),
        iterations=bounded(params, "iterations"),
        pca_components=bounded(params, "pca_components"),
        test_fraction=test_fraction,
        min_accuracy=bounded(params, "min_accuracy"),
        # a run triggered with the params of an earlier version has none: the job's default
        target_precision=bounded({"target_precision": 0.95, **params}, "target_precision"),
        batch_size=bounded(params, "batch_size"),
        seed=bounded(params, "seed"),
        local_workers=bounded(params, "local_workers"),
        local_worker_cores=bounded(params, "local_worker_cores"),
        local_worker_memory_gb=bounded(params, "local_worker_memory_gb"),
        emr=emr_choices(params, emr_settings) if settings.compute == "emr" and emr_settings else None,
        runtime=runtime,
        precision=precision,
    )
