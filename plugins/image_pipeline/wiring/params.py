"""The DAGs' params: each one declared once (``PARAM_SPECS``), for the trigger form and the plans alike.

A declaration (``ParamSpec``) holds the param's type, its bounds, choices (from ``image_pipeline.conventions``)
or pattern, its title and description, and its default where that is a constant (the EMR params default to
the deployment's settings, given when the form is built). The trigger form's ``Param`` is built from it
(``ParamSpec.param``); the plans (``planning.run_plan``, ``planning.scoring_plan``) check values against it
and fall back to its default. Nothing here imports Airflow at module import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from image_pipeline.compute.emr.capacity import INSTANCE_TYPES
from image_pipeline.conventions import (
    BACKBONE_NAMES,
    BACKBONE_NOTES,
    DEFAULT_READ_CONCURRENCY,
    DEFAULT_RUNTIME,
    DEFAULT_SPLIT_RATIOS,
    PAIR_MODES,
    PRECISIONS,
    RANDOM_WEIGHTS,
    RUNTIMES,
)
from image_pipeline.wiring.settings import Settings


class _FromSettings:
    def __repr__(self) -> str:
        return "FROM_SETTINGS"


FROM_SETTINGS: Any = _FromSettings()  # the default of a param whose default is a deployment setting


@dataclass(frozen=True)
class ParamSpec:
    """One param: JSON-schema type (``["null", kind]`` when nullable), bounds (closed ``[low, high]``, or open
    ``(low, high)``), choices or pattern, the items of an array, the form's title and description, and the
    default (``FROM_SETTINGS``: given by the deployment when the form is built)."""

    name: str
    kind: str  # "integer", "number", "string" or "array"
    title: str = ""
    description: str = ""  # may name {fields} the form fills in (``param(**fields)``)
    default: Any = FROM_SETTINGS
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    open: bool = False
    enum: tuple[str, ...] | None = None
    pattern: str | None = None  # the whole value must match it
    example: str = ""  # a value matching the pattern, for the plan's message
    items: ParamSpec | None = None
    min_items: int | None = None

    @property
    def has_default(self) -> bool:
        """Whether the default is a constant of the declaration (not a deployment setting)."""
        return self.default is not FROM_SETTINGS

    def default_value(self) -> Any:
        """The declared default, fresh (a list for an array)."""
        if not self.has_default:
            raise ValueError(f"param {self.name!r} defaults to a deployment setting: give its default")
        return list(self.default) if isinstance(self.default, tuple) else self.default

    def within(self, value: float) -> bool:
        """Whether a number is inside the declared bounds (any number, without bounds)."""
        if self.low is None or self.high is None:
            return True
        return self.low < value < self.high if self.open else self.low <= value <= self.high

    @property
    def interval(self) -> str:
        return f"({self.low}, {self.high})" if self.open else f"[{self.low}, {self.high}]"

    def schema(self) -> dict[str, Any]:
        """The JSON-schema keywords of the trigger form's Param."""
        schema: dict[str, Any] = {"type": ["null", self.kind] if self.nullable else self.kind}
        if self.low is not None:
            low, high = ("exclusiveMinimum", "exclusiveMaximum") if self.open else ("minimum", "maximum")
            schema.update({low: self.low, high: self.high})
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.pattern is not None:
            schema["pattern"] = f"^{self.pattern}$"
        if self.items is not None:
            schema["items"] = self.items.schema()
        if self.min_items is not None:
            schema["minItems"] = self.min_items
        return schema

    def param(self, default: Any = FROM_SETTINGS, **fields: str):
        """The trigger form's Param: the declared default unless ``default`` is given (required for a
        deployment-set default); ``fields`` fill the description's placeholders."""
        from airflow.sdk import Param

        value = self.default_value() if default is FROM_SETTINGS else default
        description = self.description.format(**fields) if fields else self.description
        return Param(value, title=self.title, description=description, **self.schema())


_SPECS = (
    # what the run reads: the images, the classes, the backbone and its weights.
    # Optional settings are nullable: the trigger form requires every field whose type has no null.
    ParamSpec("images_uri", "string", "Images URI", "Folder with one sub-folder per class. Empty: {root_uri}/images.",
              default=None, nullable=True),
    ParamSpec("labels", "array", "Labels", "Class folders to train on, one per line. Empty: every class folder found.",
              default=(), nullable=True, items=ParamSpec("label", "string")),
    ParamSpec("backbone", "string", "Backbone", "Pretrained CNN used as feature extractor: "
              + ", ".join(f"{name} ({note})" for name, note in BACKBONE_NOTES.items()) + ".",
              default="mobilenet_v2", enum=BACKBONE_NAMES),
    ParamSpec("weights_uri", "string", "Weights URI", "Backbone weights file (.keras or .h5; file:// or s3://). "
              "Empty: the prepared ImageNet weights for mobilenet_v2, Keras' cache for vgg16. "
              f"'{RANDOM_WEIGHTS}' for timing runs.", default=None, nullable=True),
    # how the run trains and judges
    ParamSpec("pair_mode", "string", "Pair mode", "all_pairs: every pair of classes; one_vs_each: the focus class "
              "against each other class; one_vs_rest: the focus class against all others pooled.",
              default="all_pairs", enum=PAIR_MODES),
    ParamSpec("focus_class", "string", "Focus class", "The class of one_vs_each and one_vs_rest (ignored by "
              "all_pairs).", default=None, nullable=True),
    ParamSpec("split_ratios", "array", "Split ratios", "Training shares of the pairwise train/test splits, each "
              "in (0, 1).", default=DEFAULT_SPLIT_RATIOS, min_items=1,
              items=ParamSpec("split_ratio", "number", low=0, high=1, open=True)),
    ParamSpec("max_per_class", "integer", "Max images per class", "Balanced sample size per class of each pair "
              "(the study used 200).", default=200, low=2, high=100_000),
    ParamSpec("iterations", "integer", "SVM iterations", "Iteration budget of each linear SVM (the study used 100).",
              default=100, low=1, high=100_000),
    ParamSpec("pca_components", "integer", "PCA components", "Dimensions of the pairwise sweep's standardise + "
              "PCA (fitted on training images only); the multiclass model's reduction is chosen by "
              "cross-validation.", default=128, low=2, high=4096),
    ParamSpec("test_fraction", "number", "Test fraction", "Share of each class held out to test the multiclass "
              "model.", default=0.2, low=0.0, high=1.0, open=True),
    ParamSpec("min_accuracy", "number", "Minimum accuracy", "Quality gate: the run fails when multiclass test "
              "accuracy is below this.", default=0.5, low=0.0, high=1.0),
    ParamSpec("target_precision", "number", "Target precision of answered photos", "The multiclass model answers "
              "a photo only when its top probability reaches the threshold that gives this precision on held-out "
              "photos; the others are 'not sure'.", default=0.95, low=0.5, high=1.0),
    ParamSpec("seed", "integer", "Seed", "Seed of every sample and split: same seed, same metrics.",
              default=0, low=0, high=2**31 - 1),
    # what runs the CNN forward pass (extraction, scoring), at which precision, in batches of how many
    ParamSpec("batch_size", "integer", "Inference batch size", "Images per forward pass of the CNN (feature "
              "extraction and scoring).", default=32, low=1, high=1024),
    ParamSpec("read_concurrency", "integer", "Photo reads at once", "Photos each task reads at once, ahead of the "
              "forward pass: hides the object store's latency (S3 answers in tens of milliseconds).",
              default=DEFAULT_READ_CONCURRENCY, low=1, high=256),
    ParamSpec("runtime", "string", "Inference runtime", "openvino: the Keras backbone exported once to OpenVINO IR "
              "next to the weights (the same features, about twice as fast on CPU); tensorflow: Keras itself "
              "(needed for random weights).", default=DEFAULT_RUNTIME, enum=RUNTIMES),
    ParamSpec("precision", "string", "Inference precision", "openvino only: fp32, bf16 (CPUs with BF16, about 2x "
              "faster again) or auto (bf16 where the CPU has it).", default="fp32", enum=PRECISIONS),
    # image_scoring's override of the model's answer threshold
    ParamSpec("answer_threshold", "number", "Answer threshold", "Photos whose top probability is under it are "
              "marked uncertain; empty: the model's own threshold (0 for a model trained before thresholds).",
              default=None, nullable=True, low=0.0, high=1.0),
    # the local cluster's size (local backend only)
    ParamSpec("local_workers", "integer", "Local workers", "Spark workers of the local cluster (local backend "
              "only).", default=1, low=1, high=16),
    ParamSpec("local_worker_cores", "integer", "Cores per local worker", "Cores each local worker offers (local "
              "backend only).", default=2, low=1, high=256),
    ParamSpec("local_worker_memory_gb", "integer", "Memory per local worker (GB)", "Memory each local worker "
              "offers; executors get 1 GB less (local backend only).", default=4, low=1, high=1024),
    # the EMR backend's cluster (defaults: the deployment's IMAGE_PIPELINE_EMR_* settings)
    ParamSpec("emr_release_label", "string", "EMR release", "EMR release label (emr-7.x runs Spark 3.5).",
              pattern=r"emr-\d+\.\d+\.\d+", example="emr-7.13.0"),
    ParamSpec("emr_instance_type", "string", "Instance type", "EC2 type of every node; a fleet may also take "
              "types of the same size (m5 -> m5a, m5d; c5 -> c5d).", enum=INSTANCE_TYPES),
    ParamSpec("emr_core_instance_count", "integer", "Core nodes", "Number of core (worker) nodes.", low=1, high=100),
    ParamSpec("emr_spot_task_count", "integer", "Spot task nodes", "Extra executors on spot capacity (task "
              "nodes: never HDFS or the driver); 0 for none.", low=0, high=100),
    ParamSpec("emr_idle_timeout_minutes", "integer", "Idle timeout (minutes)", "Auto-termination backstop should "
              "the teardown be lost.", low=5, high=1440),
    ParamSpec("emr_subnet_id", "string", "Subnet", "EC2 subnet id of the cluster; empty: the default VPC.",
              nullable=True, pattern=r"(subnet-[0-9a-f]{8,17})?", example="subnet-0123abcd"),
)
PARAM_SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in _SPECS}

# the trigger forms' sections, in the order the forms show them
INPUT_PARAMS = ("images_uri", "labels", "backbone", "weights_uri")
INFERENCE_PARAMS = ("runtime", "precision")
TRAINING_PARAMS = ("pair_mode", "focus_class", "split_ratios", "max_per_class", "iterations", "pca_components",
                   "test_fraction", "min_accuracy", "target_precision", "batch_size", "read_concurrency",
                   *INFERENCE_PARAMS, "seed")
LOCAL_PARAMS = ("local_workers", "local_worker_cores", "local_worker_memory_gb")
EMR_PARAMS = ("emr_release_label", "emr_instance_type", "emr_core_instance_count", "emr_spot_task_count",
              "emr_idle_timeout_minutes", "emr_subnet_id")
SCORING_PARAMS = ("batch_size", "read_concurrency", "answer_threshold", *INFERENCE_PARAMS)


def emr_defaults(emr) -> dict[str, Any]:
    """The EMR params' defaults: the deployment's settings (an ``emr.requests.EmrSettings``), by param name."""
    return {name: getattr(emr, name.removeprefix("emr_")) for name in EMR_PARAMS}


def _params(names, **fields: str) -> dict:
    return {name: PARAM_SPECS[name].param(**fields) for name in names}


def emr_params(emr) -> dict:
    """EMR choices of the trigger form, defaulting to the deployment's settings (EMR backend only)."""
    defaults = {**emr_defaults(emr), "emr_subnet_id": emr.subnet_id or None}
    return {name: PARAM_SPECS[name].param(defaults[name]) for name in EMR_PARAMS}


def dag_params(settings: Settings, emr=None) -> dict:
    """Params of ``image_classification``; the trigger form shows them in this order."""
    return {**input_params(settings), **training_params(), **local_params(),
            **(emr_params(emr) if emr is not None else {})}


def input_params(settings: Settings) -> dict:
    """What the run reads: the images, the classes, the backbone and its weights."""
    return _params(INPUT_PARAMS, root_uri=settings.root_uri)


def training_params() -> dict:
    """How the run trains and judges: pair mode, splits, sizes, the quality gate, the forward pass and seed."""
    return _params(TRAINING_PARAMS)


def local_params() -> dict:
    """The local cluster's size (local backend only)."""
    return _params(LOCAL_PARAMS)


def scoring_params(settings: Settings, emr=None) -> dict:
    """Params of ``image_scoring``: the inference batch, threshold and runtime, the cluster's size (the model
    is the latest)."""
    return {**_params(SCORING_PARAMS), **local_params(), **(emr_params(emr) if emr is not None else {})}
