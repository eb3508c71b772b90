"""Reproducible per-class choices of rows, made in Spark: the multiclass test split, the model selection's
bounded stratified sample and the pairwise sweep's per-class samples.

Every row gets a pseudo-random key from (seed, purpose, path) (``xxhash64``), so a choice depends on the
rows and the seed only, never on how Spark partitions them. A class's first ``quota`` rows by that key
are chosen: the driver learns one cut-off key per class (a window over the narrow (label, key) rows,
then one row per class), never the rows themselves.
"""

from __future__ import annotations

import math

KEY = "_choice_key"


def choice_key(seed: int, purpose: str):
    """The column of a row's pseudo-random key for ``purpose`` (64-bit, from seed, purpose and path)."""
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(seed), F.lit(purpose), F.col("path"))


def held_out_quota(n: int, fraction: float) -> int:
    """Test rows of a class of ``n`` rows: ``fraction`` of it, at least 1, leaving at least 1 to train."""
    return min(n - 1, max(1, round(n * fraction)))


def bounded_quotas(counts: dict[str, int], max_rows: int, min_per_class: int) -> dict[str, int]:
    """A stratified sample's rows per class: every row when the classes hold at most ``max_rows``; else each
    class's share of ``max_rows`` (rounded down, at least ``min_per_class`` or all it has)."""
    total = sum(counts.values())
    if total <= max_rows:
        return dict(counts)
    return {label: min(n, max(min_per_class, math.floor(max_rows * n / total))) for label, n in counts.items()}


def mark_first_per_class(df, quotas: dict[str, int], seed: int, purpose: str, flag: str):
    """``df`` (with ``path`` and ``label``) with a boolean column ``flag``: true for each class's first
    ``quotas[label]`` rows by ``choice_key(seed, purpose)`` (a class without a quota: none)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = df.sparkSession
    keyed = df.withColumn(KEY, choice_key(seed, purpose))
    quota_frame = spark.createDataFrame([(label, int(q)) for label, q in quotas.items() if q > 0],
                                        "label string, _quota int")
    ranked = keyed.select("label", KEY).withColumn(
        "_rank", F.row_number().over(Window.partitionBy("label").orderBy(KEY)))
    cutoffs = (ranked.join(F.broadcast(quota_frame), "label")
               .filter(F.col("_rank") == F.col("_quota")).select("label", F.col(KEY).alias("_cutoff")))
    cut = spark.createDataFrame(cutoffs.collect(), "label string, _cutoff long")  # one row per class
    return (keyed.join(F.broadcast(cut), "label", "left")
            .withColumn(flag, F.coalesce(F.col(KEY) <= F.col("_cutoff"), F.lit(False)))
            .drop(KEY, "_cutoff"))
