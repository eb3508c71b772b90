"""Spark job: reduce the run's features with PCA, run the pairwise SVM sweep, select and fit the multiclass model.

    spark-submit --py-files image_jobs.zip train_models.py \
        --features-uri file:///data/features --backbone mobilenet_v2 \
        --models-uri file:///data/runs/<run_key>/models --run-key <run_key> \
        --modified-before 2026-11-21T10:00:00Z --labels-json '[]' --pair-mode all_pairs

Writes under ``--models-uri``:
  multiclass/model.json           standardise (+ PCA) + multinomial logistic regression, with its labels
                                  and its answer threshold, as plain arrays: loadable without Spark
  multiclass/test_predictions/    Parquet: path, label, predicted, probability, probabilities, uncertain
  pairwise_results/               Parquet: one row per pairwise model (the study's columns, the model)
  pairwise/pair=<c1>_VS_<c2>/     Parquet: the best model of each pair (highest accuracy, ties to the
                                  larger test set)
  training_summary.json           classes, image counts, PCA explained variance, the model selection's
                                  table and choice, accuracy with its 95% interval, the threshold, seconds
Every output is overwritten by a retry of the same run; nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from image_jobs import storage
from image_jobs.cli import parse_labels_json, run_job
from image_jobs.conventions import DEFAULT_SPLIT_RATIOS, MODEL_FORMAT, PAIR_MODES
from image_jobs.extraction import spark_timestamp
from image_jobs.feature_identity import FeatureIdentity
from image_jobs.selection import (
    DEFAULT_C_GRID,
    DEFAULT_CV_FOLDS,
    DEFAULT_REDUCTIONS,
    DEFAULT_TARGET_PRECISION,
    SELECTION_RULE,
    SelectionInputError,
    Setting,
    choose_setting,
    curve,
    cv_result_schema,
    cv_table,
    features_of,
    fit_logistic,
    fold_count,
    make_cv_fitter,
    out_of_fold,
    parse_c_grid,
    parse_reductions,
    pick_threshold,
    precision_coverage,
    reduction_name,
    settings_grid,
    stratified_folds,
    wilson_interval,
)
from image_jobs.session import job_logger
from image_jobs.training import (
    TrainingInputError,
    best_per_pair,
    check_inputs,
    latest_features,
    make_pair_fitter,
    pair_result_schema,
    pair_tasks,
    restrict_run,
    stratified_test_mask,
)

if TYPE_CHECKING:
    import pandas as pd
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

log = job_logger("train_models")

# 128 components: 10x fewer dimensions than MobileNetV2's 1280 (32x fewer than VGG16's 4096), so
# every one of the thousands of pairwise fits is cheap, while keeping most of the variance (96.3%
# on the sample images). A run with fewer training images gets fewer (PCA cannot exceed the sample).
DEFAULT_PCA_COMPONENTS = 128


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's command line, parsed and checked (errors exit through argparse)."""
    parser = argparse.ArgumentParser(description="Train pairwise SVMs and a multiclass model on CNN features.")
    parser.add_argument("--features-uri", required=True, help="feature dataset root (partitioned by backbone, run)")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--models-uri", required=True, help="this run's models folder")
    parser.add_argument("--run-key", required=True)
    parser.add_argument("--modified-before", required=True, help="ISO-8601: only images modified before it")
    parser.add_argument("--labels-json", default="[]", help="JSON list of the run's classes; [] = all found")
    parser.add_argument("--pair-mode", choices=PAIR_MODES, default="all_pairs")
    parser.add_argument("--focus-class", default=None, help="the class of one_vs_each / one_vs_rest")
    parser.add_argument("--split-ratios", default=",".join(str(r) for r in DEFAULT_SPLIT_RATIOS),
                        help="comma-separated train fractions of the pairwise splits, each in (0, 1)")
    parser.add_argument("--max-per-class", type=int, default=200, help="images per class in a pair's sample")
    parser.add_argument("--iterations", type=int, default=100, help="SVM iterations (the study used 100)")
    parser.add_argument("--pca-components", type=int, default=DEFAULT_PCA_COMPONENTS,
                        help="PCA components of the pairwise sweep")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="multiclass test share, stratified")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-uri", default=None, help="recorded in the model, for prediction")
    parser.add_argument("--extract-summary-uri", required=True,
                        help="the run's extraction summary: the feature identity to train on (only rows made by "
                             "the same backbone, weights and precision are read)")
    parser.add_argument("--cv-folds", type=int, default=DEFAULT_CV_FOLDS,
                        help="folds of the multiclass model's cross-validation (on the training split)")
    parser.add_argument("--c-grid", default=",".join(str(c) for c in DEFAULT_C_GRID),
                        help="comma-separated regularisation strengths C of the multiclass model to compare")
    parser.add_argument("--reductions", default=",".join(reduction_name(k) for k in DEFAULT_REDUCTIONS),
                        help="comma-separated reductions to compare: none, or PCA sizes (64 or pca64)")
    parser.add_argument("--target-precision", type=float, default=DEFAULT_TARGET_PRECISION,
                        help="precision the answered photos must reach: sets the model's answer threshold")
    args = parser.parse_args(argv)
    args.labels = parse_labels_json(parser, args.labels_json)
    try:
        args.split_ratios = [float(x) for x in args.split_ratios.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--split-ratios must be comma-separated numbers, got {args.split_ratios!r}")
    for name in ("max_per_class", "iterations", "pca_components"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        args.c_grid = parse_c_grid(args.c_grid)
        args.reductions = parse_reductions(args.reductions)
    except SelectionInputError as exc:
        parser.error(str(exc))
    if args.cv_folds < 2:
        parser.error(f"--cv-folds must be >= 2, got {args.cv_folds}")
    if not 0 < args.target_precision <= 1:
        parser.error(f"--target-precision must be in (0, 1], got {args.target_precision}")
    return args


def read_feature_identity(spark, args: argparse.Namespace) -> FeatureIdentity:
    """The identity of the run's features, as its extraction recorded it in ``--extract-summary-uri``."""
    uri = args.extract_summary_uri
    if not storage.exists(spark, uri):
        raise TrainingInputError(f"--extract-summary-uri {uri} does not exist: run extract_features first")
    try:
        recorded = json.loads(storage.read_text(spark, uri)).get("feature_identity")
        identity = FeatureIdentity.from_dict(recorded, uri)
    except (ValueError, AttributeError) as exc:
        raise TrainingInputError(f"{uri} records no usable feature identity ({exc}); run extract_features "
                                 "again") from None
    if identity.backbone != args.backbone:
        raise TrainingInputError(f"{uri}: the extraction used backbone {identity.backbone}, not --backbone "
                                 f"{args.backbone}")
    return identity


def load_run_features(spark, args: argparse.Namespace):
    """The newest feature row per image the run sees, of the run's feature identity: path, label, features."""
    from pyspark.sql import functions as F

    df = storage.read_committed(spark, storage.join_uri(args.features_uri, f"backbone={args.backbone}"), log=log,
                                merge_schema=True)
    identity = args.feature_identity
    if df is None or not set(identity.columns()) <= set(df.columns):
        raise TrainingInputError(f"no features of {identity.describe()} under {args.features_uri} (rows written "
                                 "before features had an identity are not read); run extract_features first")
    for column, value in identity.columns().items():
        df = df.filter(F.col(column) == value)
    df = df.select("path", "label", "modificationTime", "run", "features")
    return latest_features(restrict_run(df, args.labels, spark_timestamp(args.modified_before))).select(
        "path", "label", "features")


def fit_reduction(x_train: np.ndarray, k: int, seed: int):
    """Standardise + PCA (scikit-learn) fitted on the training rows only.

    On the driver: the features of a run (thousands of images x 1280 or 4096 floats) fit in its memory,
    and LAPACK through numpy decomposes a 4096-d covariance in seconds, where Spark ML's PCA (pure-JVM
    LAPACK unless a native one is installed) takes minutes.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    # exact decompositions (a randomized one keeps visibly less variance with few images): of the
    # d x d covariance when there are more images than dimensions, else of the images themselves
    solver = "covariance_eigh" if x_train.shape[0] >= x_train.shape[1] else "full"
    pca = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(scaler.transform(x_train))
    return scaler, pca


def reduce(scaler, pca, x: np.ndarray) -> np.ndarray:
    """The PCA-reduced rows of ``x``, float32."""
    return pca.transform(scaler.transform(x)).astype(np.float32)


def portable_model(reduced: ReducedRun, setting: Setting, classifier, labels: list[str], args: argparse.Namespace,
                   threshold: dict) -> dict:
    """The chosen multiclass pipeline as plain arrays: what a prediction step needs, without Spark.

    ``z = (x - scaler_mean) / scaler_std`` (0 where the std is 0), then ``z @ pca_components.T`` (no
    PCA when the chosen reduction is none: ``pca_components`` is null). The PCA's own centring (the
    training mean of z, ~0) is folded into ``scaler_mean``, so the arrays give exactly scikit-learn's
    transform.
    """
    scaler, pca, k = reduced.scaler, reduced.pca, setting.components
    constant = scaler.var_ == 0
    std = np.where(constant, 0.0, scaler.scale_)
    mean = np.where(constant, scaler.mean_, scaler.mean_ + pca.mean_ * scaler.scale_) if k else scaler.mean_
    return {
        "format": MODEL_FORMAT,
        "run_key": args.run_key,
        "backbone": args.backbone,
        "weights_uri": args.weights_uri,
        "feature_identity": args.feature_identity.to_dict(),
        "feature_dim": reduced.feature_dim,
        "labels": labels,
        "scaler_mean": mean.tolist(),
        "scaler_std": std.tolist(),
        "reduction": setting.reduction,
        "pca_components": pca.components_[:k].tolist() if k else None,  # k x feature_dim
        "explained_variance_ratio": pca.explained_variance_ratio_[:k].tolist() if k else None,
        "classifier": "multinomial_logistic_regression",
        "classifier_c": setting.c,
        "coef": classifier.coef_.tolist(),
        "intercept": classifier.intercept_.tolist(),
        "answer_threshold": threshold,
    }


@dataclass
class ReducedRun:
    """The run's rows after the multiclass split, the standardisation and the PCA."""

    x: np.ndarray  # the first ``k_fit`` principal components, float32, in path order
    z: np.ndarray | None  # the standardised features (float32), when a setting uses no reduction
    y: np.ndarray  # label indices
    test: np.ndarray  # the multiclass test mask
    scaler: Any
    pca: Any
    feature_dim: int
    n_train: int
    k: int  # the pairwise sweep's components: x[:, :k]
    k_fit: int  # components fitted: the most any use

    def matrices(self, rows: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray | None]:
        """The matrices ``selection.features_of`` picks a reduction's features from, for ``rows``."""
        return {"standardised": None if self.z is None else self.z[rows], "pca": self.x[rows]}


@dataclass
class Selection:
    """What the cross-validation found: the table, the chosen setting, its held-out answers."""

    table: pd.DataFrame
    chosen: Setting
    confidence: np.ndarray  # out-of-fold top probability of every training row, chosen setting
    correct: np.ndarray  # out-of-fold correctness of the same rows
    folds: int
    seconds: float


def read_training_frame(spark: SparkSession,
                        args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, int], list[str]]:
    """Read the run's features to the driver (path order) and check its classes: frame, counts, labels."""
    # one read: the run's features (path order, so the split is reproducible) to the driver
    frame = load_run_features(spark, args).orderBy("path").toPandas()
    counts = {str(label): int(n) for label, n in frame["label"].value_counts().items()}
    labels = check_inputs(counts, args.labels, args.split_ratios, args.test_fraction, args.pair_mode,
                          args.focus_class)
    log.info("training on %d images of %d classes: %s", sum(counts.values()), len(labels), counts)
    return frame, counts, labels


def components_to_fit(args: argparse.Namespace, feature_dim: int, n_train: int) -> tuple[int, int]:
    """(the sweep's components, the components to fit): PCA cannot exceed the dimension or the sample."""
    cap = min(feature_dim, n_train - 1)
    k = min(args.pca_components, cap)
    if k < args.pca_components:
        log.warning("PCA components reduced from %d to %d (feature dim %d, %d training images)",
                    args.pca_components, k, feature_dim, n_train)
    return k, max(k, min(max(args.reductions), cap))


def split_and_reduce(frame: pd.DataFrame, label_index: dict[str, int], args: argparse.Namespace) -> ReducedRun:
    """Split the rows for the multiclass test (stratified), fit the standardisation and PCA on the training rows."""
    # the multiclass train/test split, stratified and reproducible
    test = stratified_test_mask(frame["label"].to_numpy(), args.test_fraction, args.seed)
    features = np.stack(frame.pop("features").to_numpy()).astype(np.float32)  # held once, not twice
    feature_dim = features.shape[1]
    n_train = int((~test).sum())
    k, k_fit = components_to_fit(args, feature_dim, n_train)
    # one exact decomposition: its first k components are the k-component PCA, for every k used
    scaler, pca = fit_reduction(features[~test], k_fit, args.seed)
    log.info("PCA: %d -> %d dimensions, %.1f%% of the variance kept (%d fitted for the model selection)",
             feature_dim, k, 100 * pca.explained_variance_ratio_[:k].sum(), k_fit)
    x = reduce(scaler, pca, features)
    z = scaler.transform(features).astype(np.float32) if 0 in args.reductions else None
    del features
    y = frame["label"].map(label_index).to_numpy()
    return ReducedRun(x=x, z=z, y=y, test=test, scaler=scaler, pca=pca, feature_dim=feature_dim, n_train=n_train,
                      k=k, k_fit=k_fit)


def cv_task_frame(spark: SparkSession, settings: list[Setting], folds: int, feature_dim: int) -> DataFrame:
    """The (setting, fold) task table, one Spark task each, the costliest first (most dimensions, largest C)."""
    tasks = sorted(((s.index, f) for s in settings for f in range(folds)),
                   key=lambda t: (-(settings[t[0]].components or feature_dim), -settings[t[0]].c, t))
    rdd = spark.sparkContext.parallelize(tasks, len(tasks))
    return spark.createDataFrame(rdd, "setting_index int, fold int")


def cross_validate(spark: SparkSession, args: argparse.Namespace, reduced: ReducedRun,
                   labels: list[str]) -> Selection:
    """Cross-validate every (reduction, C) setting on the training split, on the executors; choose one."""
    started = time.perf_counter()
    train = ~reduced.test
    y_train = reduced.y[train]
    folds = fold_count(y_train, labels, args.cv_folds)
    if folds < args.cv_folds:
        counts = np.bincount(y_train, minlength=len(labels))
        log.warning("cross-validation with %d folds instead of %d: class %s has only %d training images", folds,
                    args.cv_folds, labels[int(counts.argmin())], int(counts.min()))
    settings, sizes = settings_grid(args.reductions, args.c_grid, reduced.k_fit)
    if sorted(sizes) != sorted(args.reductions):
        log.warning("reductions %s capped to %s (feature dim %d, %d training images)",
                    [reduction_name(k) for k in args.reductions], [reduction_name(k) for k in sizes],
                    reduced.feature_dim, reduced.n_train)
    fold = stratified_folds(y_train, folds, args.seed)
    broadcast = spark.sparkContext.broadcast({**reduced.matrices(train), "y": y_train, "fold": fold})
    log.info("model selection: %d settings (%s x C %s) x %d folds = %d fits", len(settings),
             ", ".join(reduction_name(k) for k in sizes), args.c_grid, folds, len(settings) * folds)
    task_frame = cv_task_frame(spark, settings, folds, reduced.feature_dim)
    results = (task_frame.mapInPandas(make_cv_fitter(broadcast, settings, args.seed), cv_result_schema())
               .toPandas().sort_values(["setting_index", "fold"], kind="stable"))
    broadcast.unpersist()
    table = cv_table(results, settings)
    chosen = settings[choose_setting(table, reduced.feature_dim)]
    confidence, correct = out_of_fold(results, chosen.index, len(y_train))
    seconds = time.perf_counter() - started
    for row in table.itertuples(index=False):
        log.info("  %-8s C=%-7g cv accuracy %.2f%% (+/- %.2f over folds)%s", row.reduction, row.c,
                 100 * row.cv_accuracy, 100 * row.fold_accuracy_std, "  <- chosen" if row.setting_index ==
                 chosen.index else "")
    log.info("model selection: %s, C=%g chosen in %.1f s", chosen.reduction, chosen.c, seconds)
    return Selection(table, chosen, confidence, correct, folds, seconds)


def answer_threshold(args: argparse.Namespace, selection: Selection, test_confidence: np.ndarray,
                     test_correct: np.ndarray) -> dict:
    """The threshold for the target precision on the held-out answers, and what it gives on the test split."""
    threshold = pick_threshold(selection.confidence, selection.correct, args.target_precision)
    if not threshold["target_met"]:
        log.warning("no threshold reaches %.1f%% precision on the held-out photos: using the most precise one "
                    "(%.1f%% precision, %.1f%% coverage)", 100 * args.target_precision,
                    100 * threshold["precision"], 100 * threshold["coverage"])
    test_precision, test_coverage, _ = precision_coverage(test_confidence, test_correct, threshold["threshold"])
    return {**threshold, "held_out": f"out-of-fold predictions of the {selection.folds}-fold cross-validation "
                                     "on the training split",
            "test_precision": round(test_precision, 6), "test_coverage": round(test_coverage, 6)}


def train_multiclass(spark: SparkSession, args: argparse.Namespace, frame: pd.DataFrame, labels: list[str],
                     reduced: ReducedRun, selection: Selection) -> dict:
    """Refit the chosen setting on the whole training split, set its threshold, write it and its test
    predictions; returns the multiclass part of the training summary."""
    chosen, y, test = selection.chosen, reduced.y, reduced.test
    x = features_of(reduced.matrices(), chosen.components)
    classifier = fit_logistic(x[~test], y[~test], chosen.c, args.seed)
    proba = classifier.predict_proba(x[test])
    predicted = proba.argmax(axis=1)
    correct = predicted == y[test]
    threshold = answer_threshold(args, selection, proba.max(axis=1), correct)
    model = portable_model(reduced, chosen, classifier, labels, args, threshold)
    storage.write_text(spark, storage.join_uri(args.models_uri, "multiclass", "model.json"), json.dumps(model))
    predictions = frame.loc[test, ["path", "label"]].assign(
        predicted=[labels[i] for i in predicted],
        probability=proba.max(axis=1).astype(float),
        probabilities=list(proba.astype(np.float32)),
        uncertain=proba.max(axis=1) < threshold["threshold"],
    )
    spark.createDataFrame(predictions).coalesce(1).write.mode("overwrite").parquet(
        storage.join_uri(args.models_uri, "multiclass", "test_predictions"))
    n_correct, n_test = int(correct.sum()), int(test.sum())
    low, high = wilson_interval(n_correct, n_test)
    log.info("multiclass: accuracy %.2f%% (95%% interval %.1f-%.1f%%) on %d test images; threshold %.3f answers "
             "%.1f%% of them at %.1f%% precision", 100 * n_correct / n_test, 100 * low, 100 * high, n_test,
             threshold["threshold"], 100 * threshold["test_coverage"], 100 * threshold["test_precision"])
    return multiclass_summary(args, reduced, selection, (n_correct, n_test, low, high), threshold,
                              curve((selection.confidence, selection.correct), (proba.max(axis=1), correct),
                                    threshold["threshold"]))


def multiclass_summary(args: argparse.Namespace, reduced: ReducedRun, selection: Selection,
                       test: tuple[int, int, float, float], threshold: dict, pr_curve: list[dict]) -> dict:
    """The multiclass part of the training summary: the model, its selection, accuracy and threshold."""
    n_correct, n_test, low, high = test
    chosen = selection.chosen
    reduction = "" if chosen.components == 0 else f"PCA {chosen.components} + "
    chosen_row = selection.table[selection.table["setting_index"] == chosen.index].iloc[0]
    return {
        "accuracy": n_correct / n_test, "correct": n_correct, "accuracy_ci95": [round(low, 6), round(high, 6)],
        "accuracy_ci95_method": "Wilson score interval", "train_images": reduced.n_train, "test_images": n_test,
        "test_fraction": args.test_fraction,
        "model": f"standardise + {reduction}logistic regression (C={chosen.c:g})",
        "selection": {
            "folds": selection.folds, "folds_requested": args.cv_folds, "seed": args.seed, "rule": SELECTION_RULE,
            "chosen": {"reduction": chosen.reduction, "components": chosen.components, "c": chosen.c,
                       "cv_accuracy": round(float(chosen_row["cv_accuracy"]), 6)},
            "table": [{**row, "chosen": row["setting_index"] == chosen.index}
                      for row in selection.table.round(6).to_dict(orient="records")],
            "seconds": round(selection.seconds, 2),
        },
        "answer_threshold": {**threshold, "curve": pr_curve},
    }


def fit_pairs(spark: SparkSession, args: argparse.Namespace, tasks: list, label_index: dict[str, int],
              broadcast: Broadcast) -> DataFrame:
    """The pairwise results (every model, the best of each pair flagged), fitted on the executors."""
    partitions = max(1, min(len(tasks), spark.sparkContext.defaultParallelism * 4))
    task_df = spark.createDataFrame(
        [(t.pair_index, t.class_1, t.class_2, t.split, t.num_model) for t in tasks],
        "pair_index int, class_1 string, class_2 string, split double, num_model int",
    ).repartition(partitions, "pair_index")
    return best_per_pair(task_df.mapInPandas(
        make_pair_fitter(broadcast, label_index, args.max_per_class, args.iterations, args.seed),
        pair_result_schema(),
    ))


def write_pairwise(results: DataFrame, models_uri: str) -> None:
    """Write every pairwise model's results, and the best model of each pair in its own partition."""
    from pyspark.sql import functions as F

    results.drop("coef", "intercept").orderBy("pair_index", "num_model").coalesce(1).write.mode(
        "overwrite").parquet(storage.join_uri(models_uri, "pairwise_results"))
    (results.filter("best_of_pair")
     .withColumn("pair", F.concat_ws("_VS_", "class_1", "class_2"))
     .select("pair", "class_1", "class_2", "split", "predict_pct", "nb_test", "coef", "intercept", "model_type")
     .repartition("pair").write.mode("overwrite").partitionBy("pair")
     .parquet(storage.join_uri(models_uri, "pairwise")))


def pairwise_sweep(spark: SparkSession, args: argparse.Namespace, labels: list[str], label_index: dict[str, int],
                   reduced: ReducedRun) -> tuple[int, int, float]:
    """Fit and write the pairwise models of the run's pair mode; returns (pairs, models, seconds)."""
    # pairwise sweep: the reduced matrix goes to every executor once; the task table spreads the fits
    sweep_started = time.perf_counter()
    tasks = pair_tasks(labels, args.pair_mode, args.focus_class, args.split_ratios)
    n_pairs = len({t.pair_index for t in tasks})
    log.info("pairwise sweep (%s): %d pairs x %d splits = %d models", args.pair_mode, n_pairs,
             len(args.split_ratios), len(tasks))
    broadcast = spark.sparkContext.broadcast((np.ascontiguousarray(reduced.x[:, :reduced.k]), reduced.y))
    results = fit_pairs(spark, args, tasks, label_index, broadcast).cache()
    write_pairwise(results, args.models_uri)
    n_models = results.count()
    results.unpersist()
    broadcast.unpersist()
    sweep_seconds = time.perf_counter() - sweep_started
    log.info("pairwise sweep: %d models in %.1f s (%.0f models/s)", n_models, sweep_seconds,
             n_models / max(sweep_seconds, 1e-9))
    return n_pairs, n_models, sweep_seconds


def training_summary(args: argparse.Namespace, reduced: ReducedRun, labels: list[str], counts: dict[str, int],
                     multiclass: dict, n_pairs: int, n_models: int, seconds: dict[str, float]) -> dict:
    """The training summary of the run, from what the phases produced (no I/O)."""
    explained = reduced.pca.explained_variance_ratio_[:reduced.k]  # the sweep's PCA
    return {
        "run_key": args.run_key,
        "backbone": args.backbone,
        "feature_identity": args.feature_identity.to_dict(),
        "feature_dim": reduced.feature_dim,
        "pca_components": reduced.k,
        "pca_explained_variance": [round(float(v), 6) for v in explained],
        "pca_explained_variance_total": round(float(explained.sum()), 6),
        "classes": labels,
        "image_counts": {label: int(counts[label]) for label in labels},
        "multiclass": multiclass,
        "pairwise": {"pair_mode": args.pair_mode, "focus_class": args.focus_class, "pairs": n_pairs,
                     "models": n_models, "split_ratios": args.split_ratios, "max_per_class": args.max_per_class,
                     "iterations": args.iterations},
        "seed": args.seed,
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
    }


def write_summary(spark: SparkSession, args: argparse.Namespace, summary: dict) -> None:
    """Write training_summary.json and log it (without the per-component variances)."""
    storage.write_text(spark, storage.join_uri(args.models_uri, "training_summary.json"),
                       json.dumps(summary, indent=2))
    multiclass = {k: v for k, v in summary["multiclass"].items() if k not in ("selection", "answer_threshold")}
    multiclass["chosen"] = summary["multiclass"]["selection"]["chosen"]
    multiclass["threshold"] = summary["multiclass"]["answer_threshold"]["threshold"]
    log.info("done: %s", json.dumps({**{k: v for k, v in summary.items() if k != "pca_explained_variance"},
                                     "multiclass": multiclass}))


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Train everything for one run; returns the training summary it wrote."""
    started = time.perf_counter()
    args.feature_identity = read_feature_identity(spark, args)
    frame, counts, labels = read_training_frame(spark, args)
    label_index = {label: i for i, label in enumerate(labels)}
    reduced = split_and_reduce(frame, label_index, args)
    reduce_seconds = time.perf_counter() - started

    selection = cross_validate(spark, args, reduced, labels)
    mc_started = time.perf_counter()
    multiclass = train_multiclass(spark, args, frame, labels, reduced, selection)
    mc_seconds = time.perf_counter() - mc_started

    n_pairs, n_models, sweep_seconds = pairwise_sweep(spark, args, labels, label_index, reduced)

    seconds = {"reduce": reduce_seconds, "selection": selection.seconds, "multiclass": mc_seconds,
               "pairwise": sweep_seconds, "total": time.perf_counter() - started}
    summary = training_summary(args, reduced, labels, counts, multiclass, n_pairs, n_models, seconds)
    write_summary(spark, args, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments and train the run under run_job; returns the exit code."""
    return run_job("train_models", parse_args(argv), run, (TrainingInputError,), log)


if __name__ == "__main__":
    sys.exit(main())
