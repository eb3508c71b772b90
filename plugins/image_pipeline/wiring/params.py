"""The DAG's params: one Param per setting, typed and bounded, with a description for the trigger form.

Each rule is declared once: the choices (from ``image_pipeline.conventions``), the patterns and the
numeric bounds (``BOUNDS``). The trigger form's ``Param`` schemas and the plans' validation
(``planning.run_plan.bounded``) both read them. Nothing here imports Airflow at module import.
"""

from __future__ import annotations

from dataclasses import dataclass

from image_pipeline.conventions import (
    BACKBONE_NAMES,
    DEFAULT_RUNTIME,
    DEFAULT_SPLIT_RATIOS,
    PAIR_MODES,
    PRECISIONS,
    RUNTIMES,
)
from image_pipeline.wiring.settings import Settings

BACKBONES = BACKBONE_NAMES
RELEASE_LABEL_PATTERN = r"emr-\d+\.\d+\.\d+"
SUBNET_ID_PATTERN = r"subnet-[0-9a-f]{8,17}"


@dataclass(frozen=True)
class Bounds:
    """A numeric param's type and interval: closed ``[low, high]``, or open ``(low, high)``."""

    kind: str  # "integer" or "number"
    low: float
    high: float
    open: bool = False

    def schema(self) -> dict:
        """The JSON-schema keywords of the trigger form's Param."""
        if self.open:
            return {"type": self.kind, "exclusiveMinimum": self.low, "exclusiveMaximum": self.high}
        return {"type": self.kind, "minimum": self.low, "maximum": self.high}


BOUNDS = {
    "max_per_class": Bounds("integer", 2, 100_000),
    "iterations": Bounds("integer", 1, 100_000),
    "pca_components": Bounds("integer", 2, 4096),
    "test_fraction": Bounds("number", 0.0, 1.0, open=True),
    "min_accuracy": Bounds("number", 0.0, 1.0),
    "target_precision": Bounds("number", 0.5, 1.0),
    "batch_size": Bounds("integer", 1, 1024),
    "seed": Bounds("integer", 0, 2**31 - 1),
    "local_workers": Bounds("integer", 1, 16),
    "local_worker_cores": Bounds("integer", 1, 256),
    "local_worker_memory_gb": Bounds("integer", 1, 1024),
    "emr_core_instance_count": Bounds("integer", 1, 100),
    "emr_spot_task_count": Bounds("integer", 0, 100),
    "emr_idle_timeout_minutes": Bounds("integer", 5, 1440),
}


# image_scoring's optional override of the model's answer threshold (null: the model's own)
ANSWER_THRESHOLD_BOUNDS = Bounds("number", 0.0, 1.0)


def emr_params(emr) -> dict:
    """EMR choices of the trigger form, defaulting to the deployment's settings (EMR backend only)."""
    from airflow.sdk import Param

    from image_pipeline.compute.emr.capacity import INSTANCE_TYPES

    return {
        "emr_release_label": Param(emr.release_label, type="string", pattern=f"^{RELEASE_LABEL_PATTERN}$",
                                   title="EMR release", description="EMR release label (emr-7.x runs Spark 3.5)."),
        "emr_instance_type": Param(emr.instance_type, type="string", enum=list(INSTANCE_TYPES),
                                   title="Instance type",
                                   description="EC2 type of every node; a fleet may also take types of the same "
                                               "size (m5 -> m5a, m5d; c5 -> c5d)."),
        "emr_core_instance_count": Param(emr.core_instance_count, **BOUNDS["emr_core_instance_count"].schema(),
                                         title="Core nodes", description="Number of core (worker) nodes."),
        "emr_spot_task_count": Param(emr.spot_task_count, **BOUNDS["emr_spot_task_count"].schema(),
                                     title="Spot task nodes",
                                     description="Extra executors on spot capacity (task nodes: never HDFS or the "
                                                 "driver); 0 for none."),
        "emr_idle_timeout_minutes": Param(emr.idle_timeout_minutes, **BOUNDS["emr_idle_timeout_minutes"].schema(),
                                          title="Idle timeout (minutes)",
                                          description="Auto-termination backstop should the teardown be lost."),
        "emr_subnet_id": Param(emr.subnet_id or None, type=["null", "string"], title="Subnet",
                               description="EC2 subnet id of the cluster; empty: the default VPC."),
    }


def dag_params(settings: Settings, emr=None) -> dict:
    """Params of ``image_classification``; the trigger form shows them in this order."""
    return {**input_params(settings), **training_params(), **local_params(),
            **(emr_params(emr) if emr is not None else {})}


def input_params(settings: Settings) -> dict:
    """What the run reads: the images, the classes, the backbone and its weights."""
    from airflow.sdk import Param

    # Optional settings are typed ["null", ...]: the trigger form requires every field whose type has no null.
    return {
        "images_uri": Param(
            None, type=["null", "string"], title="Images URI",
            description=f"Folder with one sub-folder per class. Empty: {settings.root_uri}/images.",
        ),
        "labels": Param(
            [], type=["null", "array"], items={"type": "string"}, title="Labels",
            description="Class folders to train on, one per line. Empty: every class folder found.",
        ),
        "backbone": Param(
            "mobilenet_v2", type="string", enum=list(BACKBONES), title="Backbone",
            description="Pretrained CNN used as feature extractor: mobilenet_v2 (1280-d, fast) or vgg16 "
                        "(4096-d fc2, as in the original study).",
        ),
        "weights_uri": Param(
            None, type=["null", "string"], title="Weights URI",
            description="Backbone weights file (.keras or .h5; file:// or s3://). Empty: the prepared "
                        "ImageNet weights for mobilenet_v2, Keras' cache for vgg16. 'random' for timing runs.",
        ),
    }


def training_params() -> dict:
    """How the run trains and judges: pair mode, splits, sizes, the quality gate, batch and seed."""
    from airflow.sdk import Param

    return {
        "pair_mode": Param(
            "all_pairs", type="string", enum=list(PAIR_MODES), title="Pair mode",
            description="all_pairs: every pair of classes; one_vs_each: the focus class against each other "
                        "class; one_vs_rest: the focus class against all others pooled.",
        ),
        "focus_class": Param(
            None, type=["null", "string"], title="Focus class",
            description="The class of one_vs_each and one_vs_rest (ignored by all_pairs).",
        ),
        "split_ratios": Param(
            list(DEFAULT_SPLIT_RATIOS), type="array", items={"type": "number", "exclusiveMinimum": 0,
                                                            "exclusiveMaximum": 1},
            minItems=1, title="Split ratios",
            description="Training shares of the pairwise train/test splits, each in (0, 1).",
        ),
        "max_per_class": Param(
            200, **BOUNDS["max_per_class"].schema(), title="Max images per class",
            description="Balanced sample size per class of each pair (the study used 200).",
        ),
        "iterations": Param(
            100, **BOUNDS["iterations"].schema(), title="SVM iterations",
            description="Iteration budget of each linear SVM (the study used 100).",
        ),
        "pca_components": Param(
            128, **BOUNDS["pca_components"].schema(), title="PCA components",
            description="Dimensions of the pairwise sweep's standardise + PCA (fitted on training images only); "
                        "the multiclass model's reduction is chosen by cross-validation.",
        ),
        "test_fraction": Param(
            0.2, **BOUNDS["test_fraction"].schema(), title="Test fraction",
            description="Share of each class held out to test the multiclass model.",
        ),
        "min_accuracy": Param(
            0.5, **BOUNDS["min_accuracy"].schema(), title="Minimum accuracy",
            description="Quality gate: the run fails when multiclass test accuracy is below this.",
        ),
        "target_precision": Param(
            0.95, **BOUNDS["target_precision"].schema(), title="Target precision of answered photos",
            description="The multiclass model answers a photo only when its top probability reaches the "
                        "threshold that gives this precision on held-out photos; the others are 'not sure'.",
        ),
        "batch_size": Param(
            32, **BOUNDS["batch_size"].schema(), title="Inference batch size",
            description="Images per forward pass of the CNN during feature extraction.",
        ),
        **inference_params(),
        "seed": Param(0, **BOUNDS["seed"].schema(), title="Seed",
                      description="Seed of every sample and split: same seed, same metrics."),
    }


def inference_params() -> dict:
    """What runs the CNN forward pass (extraction, scoring), at which precision."""
    from airflow.sdk import Param

    return {
        "runtime": Param(
            DEFAULT_RUNTIME, type="string", enum=list(RUNTIMES), title="Inference runtime",
            description="openvino: the Keras backbone exported once to OpenVINO IR next to the weights (the same "
                        "features, about twice as fast on CPU); tensorflow: Keras itself (needed for random "
                        "weights).",
        ),
        "precision": Param(
            "fp32", type="string", enum=list(PRECISIONS), title="Inference precision",
            description="openvino only: fp32, bf16 (CPUs with BF16, about 2x faster again) or auto (bf16 where "
                        "the CPU has it).",
        ),
    }


def local_params() -> dict:
    """The local cluster's size (local backend only)."""
    from airflow.sdk import Param

    return {
        "local_workers": Param(
            1, **BOUNDS["local_workers"].schema(), title="Local workers",
            description="Spark workers of the local cluster (local backend only).",
        ),
        "local_worker_cores": Param(
            2, **BOUNDS["local_worker_cores"].schema(), title="Cores per local worker",
            description="Cores each local worker offers (local backend only).",
        ),
        "local_worker_memory_gb": Param(
            4, **BOUNDS["local_worker_memory_gb"].schema(), title="Memory per local worker (GB)",
            description="Memory each local worker offers; executors get 1 GB less (local backend only).",
        ),
    }


def scoring_params(settings: Settings, emr=None) -> dict:
    """Params of ``image_scoring``: the cluster's size and the inference batch (the model is the latest)."""
    from airflow.sdk import Param

    return {
        "batch_size": Param(
            32, **BOUNDS["batch_size"].schema(), title="Inference batch size",
            description="Photos per forward pass of the CNN while scoring.",
        ),
        "answer_threshold": Param(
            None, type=["null", "number"], minimum=ANSWER_THRESHOLD_BOUNDS.low, maximum=ANSWER_THRESHOLD_BOUNDS.high,
            title="Answer threshold",
            description="Photos whose top probability is under it are marked uncertain; empty: the model's own "
                        "threshold (0 for a model trained before thresholds).",
        ),
        **inference_params(),
        **local_params(),
        **(emr_params(emr) if emr is not None else {}),
    }
