"""The training job's pairwise sweep, in Spark: the (pair, split) task table, the fits on the executors, the
results written.

The task table never sits on the driver: in ``all_pairs`` mode it is the classes' cross join in Spark (at
1,000 classes and nine split ratios, 4.5 million tasks), with each pair's index what ``training.pair_tasks``
numbers it (the balanced sample of a pair is drawn from (seed, pair index)); the other modes have one pair
per class at most. The per-class samples of the reduced rows (``training_data.sweep_sample``: at most
``--max-per-class`` rows a class) go to every executor once, as a broadcast.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from image_jobs import storage
from image_jobs.training import best_per_pair, make_pair_fitter, pair_result_schema, pair_tasks
from image_jobs.training_data import sweep_sample

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from image_jobs.training_data import TrainingData

log = logging.getLogger("train_models")
TASK_SCHEMA = "pair_index int, class_1 string, class_2 string, split double, num_model int"


def all_pairs_frame(spark: SparkSession, labels: list[str], split_ratios: list[float]) -> DataFrame:
    """Every (class i < class j) pair of ``labels`` times every split, built in Spark; the pair index of (i, j)
    is ``i n - i (i + 1) / 2 + j - i - 1``: the pairs' position in ``pair_tasks``' order."""
    from pyspark.sql import functions as F

    n = len(labels)
    classes = spark.createDataFrame(list(enumerate(labels)), "i int, name string")
    splits = spark.createDataFrame([(k, float(r)) for k, r in enumerate(split_ratios, start=1)],
                                   "num_model int, split double")
    a, b = classes.alias("a"), classes.alias("b")
    pairs = a.crossJoin(b).filter(F.col("a.i") < F.col("b.i")).select(
        (F.col("a.i") * n - (F.col("a.i") * (F.col("a.i") + 1) / 2).cast("int") + F.col("b.i") - F.col("a.i") - 1)
        .cast("int").alias("pair_index"),
        F.col("a.name").alias("class_1"), F.col("b.name").alias("class_2"))
    return pairs.crossJoin(splits).select("pair_index", "class_1", "class_2", "split", "num_model")


def task_frame(spark: SparkSession, labels: list[str], pair_mode: str, focus_class: str | None,
               split_ratios: list[float]) -> tuple[DataFrame, int]:
    """The sweep's (pair, split) tasks as a dataset, and the number of pairs."""
    if pair_mode == "all_pairs":
        return all_pairs_frame(spark, labels, split_ratios), len(labels) * (len(labels) - 1) // 2
    tasks = pair_tasks(labels, pair_mode, focus_class, split_ratios)
    rows = [(t.pair_index, t.class_1, t.class_2, t.split, t.num_model) for t in tasks]
    return spark.createDataFrame(rows, TASK_SCHEMA), len({t.pair_index for t in tasks})


def fit_pairs(tasks: DataFrame, n_tasks: int, args, label_index: dict[str, int], broadcast) -> DataFrame:
    """The pairwise results (every model, the best of each pair flagged), fitted on the executors."""
    spark = tasks.sparkSession
    partitions = max(1, min(n_tasks, spark.sparkContext.defaultParallelism * 4))
    return best_per_pair(tasks.repartition(partitions, "pair_index").mapInPandas(
        make_pair_fitter(broadcast, label_index, args.max_per_class, args.iterations, args.seed),
        pair_result_schema(),
    ))


def write_pairwise(results: DataFrame, models_uri: str) -> None:
    """Write every pairwise model's results, and the best model of each pair in its own partition."""
    from pyspark.sql import functions as F

    results.drop("coef", "intercept").orderBy("pair_index", "num_model").write.mode(
        "overwrite").parquet(storage.join_uri(models_uri, "pairwise_results"))
    (results.filter("best_of_pair")
     .withColumn("pair", F.concat_ws("_VS_", "class_1", "class_2"))
     .select("pair", "class_1", "class_2", "split", "predict_pct", "nb_test", "coef", "intercept", "model_type")
     .repartition("pair").write.mode("overwrite").partitionBy("pair")
     .parquet(storage.join_uri(models_uri, "pairwise")))


def pairwise_sweep(spark: SparkSession, args, data: TrainingData) -> tuple[int, int, float]:
    """Fit and write the pairwise models of the run's pair mode; returns (pairs, models, seconds)."""
    started = time.perf_counter()
    tasks, n_pairs = task_frame(spark, data.labels, args.pair_mode, args.focus_class, args.split_ratios)
    n_tasks = n_pairs * len(args.split_ratios)
    log.info("pairwise sweep (%s): %d pairs x %d splits = %d models", args.pair_mode, n_pairs,
             len(args.split_ratios), n_tasks)
    sample = sweep_sample(data, args.max_per_class, args.seed)
    broadcast = spark.sparkContext.broadcast((sample.pca, sample.y))
    label_index = {label: i for i, label in enumerate(data.labels)}
    results = fit_pairs(tasks, n_tasks, args, label_index, broadcast).cache()
    write_pairwise(results, args.models_uri)
    n_models = results.count()
    results.unpersist()
    broadcast.unpersist()
    seconds = time.perf_counter() - started
    log.info("pairwise sweep: %d models in %.1f s (%.0f models/s)", n_models, seconds, n_models / max(seconds, 1e-9))
    return n_pairs, n_models, seconds
