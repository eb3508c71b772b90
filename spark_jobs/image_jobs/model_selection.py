"""Model selection of the multiclass model, and the answer threshold that turns doubt into "not sure".

Selection: seeded, stratified k-fold cross-validation on the training split only (the test split is
never seen), over a grid of settings: the reduction (none: the standardised features; or the first
``k`` principal components) x the logistic regression's regularisation strength ``C`` (log grid).
The standardisation and the PCA are fitted once on the whole training split: they see no label, and
the first ``k`` components of one exact decomposition are the ``k``-component PCA, so every size
comes from one matrix. The (setting, fold) fits are many and independent: the matrices are broadcast
once and the task table is spread over the executors with ``mapInPandas``, like the pairwise sweep.

Threshold: the out-of-fold probabilities of the chosen setting (every training photo predicted by a
model that did not see it) give, for each threshold, the precision of the photos answered (top
probability >= threshold) and the coverage (the share answered). The threshold is the lowest one whose
precision reaches the target, so the model answers as many photos as it can at that precision.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from image_jobs.training import TrainingInputError

DEFAULT_C_GRID = (0.001, 0.01, 0.1, 1.0)
# 0: no reduction (the standardised features); otherwise the number of principal components
DEFAULT_REDUCTIONS = (0, 64, 128)
DEFAULT_CV_FOLDS = 5
DEFAULT_TARGET_PRECISION = 0.95
MAX_ITER = 1000
SELECTION_RULE = ("highest cross-validated accuracy (correct / held-out photos over all folds); "
                  "ties to the smaller C (stronger regularisation), then to fewer dimensions")
# the precision/coverage curve of the report: these thresholds, and the chosen one
CURVE_THRESHOLDS = (*(round(0.05 * i, 2) for i in range(20)), 0.97, 0.99)
WILSON_Z95 = 1.959963984540054


class SelectionInputError(TrainingInputError):
    """The selection's parameters or the run's classes cannot be cross-validated; the message says why."""


@dataclass(frozen=True)
class Setting:
    """One candidate multiclass model: reduction and regularisation."""

    index: int
    components: int  # 0: no reduction
    c: float

    @property
    def reduction(self) -> str:
        return "none" if self.components == 0 else f"pca{self.components}"


def reduction_name(components: int) -> str:
    """``none`` or ``pca<k>``, as the report and model.json name a reduction."""
    return "none" if components == 0 else f"pca{components}"


def parse_reductions(text: str) -> list[int]:
    """``none,64,128`` -> [0, 64, 128]; the error names the bad item."""
    sizes = []
    for item in (part.strip().lower() for part in text.split(",")):
        if not item:
            continue
        if item == "none":
            sizes.append(0)
        elif item.removeprefix("pca").isdigit() and int(item.removeprefix("pca")) > 0:
            sizes.append(int(item.removeprefix("pca")))
        else:
            raise SelectionInputError(f"reduction {item!r} is neither 'none' nor a number of PCA components >= 1")
    if not sizes:
        raise SelectionInputError(f"no reduction given in {text!r}")
    return list(dict.fromkeys(sizes))


def parse_c_grid(text: str) -> list[float]:
    """``0.01,0.1,1`` -> [0.01, 0.1, 1.0]; every C must be a positive finite number."""
    grid = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise SelectionInputError(f"C value {item!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise SelectionInputError(f"C value {item!r} must be a positive finite number")
        grid.append(value)
    if not grid:
        raise SelectionInputError(f"no C value given in {text!r}")
    return sorted(set(grid))


def settings_grid(reductions: list[int], c_grid: list[float], max_components: int) -> tuple[list[Setting], list[int]]:
    """The (reduction x C) grid, PCA sizes capped at ``max_components``; returns it and the capped sizes."""
    sizes = list(dict.fromkeys(min(k, max_components) if k else 0 for k in reductions))
    grid = [(k, c) for k in sizes for c in c_grid]
    return [Setting(i, k, c) for i, (k, c) in enumerate(grid)], sizes


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every row: each class dealt round-robin after a seeded shuffle.

    The dealing continues from one class to the next, so the folds' sizes differ by at most one.
    """
    fold = np.empty(len(y), dtype=np.int32)
    offset = 0
    for class_index in np.unique(y):
        rows = np.flatnonzero(y == class_index)
        order = np.random.default_rng([seed, int(class_index), 17]).permutation(rows)
        fold[order] = (np.arange(len(order)) + offset) % folds
        offset += len(order)
    return fold


def fold_count(y: np.ndarray, labels: list[str], requested: int) -> int:
    """The folds the training split allows: ``requested``, or fewer when a class has fewer training
    images (each fold needs one of every class). Fewer than 2 is an error naming the classes."""
    if requested < 2:
        raise SelectionInputError(f"cross-validation needs at least 2 folds, got {requested}")
    counts = np.bincount(y, minlength=len(labels))
    too_few = {labels[i]: int(n) for i, n in enumerate(counts) if n < 2}
    if too_few:
        raise SelectionInputError("cross-validation needs at least 2 training images per class (after the test "
                                  f"split); classes with fewer: {too_few}")
    return int(min(requested, counts.min()))


def cv_result_schema():
    """Schema of the cross-validation's output: one row per (setting, fold), with its held-out answers."""
    from pyspark.sql.types import (
        ArrayType,
        BooleanType,
        DoubleType,
        FloatType,
        IntegerType,
        LongType,
        StructField,
        StructType,
    )

    return StructType([
        StructField("setting_index", IntegerType(), False),
        StructField("fold", IntegerType(), False),
        StructField("n_valid", LongType(), False),
        StructField("n_correct", LongType(), False),
        StructField("iterations", IntegerType(), False),
        StructField("fit_seconds", DoubleType(), False),
        StructField("valid_rows", ArrayType(IntegerType(), False), False),
        StructField("top_probability", ArrayType(FloatType(), False), False),
        StructField("correct", ArrayType(BooleanType(), False), False),
    ])


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, seed: int):
    """Multinomial logistic regression with L2 strength ``1 / c`` (scikit-learn's lbfgs)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        # a weakly regularised fit that stops at MAX_ITER is still a candidate; its CV score says how good
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def features_of(matrices: dict[str, np.ndarray], components: int) -> np.ndarray:
    """The training matrix of a reduction: the standardised features, or the first ``components`` PCs."""
    return matrices["standardised"] if components == 0 else matrices["pca"][:, :components]


def make_cv_fitter(broadcast, settings: list[Setting],
                   seed: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: rows of (setting_index, fold) -> ``cv_result_schema()``.

    ``broadcast.value`` is a dict: ``standardised`` (or None when no setting uses it) and ``pca``
    (float32 training matrices), ``y`` (class indices) and ``fold`` (each row's fold).
    """
    by_index = {s.index: s for s in settings}

    def fit_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        matrices = broadcast.value
        y, fold_of = matrices["y"], matrices["fold"]
        for batch in batches:
            rows = []
            for task in batch.itertuples(index=False):
                setting = by_index[int(task.setting_index)]
                x = features_of(matrices, setting.components)
                valid = fold_of == task.fold
                started = time.perf_counter()
                model = fit_logistic(x[~valid], y[~valid], setting.c, seed)
                proba = model.predict_proba(x[valid])
                correct = model.classes_[proba.argmax(axis=1)] == y[valid]
                rows.append({
                    "setting_index": setting.index, "fold": int(task.fold), "n_valid": int(valid.sum()),
                    "n_correct": int(correct.sum()), "iterations": int(np.max(model.n_iter_)),
                    "fit_seconds": round(time.perf_counter() - started, 6),
                    "valid_rows": np.flatnonzero(valid).astype(np.int32),
                    "top_probability": proba.max(axis=1).astype(np.float32), "correct": correct,
                })
            yield pd.DataFrame(rows, columns=cv_result_schema().fieldNames())

    return fit_partition


def cv_table(results: pd.DataFrame, settings: list[Setting]) -> pd.DataFrame:
    """Cross-validated accuracy per setting (pooled over folds), the spread over folds, fit seconds."""
    results = results.assign(fold_accuracy=results["n_correct"] / results["n_valid"])
    grouped = results.groupby("setting_index")
    table = pd.DataFrame({
        "setting_index": [s.index for s in settings],
        "reduction": [s.reduction for s in settings],
        "components": [s.components for s in settings],
        "c": [s.c for s in settings],
    }).set_index("setting_index")
    table["cv_accuracy"] = grouped["n_correct"].sum() / grouped["n_valid"].sum()
    table["fold_accuracy_std"] = grouped["fold_accuracy"].std(ddof=0)
    table["folds"] = grouped["fold"].nunique()
    table["max_iterations"] = grouped["iterations"].max()
    table["fit_seconds"] = grouped["fit_seconds"].sum()
    return table.reset_index()


def choose_setting(table: pd.DataFrame, feature_dim: int) -> int:
    """The setting_index of the chosen setting (``SELECTION_RULE``)."""
    dims = table["components"].where(table["components"] > 0, feature_dim)
    ranked = table.assign(_dims=dims).sort_values(["cv_accuracy", "c", "_dims"], ascending=[False, True, True],
                                                  kind="stable")
    return int(ranked["setting_index"].iloc[0])


def out_of_fold(results: pd.DataFrame, setting_index: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The chosen setting's held-out answers for every training row: (top probability, correct)."""
    confidence = np.full(n_rows, np.nan, dtype=np.float64)
    correct = np.zeros(n_rows, dtype=bool)
    for row in results[results["setting_index"] == setting_index].itertuples(index=False):
        rows = np.asarray(row.valid_rows, dtype=np.int64)
        confidence[rows] = np.asarray(row.top_probability, dtype=np.float64)
        correct[rows] = np.asarray(row.correct, dtype=bool)
    if np.isnan(confidence).any():
        raise RuntimeError(f"cross-validation of setting {setting_index} left {int(np.isnan(confidence).sum())} "
                           "training rows without a held-out prediction")
    return confidence, correct


def wilson_interval(correct: int, n: int, z: float = WILSON_Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def precision_coverage(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> tuple[float, float, int]:
    """(precision of the answered photos, coverage, answered) when photos under ``threshold`` are not answered.

    Precision is 1.0 when nothing is answered (no wrong answer given).
    """
    answered = confidence >= threshold
    n = int(answered.sum())
    precision = float(correct[answered].mean()) if n else 1.0
    return precision, n / max(len(confidence), 1), n


def pick_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> dict:
    """The lowest threshold whose answered photos reach ``target`` precision (the most coverage).

    When no threshold reaches it, the one of highest precision (then most coverage), ``target_met`` false.
    """
    if not 0 < target <= 1:
        raise SelectionInputError(f"target precision must be in (0, 1], got {target}")
    order = np.argsort(-confidence, kind="stable")
    sorted_conf, sorted_correct = confidence[order], correct[order]
    precision = np.cumsum(sorted_correct) / np.arange(1, len(order) + 1)
    # a threshold answers every photo at or above it: only the last photo of a run of equal confidences counts
    last_of_value = np.append(sorted_conf[1:] != sorted_conf[:-1], True)
    candidates = np.flatnonzero(last_of_value)
    feasible = candidates[precision[candidates] >= target - 1e-12]
    if len(feasible):
        cut, met = int(feasible.max()), True
    else:
        best = precision[candidates].max()
        cut, met = int(candidates[precision[candidates] >= best - 1e-12].max()), False
    # stored with 6 decimals, rounded down so the photo at the cut stays answered
    threshold = 0.0 if cut == len(order) - 1 else math.floor(float(sorted_conf[cut]) * 1e6) / 1e6
    achieved, coverage, answered = precision_coverage(confidence, correct, threshold)
    return {"threshold": threshold, "target_precision": target, "target_met": met,
            "precision": round(achieved, 6), "coverage": round(coverage, 6), "answered": answered,
            "photos": len(confidence)}


def curve(held_out: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
          chosen: float) -> list[dict]:
    """The precision/coverage curve on the held-out (out-of-fold) and the test photos, by threshold."""
    rows = []
    for threshold in sorted({*CURVE_THRESHOLDS, chosen}):
        held_precision, held_coverage, _ = precision_coverage(*held_out, threshold)
        test_precision, test_coverage, _ = precision_coverage(*test, threshold)
        rows.append({"threshold": round(float(threshold), 6), "chosen": threshold == chosen,
                     "held_out_precision": round(held_precision, 6), "held_out_coverage": round(held_coverage, 6),
                     "test_precision": round(test_precision, 6), "test_coverage": round(test_coverage, 6)})
    return rows
