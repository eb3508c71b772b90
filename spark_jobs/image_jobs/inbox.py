"""Batch scoring of inbox photos inside Spark's Python workers, and the predictions table.

``make_scorer`` returns a ``mapInPandas`` function: the run's model (backbone + PCA + classifier,
``predict.Predictor``) is built once per Python worker and reused across tasks; photos are decoded
and run in batches by the same code as extraction. A photo that cannot be scored gets a reason; a
photo whose top probability is under the threshold is marked ``uncertain`` (its top classes are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd

from image_jobs.decode import DEFAULT_MAX_PIXELS

TOP = 3
# predictions.csv, in this order (the columns added later come last, so readers by position keep working)
CSV_COLUMNS = ["path", "top1_class", "top1_probability", "top3", "reason", "length", "modification_time",
               "scored_by_run", "uncertain", "threshold"]

# (model URI, weights, runtime, precision) -> Predictor; lives as long as the Python worker
_PREDICTORS: dict[tuple[str, str, str, str], object] = {}


def scored_schema():
    """Schema of ``make_scorer``'s output: one row per photo, its top classes or the reason it has none."""
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType, TimestampType

    return StructType([
        StructField("path", StringType(), False),
        StructField("length", LongType(), False),
        StructField("modificationTime", TimestampType(), True),
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
    """This worker's Predictor for ``model`` (a ``predict.MulticlassModel``) with ``weights``, its forward
    pass on ``inference`` (a ``featurize.InferenceChoice``; None: tensorflow), built on first use and
    then cached."""
    key = _predictor_key(model, weights, inference)
    if key not in _PREDICTORS:
        from dataclasses import replace

        from image_jobs.featurize import TENSORFLOW, local_weights_file
        from image_jobs.predictor import Predictor

        model = replace(model, weights_uri=None if weights == "imagenet" else weights)
        _PREDICTORS[key] = Predictor.load(model, local_weights_file(weights), batch_size, max_pixels,
                                          inference or TENSORFLOW)
    return _PREDICTORS[key]


def score_batch(pdf: pd.DataFrame, predictor, threshold: float, top: int = TOP) -> pd.DataFrame:
    """Score one pandas batch of (path, length, modificationTime, content) rows with ``threshold``."""
    from image_jobs.predictor import top_as_json

    predictions = predictor.predict(list(pdf["content"].to_numpy()), top, threshold)
    return pd.DataFrame({
        "path": pdf["path"].to_numpy(),
        "length": pdf["length"].to_numpy(),
        "modificationTime": pdf["modificationTime"].to_numpy(),
        "top1_class": [p.top[0][0] if p.scored else None for p in predictions],
        "top1_probability": [p.top[0][1] if p.scored else None for p in predictions],
        "top3": [top_as_json(p.top) for p in predictions],
        "reason": [p.reason for p in predictions],
        "uncertain": pd.array([p.uncertain for p in predictions], dtype="boolean"),
        "threshold": [threshold if p.scored else None for p in predictions],
    })


def make_scorer(model, weights: str, batch_size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                counters: dict | None = None,
                threshold: float | None = None,
                inference=None) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: (path, length, modificationTime, content) -> ``scored_schema()``.

    ``model`` is the run's validated ``predict.MulticlassModel``; ``weights`` the weights URI the
    driver shipped with ``SparkContext.addFile`` (or ``imagenet``, ``random``); ``threshold`` overrides
    the model's answer threshold (None: the model's, 0 for a model without one). ``counters`` may hold
    accumulators ``done``, ``rejected``, ``seconds``, ``model_loads`` and ``load_seconds``, as for
    extraction. ``inference`` (a ``featurize.InferenceChoice``; None: tensorflow) runs the forward pass.
    """

    applied = model.threshold if threshold is None else threshold

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from image_jobs.featurize import counted_batches

        return counted_batches(
            batches, counters,
            lambda: (not predictor_is_loaded(model, weights, inference),
                     predictor_for(model, weights, batch_size, max_pixels, inference)),
            lambda pdf, predictor: score_batch(pdf, predictor, applied),
        )

    return score


def precheck_rejects(spark, rows):
    """``scored_schema()`` rows for photos rejected before any byte is read: driver-side
    ``(path, length, mtime_ms, reason)`` tuples (see ``extraction.size_reason``)."""
    from pyspark.sql import functions as F

    from image_jobs.extraction import image_frame

    return image_frame(spark, rows, "reason").select(
        "path", "length", "modificationTime", F.lit(None).cast("string").alias("top1_class"),
        F.lit(None).cast("double").alias("top1_probability"), F.lit(None).cast("string").alias("top3"), "reason",
        F.lit(None).cast("boolean").alias("uncertain"), F.lit(None).cast("double").alias("threshold"))


def first_score_per_photo(df):
    """One row per photo (path, length, modificationTime): the earliest scoring run's.

    Runs never score a photo another run scored, so this only matters if two runs overlapped.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("path", "length", "modificationTime").orderBy(F.col("scored_by_run").asc())
    return df.withColumn("_rank", F.row_number().over(order)).filter("_rank = 1").drop("_rank")


def predictions_csv(rows: pd.DataFrame) -> str:
    """predictions.csv text from scored rows (``scored_schema()`` + ``scored_by_run``), ordered by path."""
    out = rows.rename(columns={"modificationTime": "modification_time"})
    if len(out):
        times = pd.to_datetime(out["modification_time"], utc=True)
        out = out.assign(modification_time=times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.replace(
            r"\.(\d{3})\d{3}Z$", r".\1Z", regex=True), top1_probability=out["top1_probability"].round(6))
        if "uncertain" in out:  # batches scored before thresholds existed have neither column: empty cells
            out = out.assign(uncertain=out["uncertain"].map({True: "true", False: "false"}),
                             threshold=out["threshold"].round(6))
    out = out.sort_values(["path", "modification_time"], kind="stable") if len(out) else out
    return out.reindex(columns=CSV_COLUMNS).to_csv(index=False)
