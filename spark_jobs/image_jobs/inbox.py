"""Batch scoring of inbox photos inside Spark's Python workers, and the predictions table.

``make_scorer`` returns a ``mapInPandas`` function: the run's model (backbone + PCA + classifier,
``predictor.Predictor``) is built once per Python worker and reused across tasks; photos are decoded
and run in batches by the same code as extraction. A photo that cannot be scored gets a reason; a
photo whose top probability is under the threshold is marked ``uncertain`` (its top classes are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd

from image_jobs.conventions import IMAGENET_WEIGHTS, PHOTO_KEY
from image_jobs.decode import DEFAULT_MAX_PIXELS
from image_jobs.photo_listing import DEFAULT_MAX_FILE_BYTES, size_reason

TOP = 3
# predictions.csv, in this order (the columns added later come last, so readers by position keep working)
CSV_COLUMNS = ["path", "top1_class", "top1_probability", "top3", "reason", "length", "modification_time",
               "scored_by_run", "uncertain", "threshold", "model_sha256"]

# (model URI, weights, runtime, precision) -> Predictor; lives as long as the Python worker
_PREDICTORS: dict[tuple[str, str, str, str], object] = {}


def scored_schema(times: str = "timestamp"):
    """Schema of the scored rows: one row per photo, its top classes or the reason it has none. ``times``:
    ``timestamp`` (the batches' ``modificationTime``) or ``ms`` (``make_scorer``'s ``mtime_ms``)."""
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType, TimestampType

    time_field = StructField("mtime_ms", LongType(), False) if times == "ms" else \
        StructField("modificationTime", TimestampType(), True)
    return StructType([
        StructField("path", StringType(), False),
        StructField("length", LongType(), False),
        time_field,
        StructField("top1_class", StringType(), True),
        StructField("top1_probability", DoubleType(), True),
        StructField("top3", StringType(), True),  # JSON: [{"class": ..., "probability": ...}, ...] best first
        StructField("reason", StringType(), True),
        StructField("uncertain", BooleanType(), True),  # top1_probability < threshold; null when not scored
        StructField("threshold", DoubleType(), True),  # the threshold the photo was scored with
    ])


def predictor_is_loaded(model, weights: str, inference=None) -> bool:
    """Whether this Python worker already holds the Predictor (workers are reused across tasks).

    A module-level function, so a pickled closure consults this module's cache, not a copy of it.
    """
    return _predictor_key(model, weights, inference) in _PREDICTORS


def _predictor_key(model, weights: str, inference) -> tuple[str, str, str, str]:
    runtime, precision = (inference.runtime, inference.precision) if inference else ("tensorflow", "fp32")
    return model.source, weights, runtime, precision


def predictor_for(model, weights: str, batch_size: int, max_pixels: int, inference=None):
    """This worker's Predictor for ``model`` (a ``predictor.MulticlassModel``) with ``weights``, its forward
    pass on ``inference`` (a ``featurize.InferenceChoice``; None: tensorflow), built on first use and
    then cached."""
    key = _predictor_key(model, weights, inference)
    if key not in _PREDICTORS:
        from dataclasses import replace

        from image_jobs.featurize import TENSORFLOW, local_weights_file
        from image_jobs.predictor import Predictor

        model = replace(model, weights_uri=None if weights == IMAGENET_WEIGHTS else weights)
        _PREDICTORS[key] = Predictor.load(model, local_weights_file(weights), batch_size, max_pixels,
                                          inference or TENSORFLOW)
    return _PREDICTORS[key]


def score_batch(pdf: pd.DataFrame, fetched: list, predictor, threshold: float, top: int = TOP) -> pd.DataFrame:
    """Score one pandas batch of listed photos (path, length, mtime_ms) whose bytes are ``fetched``
    (``photo_store.Fetched``) with ``threshold``; a photo not read gets the reason it was not."""
    from image_jobs.predictor import Prediction, top_as_json

    readable = [i for i, item in enumerate(fetched) if item.reason is None]
    scored = predictor.predict([fetched[i].content for i in readable], top, threshold)
    predictions = [Prediction(None, item.reason) for item in fetched]
    for i, prediction in zip(readable, scored, strict=True):
        predictions[i] = prediction
    return pd.DataFrame({
        "path": pdf["path"].to_numpy(),
        "length": pdf["length"].to_numpy(),
        "mtime_ms": pdf["mtime_ms"].to_numpy(),
        "top1_class": [p.top[0][0] if p.scored else None for p in predictions],
        "top1_probability": [p.top[0][1] if p.scored else None for p in predictions],
        "top3": [top_as_json(p.top) for p in predictions],
        "reason": [p.reason for p in predictions],
        "uncertain": pd.array([p.uncertain for p in predictions], dtype="boolean"),
        "threshold": [threshold if p.scored else None for p in predictions],
    })


def make_scorer(model, weights: str, batch_size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                counters: dict | None = None, threshold: float | None = None, inference=None, options=None,
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Callable[[Iterator[pd.DataFrame]],
                                                                           Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: listed photos (path, length, mtime_ms, label) -> ``scored_schema("ms")``.

    ``model`` is the run's validated ``predictor.MulticlassModel``; ``weights`` the weights URI the
    driver shipped with ``SparkContext.addFile`` (or ``imagenet``, ``random``); ``threshold`` overrides
    the model's answer threshold (None: the model's, 0 for a model without one). ``counters`` may hold
    accumulators ``done``, ``rejected``, ``seconds``, ``model_loads`` and ``load_seconds``, as for
    extraction. ``inference`` (a ``featurize.InferenceChoice``; None: tensorflow) runs the forward pass;
    the photos are read ``options.concurrency`` at a time (a ``photo_store.StoreOptions``), those empty
    or over ``max_file_bytes`` not at all.
    """
    from image_jobs.photo_store import StoreOptions

    applied = model.threshold if threshold is None else threshold
    options = options or StoreOptions()

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from image_jobs.featurize import counted_batches
        from image_jobs.photo_store import prefetched_photos

        return counted_batches(
            prefetched_photos(batches, options, lambda _label, length: size_reason(length, max_file_bytes)),
            counters,
            lambda: (not predictor_is_loaded(model, weights, inference),
                     predictor_for(model, weights, batch_size, max_pixels, inference)),
            lambda item, predictor: score_batch(*item, predictor, applied),
        )

    return score


def first_score_per_photo(df):
    """One row per photo (path, length, modificationTime): the earliest scoring run's.

    Runs never score a photo another run scored, so this only matters if two runs overlapped.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(*PHOTO_KEY).orderBy(F.col("scored_by_run").asc())
    return df.withColumn("_rank", F.row_number().over(order)).filter("_rank = 1").drop("_rank")


def csv_frame(rows):
    """predictions.csv's columns as Spark strings (byte for byte what the tests' pandas reference writes),
    ordered by path and time: Spark's tasks write the file, the driver never holds the rows."""
    from pyspark.sql import functions as F

    from image_jobs.storage import csv_text

    def text(column):
        return csv_text(F.col(column).cast("string"))

    formatted = {
        "path": text("path"), "top1_class": text("top1_class"),
        "top1_probability": F.round("top1_probability", 6).cast("string"), "top3": text("top3"),
        "reason": text("reason"), "length": text("length"),
        "modification_time": F.date_format("modificationTime", "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"),
        "scored_by_run": text("scored_by_run"),
        "uncertain": text("uncertain") if "uncertain" in rows.columns else F.lit(None).cast("string"),
        "threshold": F.round("threshold", 6).cast("string") if "threshold" in rows.columns
        else F.lit(None).cast("string"),
        "model_sha256": text("model_sha256") if "model_sha256" in rows.columns else F.lit(None).cast("string"),
    }
    return rows.orderBy("path", "modificationTime").select(*[formatted[name].alias(name) for name in CSV_COLUMNS])

