"""The multiclass model of a training run: its setting chosen by cross-validation on a bounded sample, then
fitted over every training row with Spark ML, and its test predictions and report figures computed in Spark.

The cross-validation (scikit-learn, one Spark task per (setting, fold)) runs on the stratified sample of
``training_data.cv_sample``: the whole training split at today's sizes. The chosen setting is then fitted
over all the training rows without collecting them: Spark ML's multinomial ``LogisticRegression`` on the
reduced rows, with the objective scikit-learn's ``C`` defines (``regParam = 1 / (C n)``, no elastic net, the
rows already standardised). Test predictions, accuracy and the threshold's test figures are aggregates.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from image_jobs import storage
from image_jobs.model_selection import (
    CURVE_THRESHOLDS,
    MAX_ITER,
    SELECTION_RULE,
    Setting,
    choose_setting,
    cv_result_schema,
    cv_table,
    fold_count,
    make_cv_fitter,
    out_of_fold,
    pick_threshold,
    precision_coverage,
    reduction_name,
    settings_grid,
    stratified_folds,
    wilson_interval,
)
from image_jobs.predictor import model_document

log = logging.getLogger("train_models")
# Spark ML's L-BFGS stops when the objective changes by less than this (relative)
FINAL_FIT_TOLERANCE = 1e-6


@dataclass
class Selection:
    """What the cross-validation found: the table, the chosen setting, its held-out answers."""

    table: object  # pandas DataFrame
    chosen: Setting
    confidence: np.ndarray  # out-of-fold top probability of every sampled training row, chosen setting
    correct: np.ndarray  # out-of-fold correctness of the same rows
    folds: int
    rows: int  # training rows in the sample
    seconds: float


def cv_task_frame(spark, settings: list[Setting], folds: int, feature_dim: int):
    """The (setting, fold) task table, one Spark task each, the costliest first (most dimensions, largest C)."""
    tasks = sorted(((s.index, f) for s in settings for f in range(folds)),
                   key=lambda t: (-(settings[t[0]].components or feature_dim), -settings[t[0]].c, t))
    rdd = spark.sparkContext.parallelize(tasks, len(tasks))
    return spark.createDataFrame(rdd, "setting_index int, fold int")


def cross_validate(spark, args, sample, labels: list[str], k_fit: int, feature_dim: int) -> Selection:
    """Cross-validate every (reduction, C) setting on the sample of training rows, on the executors; choose one."""
    started = time.perf_counter()
    folds = fold_count(sample.y, labels, args.cv_folds)
    if folds < args.cv_folds:
        counts = np.bincount(sample.y, minlength=len(labels))
        log.warning("cross-validation with %d folds instead of %d: class %s has only %d training images", folds,
                    args.cv_folds, labels[int(counts.argmin())], int(counts.min()))
    settings, sizes = settings_grid(args.reductions, args.c_grid, k_fit)
    if sorted(sizes) != sorted(args.reductions):
        log.warning("reductions %s capped to %s (feature dim %d, %d training images)",
                    [reduction_name(k) for k in args.reductions], [reduction_name(k) for k in sizes], feature_dim,
                    len(sample.y))
    fold = stratified_folds(sample.y, folds, args.seed)
    broadcast = spark.sparkContext.broadcast({**sample.matrices(), "y": sample.y, "fold": fold})
    log.info("model selection: %d settings (%s x C %s) x %d folds = %d fits", len(settings),
             ", ".join(reduction_name(k) for k in sizes), args.c_grid, folds, len(settings) * folds)
    results = (cv_task_frame(spark, settings, folds, feature_dim)
               .mapInPandas(make_cv_fitter(broadcast, settings, args.seed), cv_result_schema())
               .toPandas().sort_values(["setting_index", "fold"], kind="stable"))
    broadcast.unpersist()
    table = cv_table(results, settings)
    chosen = settings[choose_setting(table, feature_dim)]
    confidence, correct = out_of_fold(results, chosen.index, len(sample.y))
    seconds = time.perf_counter() - started
    for row in table.itertuples(index=False):
        log.info("  %-8s C=%-7g cv accuracy %.2f%% (+/- %.2f over folds)%s", row.reduction, row.c,
                 100 * row.cv_accuracy, 100 * row.fold_accuracy_std,
                 "  <- chosen" if row.setting_index == chosen.index else "")
    log.info("model selection: %s, C=%g chosen in %.1f s", chosen.reduction, chosen.c, seconds)
    return Selection(table, chosen, confidence, correct, folds, len(sample.y), seconds)


def _features_column(setting: Setting):
    """The chosen reduction's features as a Spark ML vector: the standardised row, or the first k PCs."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    if setting.components == 0:
        return array_to_vector("standardised").alias("x")
    return array_to_vector(F.slice("pca", 1, setting.components)).alias("x")


@dataclass
class FinalModel:
    """The chosen setting fitted on every training row: coefficients (n_classes x inputs) and intercepts."""

    coef: np.ndarray
    intercept: np.ndarray
    iterations: int
    seconds: float


def fit_final(rows, setting: Setting, n_train: int, n_classes: int) -> FinalModel:
    """Spark ML's multinomial logistic regression over every training row, with scikit-learn's objective for C."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.sql import functions as F

    started = time.perf_counter()
    train = rows.filter(~F.col("test")).select(_features_column(setting), F.col("label_index").cast("double"))
    model = LogisticRegression(featuresCol="x", labelCol="label_index", family="multinomial",
                               regParam=1.0 / (setting.c * n_train), elasticNetParam=0.0, standardization=False,
                               maxIter=MAX_ITER, tol=FINAL_FIT_TOLERANCE).fit(train)
    coef = model.coefficientMatrix.toArray()
    if coef.shape[0] != n_classes:
        raise RuntimeError(f"the final model has {coef.shape[0]} classes, the run {n_classes}")
    iterations = model.summary.totalIterations if model.hasSummary else -1
    return FinalModel(coef, model.interceptVector.toArray(), iterations, time.perf_counter() - started)


def test_predictions(rows, setting: Setting, final: FinalModel, labels: list[str]):
    """The test rows with ``predicted``, ``probability`` (the top one) and ``probabilities``, computed in the
    tasks with the final model's arrays (exactly what ``predictor.MulticlassModel`` computes)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, IntegerType, StringType, StructField, StructType

    column = "standardised" if setting.components == 0 else "pca"
    k = setting.components

    def predict(batches):
        for pdf in batches:
            if not len(pdf):
                continue
            x = np.stack(pdf[column].to_numpy()).astype(np.float64)
            logits = (x if k == 0 else x[:, :k]) @ final.coef.T + final.intercept
            proba = np.exp(logits - logits.max(axis=1, keepdims=True))
            proba /= proba.sum(axis=1, keepdims=True)
            best = proba.argmax(axis=1)
            yield pdf[["path", "label", "label_index"]].assign(
                predicted=[labels[i] for i in best], predicted_index=best.astype(np.int32),
                probability=proba.max(axis=1), probabilities=list(proba.astype(np.float32)))

    schema = StructType([StructField("path", StringType()), StructField("label", StringType()),
                         StructField("label_index", IntegerType()), StructField("predicted", StringType()),
                         StructField("predicted_index", IntegerType()), StructField("probability", DoubleType()),
                         StructField("probabilities", ArrayType(FloatType()))])
    return rows.filter(F.col("test")).select("path", "label", "label_index", column).mapInPandas(predict, schema)


def answered_counts(predictions, thresholds: list[float]) -> dict[float, tuple[int, int]]:
    """For each threshold: (photos answered, answered correctly) among the test predictions, one aggregate."""
    from pyspark.sql import functions as F

    correct = F.col("predicted_index") == F.col("label_index")
    aggregates = []
    for i, t in enumerate(thresholds):
        answered = F.col("probability") >= F.lit(float(t))
        aggregates += [F.sum(answered.cast("long")).alias(f"a{i}"), F.sum((answered & correct).cast("long")).alias(
            f"c{i}")]
    row = predictions.agg(*aggregates).first()
    return {t: (int(row[f"a{i}"] or 0), int(row[f"c{i}"] or 0)) for i, t in enumerate(thresholds)}


def threshold_and_curve(selection: Selection, counts: dict[float, tuple[int, int]], n_test: int,
                        chosen: float) -> tuple[dict, list[dict]]:
    """The answer threshold's test figures and the precision/coverage curve from the aggregated test counts."""
    def test_figures(t: float) -> tuple[float, float]:
        answered, correct = counts[t]
        return (correct / answered if answered else 1.0), answered / max(n_test, 1)

    rows = []
    for t in sorted({*CURVE_THRESHOLDS, chosen}):
        held_precision, held_coverage, _ = precision_coverage(selection.confidence, selection.correct, t)
        test_precision, test_coverage = test_figures(t)
        rows.append({"threshold": round(float(t), 6), "chosen": t == chosen,
                     "held_out_precision": round(held_precision, 6), "held_out_coverage": round(held_coverage, 6),
                     "test_precision": round(test_precision, 6), "test_coverage": round(test_coverage, 6)})
    precision, coverage = test_figures(chosen)
    return {"test_precision": round(precision, 6), "test_coverage": round(coverage, 6)}, rows


def choose_threshold(selection: Selection, target: float) -> dict:
    """The threshold for the target precision on the held-out (out-of-fold) answers of the sample."""
    threshold = pick_threshold(selection.confidence, selection.correct, target)
    if not threshold["target_met"]:
        log.warning("no threshold reaches %.1f%% precision on the held-out photos: using the most precise one "
                    "(%.1f%% precision, %.1f%% coverage)", 100 * target, 100 * threshold["precision"],
                    100 * threshold["coverage"])
    return {**threshold, "held_out": f"out-of-fold predictions of the {selection.folds}-fold cross-validation on "
                                     f"{selection.rows} training rows"}


def accuracy_figures(predictions) -> tuple[int, int, float, float]:
    """(correct, test rows, and the accuracy's 95% Wilson interval), aggregated."""
    from pyspark.sql import functions as F

    row = predictions.agg(F.count("*").alias("n"), F.sum((F.col("predicted_index") == F.col("label_index"))
                                                         .cast("long")).alias("correct")).first()
    n, correct = int(row["n"]), int(row["correct"] or 0)
    low, high = wilson_interval(correct, n)
    return correct, n, low, high


def multiclass_training_summary(args, selection: Selection, accuracy: tuple[int, int, float, float], n_train: int,
                       threshold: dict, pr_curve: list[dict], final: FinalModel) -> dict:
    """The multiclass part of the training summary: the model, its selection, accuracy and threshold."""
    n_correct, n_test, low, high = accuracy
    chosen = selection.chosen
    reduction = "" if chosen.components == 0 else f"PCA {chosen.components} + "
    chosen_row = selection.table[selection.table["setting_index"] == chosen.index].iloc[0]
    return {
        "accuracy": n_correct / n_test, "correct": n_correct, "accuracy_ci95": [round(low, 6), round(high, 6)],
        "accuracy_ci95_method": "Wilson score interval", "train_images": n_train, "test_images": n_test,
        "test_fraction": args.test_fraction,
        "model": f"standardise + {reduction}logistic regression (C={chosen.c:g})",
        "final_fit": {"rows": n_train, "library": "Spark ML LogisticRegression (multinomial, L-BFGS)",
                      "iterations": final.iterations, "seconds": round(final.seconds, 2)},
        "selection": {
            "folds": selection.folds, "folds_requested": args.cv_folds, "seed": args.seed, "rule": SELECTION_RULE,
            "rows": selection.rows, "max_rows": args.cv_max_rows,
            "chosen": {"reduction": chosen.reduction, "components": chosen.components, "c": chosen.c,
                       "cv_accuracy": round(float(chosen_row["cv_accuracy"]), 6)},
            "table": [{**row, "chosen": row["setting_index"] == chosen.index}
                      for row in selection.table.round(6).to_dict(orient="records")],
            "seconds": round(selection.seconds, 2),
        },
        "answer_threshold": {**threshold, "curve": pr_curve},
    }


def fit_and_write(spark, args, data, selection: Selection) -> dict:
    """Fit the chosen setting on every training row, set its threshold, write model.json and the test
    predictions under ``args.models_uri``; returns the multiclass part of the training summary."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    final = fit_final(data.rows, selection.chosen, data.n_train, len(data.labels))
    threshold = choose_threshold(selection, args.target_precision)
    predictions = test_predictions(data.rows, selection.chosen, final, data.labels).withColumn(
        "uncertain", F.col("probability") < threshold["threshold"]).persist(StorageLevel.DISK_ONLY)
    predictions.drop("label_index", "predicted_index").write.mode("overwrite").parquet(
        storage.join_uri(args.models_uri, "multiclass", "test_predictions"))
    accuracy = accuracy_figures(predictions)
    thresholds = sorted({*CURVE_THRESHOLDS, threshold["threshold"]})
    test_threshold, pr_curve = threshold_and_curve(selection, answered_counts(predictions, thresholds), accuracy[1],
                                                   threshold["threshold"])
    predictions.unpersist()
    threshold = {**threshold, **test_threshold}
    model = model_document(run_key=args.run_key, weights_uri=args.weights_uri, identity=data.identity,
                           labels=data.labels, reduction=data.reduction, setting=selection.chosen, coef=final.coef,
                           intercept=final.intercept, threshold=threshold)
    storage.write_text(spark, storage.join_uri(args.models_uri, "multiclass", "model.json"), json.dumps(model))
    n_correct, n_test, low, high = accuracy
    log.info("multiclass: accuracy %.2f%% (95%% interval %.1f-%.1f%%) on %d test images, fitted on %d rows in "
             "%.1f s; threshold %.3f answers %.1f%% of them at %.1f%% precision", 100 * n_correct / n_test,
             100 * low, 100 * high, n_test, data.n_train, final.seconds, threshold["threshold"],
             100 * threshold["test_coverage"], 100 * threshold["test_precision"])
    return multiclass_training_summary(args, selection, accuracy, data.n_train, threshold, pr_curve, final)
