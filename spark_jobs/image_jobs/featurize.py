"""Featurize images inside Spark's Python workers: decode + CNN forward pass in batches.

The function returned by ``make_featurizer`` is used with ``DataFrame.mapInPandas`` (an iterator of
pandas batches, like an iterator pandas UDF, but it passes the metadata columns through). The model
is built once per Python worker and reused across tasks; the runtime (TensorFlow, or OpenVINO on the
exported IR: ``openvino_runtime``) gets exactly the task's cores, so concurrent tasks on an executor do not
oversubscribe the CPU. With OpenVINO, nothing here imports TensorFlow.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from image_jobs.conventions import is_weights_file
from image_jobs.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from image_jobs.photo_listing import DEFAULT_MAX_FILE_BYTES, precheck_reason
from image_jobs.photo_store import StoreOptions, prefetched_photos

if TYPE_CHECKING:  # pandas is imported where a batch is built: the prediction command never needs it
    import pandas as pd

# what identifies the features a row holds (``feature_identity``): with the backbone (the stores' partition),
# the weights' content digest and the precision class
IDENTITY_COLUMNS = ["weights_digest", "precision_class"]
FEATURE_COLUMNS = ["path", "label", "length", "modificationTime", "width", "height", *IDENTITY_COLUMNS, "features"]
REJECT_COLUMNS = ["path", "label", "length", "modificationTime", *IDENTITY_COLUMNS, "reason"]

# (backbone, weights, runtime, precision) -> (model, resize policy); lives as long as the Python worker
_MODEL_CACHE: dict[tuple[str, str, str, str], tuple[object, object]] = {}


@dataclass(frozen=True)
class InferenceChoice:
    """Which runtime runs the forward pass, at which precision; ``ir_uri`` is the exported OpenVINO IR
    (its ``.xml``, shipped to the executors with ``SparkContext.addFile`` next to its ``.bin``), and
    ``ir_digests`` its files' ``(name, sha256 hex)``, which every worker checks its copies against."""

    runtime: str = "tensorflow"
    precision: str = "fp32"
    ir_uri: str | None = None
    ir_digests: tuple[tuple[str, str], ...] = ()


TENSORFLOW = InferenceChoice()


def output_schema():
    """Schema of ``make_featurizer``'s output: one row per listed photo, features or a reject reason."""
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, LongType, StringType, StructField, StructType

    return StructType([
        StructField("path", StringType(), False),
        StructField("label", StringType(), True),
        StructField("length", LongType(), False),
        StructField("mtime_ms", LongType(), False),
        StructField("width", IntegerType(), True),
        StructField("height", IntegerType(), True),
        StructField("features", ArrayType(FloatType(), False), True),
        StructField("reason", StringType(), True),
    ])


def configure_threads(cores: int) -> None:
    """Give TensorFlow/OpenMP exactly ``cores`` threads; must run before TensorFlow is imported."""
    cores = str(max(1, cores))
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = cores
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _cache_key(backbone_name: str, weights: str, inference: InferenceChoice) -> tuple[str, str, str, str]:
    return backbone_name, weights, inference.runtime, inference.precision


def model_is_loaded(backbone_name: str, weights: str, inference: InferenceChoice = TENSORFLOW) -> bool:
    """Whether this Python worker already holds the model (workers are reused across tasks)."""
    return _cache_key(backbone_name, weights, inference) in _MODEL_CACHE


class ForwardPass:
    """A Keras model's inference as one ``tf.function`` traced once for every batch size.

    Keras' ``predict_on_batch`` traces again for the first batch of another size (a task's last,
    partial batch: ~2 s on MobileNetV2 here) and goes through Keras' data handling on every call;
    a fixed signature with an unknown batch dimension is traced once per process and runs the same
    graph (measured: ~8% more images/s on one core).
    """

    def __init__(self, model):
        import tensorflow as tf

        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        self._forward = tf.function(lambda batch: model(batch, training=False), input_signature=[spec])

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(batch).numpy()


def load_model(backbone_name: str, weights: str, weights_file: str | None,
               inference: InferenceChoice = TENSORFLOW, threads: int | None = None):
    """The feature model (``predict_on_batch``: a ``ForwardPass`` or an ``OpenVinoForwardPass``) and
    resize policy for this worker, built on first use and then cached. ``threads`` (OpenVINO's pool)
    defaults to the task's cores."""
    key = _cache_key(backbone_name, weights, inference)
    if key not in _MODEL_CACHE:
        from image_jobs.backbones import get_backbone

        backbone = get_backbone(backbone_name)
        if inference.runtime == "openvino":
            from image_jobs.openvino_runtime import OpenVinoForwardPass

            if not inference.ir_uri:
                raise ValueError("runtime 'openvino' needs the exported IR (InferenceChoice.ir_uri)")
            model = OpenVinoForwardPass(local_shipped_file(inference.ir_uri), threads or _task_cores(),
                                        inference.precision, dict(inference.ir_digests) or None)
        else:
            # Threads come from the environment set by configure_threads before TensorFlow's import:
            # measured here, tf.config.threading calls on top of it make inference ~40% slower.
            from image_jobs.backbones import build_feature_model

            model = ForwardPass(build_feature_model(backbone, weights, weights_file))
        _MODEL_CACHE[key] = (model, backbone.resize_policy(weights))
    return _MODEL_CACHE[key]


def _task_cores() -> int:
    """The running Spark task's cores; outside Spark (the prediction command: pyspark never imported,
    so not imported here either), the machine's."""
    if "pyspark" in sys.modules:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            return ctx.cpus()
    return os.cpu_count() or 1


def local_weights_file(weights: str) -> str | None:
    """Where a weights URI shipped with ``SparkContext.addFile`` is on this node (None for imagenet/random)."""
    if not is_weights_file(weights):
        return None
    return local_shipped_file(weights)


def local_shipped_file(uri: str) -> str:
    """Where a file shipped with ``SparkContext.addFile`` is on this node; the path itself outside Spark, or where
    the file was not shipped (a process that ran a Spark session before predicting on its own)."""
    if "pyspark" in sys.modules:  # outside Spark (the prediction command) pyspark is never imported
        from pyspark import SparkFiles

        name = uri.rstrip("/").rsplit("/", 1)[-1]
        try:
            shipped = SparkFiles.get(name)
            if os.path.exists(shipped):
                return shipped
        except Exception:  # not inside a Spark worker (unit tests): use the path as given
            pass
    return uri.removeprefix("file://")


def featurize_contents(contents, model, policy, batch_size: int,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list, list, list, list]:
    """Decode and featurize image bytes in batches of ``batch_size``; never raises for a bad image.

    Returns four lists aligned with ``contents``: feature vectors (float32, or None), original widths
    and heights (or None), and the reason an image was not featurized (None when it was). Shared by
    the extraction job and prediction, so both see exactly the same pixels for the same bytes.
    """
    n = len(contents)
    widths: list = [None] * n
    heights: list = [None] * n
    features: list = [None] * n
    reasons: list = [None] * n
    good_rows: list[int] = []
    good_pixels: list[np.ndarray] = []
    for i, data in enumerate(contents):
        try:
            decoded = decode_image(bytes(data) if data is not None else b"", policy, max_pixels)
        except DecodeError as exc:
            reasons[i] = str(exc)
            continue
        widths[i], heights[i] = decoded.width, decoded.height
        good_rows.append(i)
        good_pixels.append(decoded.pixels)
    for start in range(0, len(good_rows), batch_size):
        rows = good_rows[start : start + batch_size]
        batch = np.stack(good_pixels[start : start + batch_size]).astype(np.float32)
        out = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
        for row, vector in zip(rows, out, strict=True):
            if np.isfinite(vector).all():
                features[row] = vector
            else:
                reasons[row] = "model produced non-finite features"
    return features, widths, heights, reasons


def featurize_batch(pdf: pd.DataFrame, fetched: list, model, policy, batch_size: int,
                    max_pixels: int) -> pd.DataFrame:
    """Decode and featurize one pandas batch of listed photos whose bytes are ``fetched``
    (``photo_store.Fetched``, one per row); a photo not read or not decodable gets a ``reason`` instead."""
    import pandas as pd

    readable = [i for i, item in enumerate(fetched) if item.reason is None]
    got = featurize_contents([fetched[i].content for i in readable], model, policy, batch_size, max_pixels)
    n = len(pdf)
    features, widths, heights = np.empty(n, dtype=object), np.empty(n, dtype=object), np.empty(n, dtype=object)
    reasons = np.array([item.reason for item in fetched], dtype=object)
    for j, i in enumerate(readable):  # element by element: a list of equal-length arrays would broadcast
        features[i], widths[i], heights[i], reasons[i] = got[0][j], got[1][j], got[2][j], got[3][j]
    return pd.DataFrame({
        "path": pdf["path"].to_numpy(),
        "label": pdf["label"].to_numpy(),
        "length": pdf["length"].to_numpy(),
        "mtime_ms": pdf["mtime_ms"].to_numpy(),
        "width": widths,
        "height": heights,
        "features": features,
        "reason": reasons,
    })


def make_featurizer(
    backbone_name: str,
    weights: str,
    batch_size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    counters: dict | None = None,
    inference: InferenceChoice = TENSORFLOW,
    options: StoreOptions | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: listed photos (``extraction.listing_schema``) -> ``output_schema()``.

    Each task reads its photos' bytes ``options.concurrency`` at a time ahead of the forward pass
    (``photo_store.prefetched_photos``); a photo outside any class folder, empty or over ``max_file_bytes``
    is rejected unread. ``counters`` may hold Spark accumulators ``done``, ``rejected``, ``seconds``
    (featurizing), ``model_loads`` and ``load_seconds`` that the driver reads to log progress and timings.
    ``inference`` picks the runtime and precision of the forward pass.
    """
    options = options or StoreOptions()

    def featurize(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return counted_batches(
            prefetched_photos(batches, options, lambda label, length: precheck_reason(label, length, max_file_bytes)),
            counters,
            lambda: (not model_is_loaded(backbone_name, weights, inference),
                     load_model(backbone_name, weights, local_weights_file(weights), inference)),
            lambda item, loaded: featurize_batch(*item, *loaded, batch_size, max_pixels),
        )

    return featurize


def counted_batches(batches: Iterator, counters: dict | None,
                    load: Callable[[], tuple[bool, object]],
                    process: Callable[[object, object], pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The task loop of the image UDFs (featurizing, scoring): threads for the task's cores, the
    worker's model (``load`` returns whether it loaded it now, and the model), then every batch (a
    pandas batch with its photos' bytes) processed; ``counters`` accumulate model loads and the
    done/rejected rows and seconds per batch.
    """
    configure_threads(_task_cores())
    batches = iter(batches)
    first = next(batches, None)  # an empty partition loads no model
    if first is None:
        return
    started = time.perf_counter()
    loaded_now, model = load()
    if counters and loaded_now:
        counters["model_loads"].add(1)
        counters["load_seconds"].add(time.perf_counter() - started)
    for pdf in itertools.chain([first], batches):
        started = time.perf_counter()
        out = process(pdf, model)
        if counters:
            rejected = int(out["reason"].notna().sum())
            counters["done"].add(len(out) - rejected)
            counters["rejected"].add(rejected)
            counters["seconds"].add(time.perf_counter() - started)
        yield out
