"""The pairwise models' report tables, computed in Spark: the driver gets aggregates, never the models' rows.

``pairwise_results`` holds one row per pairwise model: at 1,000 classes in ``all_pairs`` mode and nine split
ratios, 4.5 million rows. ``metrics.csv`` and ``hardest_pairs.csv`` are written by Spark's tasks
(``storage.write_csv_file``); the plots and the summary read only what they draw or show: statistics per split
ratio (one row per ratio), the mean accuracy of each pair for the heatmap (at most classes² / 2 rows), and, per
focus class, either its pairs' rows (when a legend can name every other class) or statistics per ratio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from image_jobs import storage
from image_jobs.conventions import METRICS_COLUMNS

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

# a focus class's plot draws one named line per other class up to this many; past it, the band of its pairs
MAX_FOCUS_LINES = 40
BAND_COLUMNS = ("split", "mean", "min", "max", "q1", "q3")


def metrics_frame(results: DataFrame) -> DataFrame:
    """metrics.csv's rows: one per pairwise model, the study's columns first, ordered by pair and split."""
    return results.select(*METRICS_COLUMNS).orderBy("class_1", "class_2", "split", "num_model")


def csv_text_columns(df: DataFrame) -> DataFrame:
    """Every column as the text a CSV cell holds: numbers as Spark prints them, booleans as pandas writes them
    (True/False), nulls empty, text neutralised where a spreadsheet would run it (``storage.csv_text``)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, StringType

    def text(field):
        column = F.col(field.name)
        if isinstance(field.dataType, BooleanType):
            return F.when(column, "True").when(~column, "False").alias(field.name)
        if isinstance(field.dataType, StringType):
            return storage.csv_text(column).alias(field.name)
        return column.cast("string").alias(field.name)

    return df.select(*[text(field) for field in df.schema.fields])


def pair_table(metrics: DataFrame) -> DataFrame:
    """hardest_pairs.csv: every pair's mean, min and max accuracy over its models, hardest first."""
    from pyspark.sql import functions as F

    return (metrics.groupBy("class_1", "class_2")
            .agg(F.avg("predict_pct").alias("mean_pct"), F.min("predict_pct").alias("min_pct"),
                 F.max("predict_pct").alias("max_pct"))
            .orderBy("mean_pct", "class_1", "class_2"))


def band_by_split(rows: DataFrame, *keys: str) -> DataFrame:
    """Accuracy statistics per split ratio (and per ``keys``): mean, min, max and the exact quartiles (linear
    interpolation, as pandas' ``quantile``)."""
    from pyspark.sql import functions as F

    return rows.groupBy(*keys, "split").agg(
        F.avg("predict_pct").alias("mean"), F.min("predict_pct").alias("min"), F.max("predict_pct").alias("max"),
        F.expr("percentile(predict_pct, 0.25)").alias("q1"), F.expr("percentile(predict_pct, 0.75)").alias("q3"),
    ).orderBy(*keys, "split")


def focus_rows(metrics: DataFrame) -> DataFrame:
    """Each model's row once per class of its pair: focus, other, split, predict_pct."""
    from pyspark.sql import functions as F

    def side(focus: str, other: str) -> DataFrame:
        return metrics.select(F.col(focus).alias("focus"), F.col(other).alias("other"), "split", "predict_pct")

    return side("class_1", "class_2").unionByName(side("class_2", "class_1"))


def focus_tables(metrics: DataFrame, focus_classes: list[str]) -> dict[str, tuple[str, pd.DataFrame]]:
    """What each focus class's plot draws: ``("lines", rows)`` (other, split, predict_pct) when it has at most
    MAX_FOCUS_LINES other classes, else ``("band", statistics per split)``; one Spark job for all of them."""
    from pyspark.sql import functions as F

    rows = focus_rows(metrics).filter(F.col("focus").isin(focus_classes))
    others = {r["focus"]: r["n"] for r in rows.groupBy("focus").agg(
        F.countDistinct("other").alias("n")).collect()}
    lined = [focus for focus in focus_classes if others.get(focus, 0) <= MAX_FOCUS_LINES]
    banded = [focus for focus in focus_classes if focus not in set(lined)]
    tables: dict[str, tuple[str, pd.DataFrame]] = {}
    if lined:
        frame = rows.filter(F.col("focus").isin(lined)).orderBy("focus", "other", "split").toPandas()
        for focus in lined:
            tables[focus] = ("lines", frame[frame["focus"] == focus].drop(columns="focus").reset_index(drop=True))
    if banded:
        frame = band_by_split(rows.filter(F.col("focus").isin(banded)), "focus").toPandas()
        for focus in banded:
            tables[focus] = ("band", frame[frame["focus"] == focus].drop(columns="focus").reset_index(drop=True))
    return tables
