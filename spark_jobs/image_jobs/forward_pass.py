"""The set-up the extraction and the scoring jobs share on their driver, before any task starts.

Both run a backbone's forward pass on their photos: the weights are checked (cheap checks, no TensorFlow on
the driver), shipped to the executors, the precision resolved, the features' identity settled and, with
openvino, the IR shipped (exported here when it is not yet).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from image_jobs import storage
from image_jobs.backbones import WeightsUnavailableError, get_backbone
from image_jobs.conventions import IMAGENET_WEIGHTS, RANDOM_WEIGHTS, is_weights_file
from image_jobs.feature_identity import FeatureIdentity, job_identity
from image_jobs.featurize import TENSORFLOW, InferenceChoice
from image_jobs.openvino_runtime import resolve_precision, ship_ir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def check_weights(spark: SparkSession, backbone: str, weights: str, missing: str, random_note: str,
                  log: logging.Logger) -> None:
    """Fail before any task starts when the weights cannot be had, saying how to provide them.

    Cheap checks only: Keras' cache file for ``imagenet``, the file's existence for a weights URI (``missing``:
    the error when it is not there); random weights are logged with ``random_note``. Loading itself
    happens once per Python worker.
    """
    if weights == RANDOM_WEIGHTS:
        log.warning("%s", random_note)
    elif weights == IMAGENET_WEIGHTS:
        get_backbone(backbone).check_imagenet_cached()
    elif not storage.exists(spark, weights):
        raise WeightsUnavailableError(missing)


@dataclass(frozen=True)
class ShippedForwardPass:
    """What runs the CNN on the executors: the backbone, its weights (shipped), the resolved precision, the
    runtime with its IR, and the identity of the features it makes."""

    backbone: str
    weights: str
    precision: str
    inference: InferenceChoice
    identity: FeatureIdentity

    def describe(self) -> str:
        """The forward pass in a log line's words."""
        ir = f", IR {self.inference.ir_uri}" if self.inference.ir_uri else ""
        return f"runtime {self.inference.runtime}, precision {self.precision}{ir}"


def ship_forward_pass(spark: SparkSession, backbone: str, weights: str, runtime: str, precision: str,
                      check_identity: Callable[[FeatureIdentity], None] | None = None) -> ShippedForwardPass:
    """Ship the (checked) weights to every executor, resolve ``precision``, settle the features' identity
    (``check_identity`` may refuse it before anything is exported) and, with openvino, ship the IR."""
    if is_weights_file(weights):
        spark.sparkContext.addFile(weights)  # shipped once to every executor, from file://, s3:// or hdfs://
    resolved = resolve_precision(runtime, precision)
    identity = job_identity(backbone, weights, runtime, resolved)
    if check_identity is not None:
        check_identity(identity)
    inference = ship_ir(spark, backbone, weights, resolved) if runtime == "openvino" else TENSORFLOW
    return ShippedForwardPass(backbone, weights, resolved, inference, identity)
