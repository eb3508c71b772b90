"""Training: which images a run sees, input checks and the pairwise sweep (the multiclass model: ``model_selection``).

The pairwise sweep follows the original study: for every pair of classes (or a focus class against
each other class, or against all others pooled), a balanced sample of up to ``max_per_class``
images per class, then for every split ratio a seeded train/test split and a linear SVM. The fits
are many and small: the PCA-reduced feature matrix is broadcast once per executor and a table of
(pair, split) tasks is spread over the executors with ``mapInPandas``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from image_jobs.conventions import PAIR_MODES, min_images_for_fraction

REST = "rest"  # class_2 of a one_vs_rest model: every other class pooled
SVM_MODEL_TYPE = "linear_svm"



class TrainingInputError(ValueError):
    """The run's data or parameters cannot train what was asked; the message names the culprit."""


@dataclass(frozen=True)
class PairTask:
    """One pairwise model to fit."""

    pair_index: int
    class_1: str
    class_2: str
    split: float
    num_model: int


def latest_features(df):
    """Keep the newest feature row per image path (a file rewritten later wins, then the later run)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("path").orderBy(F.col("modificationTime").desc(), F.col("run").desc())
    return df.withColumn("_rank", F.row_number().over(order)).filter("_rank = 1").drop("_rank")


def restrict_run(df, labels: list[str], modified_before_utc: str):
    """The rows a run sees: images modified before its time, of its labels (all when empty)."""
    from pyspark.sql import functions as F

    df = df.filter(F.col("modificationTime") < F.to_timestamp(F.lit(modified_before_utc)))
    return df.filter(F.col("label").isin(list(labels))) if labels else df


def check_inputs(counts: dict[str, int], requested: list[str], split_ratios: list[float], test_fraction: float,
                 pair_mode: str, focus_class: str | None) -> list[str]:
    """Validate the run's classes against its parameters; returns the sorted class list.

    Raises TrainingInputError naming the labels or parameters at fault.
    """
    missing = sorted(set(requested) - set(counts))
    if missing:
        raise TrainingInputError(f"requested labels with no images: {missing}")
    labels = sorted(counts)
    if len(labels) < 2:
        raise TrainingInputError(f"need at least 2 classes to train, found {len(labels)}: {labels}")
    if pair_mode not in PAIR_MODES:
        raise TrainingInputError(f"unknown pair mode {pair_mode!r}; choose one of {', '.join(PAIR_MODES)}")
    if pair_mode != "all_pairs":
        if not focus_class:
            raise TrainingInputError(f"pair mode {pair_mode} needs a focus class")
        if focus_class not in counts:
            raise TrainingInputError(f"focus class {focus_class!r} is not among the run's classes {labels}")
    bad_ratios = [r for r in split_ratios if not 0 < r < 1]
    if bad_ratios or not split_ratios:
        raise TrainingInputError(f"split ratios must be in (0, 1), got {split_ratios}")
    if not 0 < test_fraction < 1:
        raise TrainingInputError(f"test fraction must be in (0, 1), got {test_fraction}")
    need = max(min_images_for_fraction(r) for r in [*split_ratios, test_fraction])
    too_few = {label: n for label, n in counts.items() if n < need}
    if too_few:
        raise TrainingInputError(
            f"classes with too few images for split ratios {split_ratios} and test fraction {test_fraction} "
            f"(each class needs at least {need}): {too_few}"
        )
    return labels


def pair_tasks(labels: list[str], pair_mode: str, focus_class: str | None, split_ratios: list[float]) -> list[PairTask]:
    """The (pair, split) table of the sweep, in a stable order."""
    if pair_mode == "all_pairs":
        pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    elif pair_mode == "one_vs_each":
        pairs = [(focus_class, other) for other in labels if other != focus_class]
    else:
        pairs = [(focus_class, REST)]
    return [
        PairTask(pair_index, c1, c2, float(split), num_model)
        for pair_index, (c1, c2) in enumerate(pairs)
        for num_model, split in enumerate(split_ratios, start=1)
    ]


def stratified_test_mask(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of test rows: ``test_fraction`` of every class (at least one), seeded.

    ``labels`` must be in a stable order (e.g. rows sorted by path) for the split to be reproducible.
    """
    mask = np.zeros(len(labels), dtype=bool)
    for class_index, label in enumerate(sorted(set(labels.tolist()))):
        rows = np.flatnonzero(labels == label)
        rng = np.random.default_rng([seed, class_index])
        n_test = min(len(rows) - 1, max(1, round(len(rows) * test_fraction)))
        mask[rng.permutation(rows)[:n_test]] = True
    return mask


def balanced_sample(y: np.ndarray, class_1: int, class_2: int | None, max_per_class: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and binary targets of a balanced sample: up to ``max_per_class`` of each side.

    ``class_2`` None means every class other than ``class_1``, pooled (one-vs-rest).
    """
    pos = np.flatnonzero(y == class_1)
    neg = np.flatnonzero(y != class_1) if class_2 is None else np.flatnonzero(y == class_2)
    n = min(max_per_class, len(pos), len(neg))
    pos = np.sort(rng.choice(pos, n, replace=False))
    neg = np.sort(rng.choice(neg, n, replace=False))
    return np.concatenate([pos, neg]), np.concatenate([np.ones(n, np.int8), np.zeros(n, np.int8)])


def split_sample(target: np.ndarray, train_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean train mask of a stratified split with ``train_fraction`` of each side (at least one each)."""
    train = np.zeros(len(target), dtype=bool)
    for value in (0, 1):
        rows = np.flatnonzero(target == value)
        n_train = min(len(rows) - 1, max(1, round(len(rows) * train_fraction)))
        train[rng.permutation(rows)[:n_train]] = True
    return train


def pair_result_schema():
    """Schema of the sweep's output: the study's metric columns, then model type, timing and the model."""
    from pyspark.sql.types import (
        ArrayType,
        DoubleType,
        FloatType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    return StructType([
        StructField("class_1", StringType(), False),
        StructField("class_2", StringType(), False),
        StructField("split", DoubleType(), False),
        StructField("iteration", IntegerType(), False),
        StructField("num_model", IntegerType(), False),
        StructField("predict_pct", DoubleType(), False),
        StructField("nb_train", LongType(), False),
        StructField("nb_test", LongType(), False),
        StructField("nb_correct", LongType(), False),
        StructField("model_type", StringType(), False),
        StructField("fit_seconds", DoubleType(), False),
        StructField("pair_index", IntegerType(), False),
        StructField("coef", ArrayType(FloatType(), False), False),
        StructField("intercept", DoubleType(), False),
    ])


def fit_pair(x: np.ndarray, target: np.ndarray, train: np.ndarray, iterations: int, seed: int):
    """Fit one linear SVM; returns (correct test predictions, coefficients, intercept, seconds)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    model = LinearSVC(C=1.0, max_iter=iterations, random_state=seed, dual="auto")
    with warnings.catch_warnings():
        # the study's fixed iteration budget: not converging within it is part of the experiment
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[train], target[train])
    correct = int((model.predict(x[~train]) == target[~train]).sum())
    return correct, model.coef_[0].astype(np.float32), float(model.intercept_[0]), time.perf_counter() - started


def make_pair_fitter(features_broadcast, label_index: dict[str, int], max_per_class: int, iterations: int,
                     seed: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: rows of (pair_index, class_1, class_2, split, num_model) -> fitted models.

    ``features_broadcast.value`` is ``(x, y)``: the PCA-reduced matrix (float32) and class indices.
    The balanced sample depends only on (seed, pair), so every split of a pair uses the same images.
    """

    def fit_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        x, y = features_broadcast.value
        samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for batch in batches:
            rows = []
            for task in batch.itertuples(index=False):
                if task.pair_index not in samples:
                    rng = np.random.default_rng([seed, task.pair_index])
                    other = None if task.class_2 == REST else label_index[task.class_2]
                    samples[task.pair_index] = balanced_sample(y, label_index[task.class_1], other,
                                                               max_per_class, rng)
                idx, target = samples[task.pair_index]
                train = split_sample(target, task.split, np.random.default_rng([seed, task.pair_index,
                                                                                task.num_model]))
                correct, coef, intercept, seconds = fit_pair(x[idx], target, train, iterations, seed)
                nb_test = int((~train).sum())
                rows.append({
                    "class_1": task.class_1, "class_2": task.class_2, "split": float(task.split),
                    "iteration": iterations, "num_model": int(task.num_model),
                    "predict_pct": round(100.0 * correct / nb_test, 4), "nb_train": int(train.sum()),
                    "nb_test": nb_test, "nb_correct": correct, "model_type": SVM_MODEL_TYPE,
                    "fit_seconds": round(seconds, 6), "pair_index": int(task.pair_index),
                    "coef": coef, "intercept": intercept,
                })
            yield pd.DataFrame(rows, columns=pair_result_schema().fieldNames())

    return fit_partition


def best_per_pair(results):
    """The best model of each pair: highest accuracy, ties to the larger test set, then the lower split."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("pair_index").orderBy(
        F.col("predict_pct").desc(), F.col("nb_test").desc(), F.col("split").asc()
    )
    return results.withColumn("_rank", F.row_number().over(order)).withColumn(
        "best_of_pair", F.col("_rank") == 1
    ).drop("_rank")

