"""Spark job: reduce the run's features with PCA, run the pairwise SVM sweep, fit the multiclass model.

    spark-submit --py-files image_jobs.zip train_models.py \
        --features-uri file:///data/features --backbone mobilenet_v2 \
        --models-uri file:///data/runs/<run_key>/models --run-key <run_key> \
        --modified-before 2026-11-21T10:00:00Z --labels-json '[]' --pair-mode all_pairs

Writes under ``--models-uri``:
  multiclass/model.json           standardise + PCA + multinomial logistic regression, with its labels,
                                  as plain arrays: loadable without Spark (numpy is enough)
  multiclass/test_predictions/    Parquet: path, label, predicted, probability, probabilities
  pairwise_results/               Parquet: one row per pairwise model (the study's columns, the model)
  pairwise/pair=<c1>_VS_<c2>/     Parquet: the best model of each pair (highest accuracy, ties to the
                                  larger test set)
  training_summary.json           classes, image counts, PCA explained variance, accuracy, seconds
Every output is overwritten by a retry of the same run; nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from image_jobs import storage
from image_jobs.cli import parse_labels_json, run_job
from image_jobs.conventions import DEFAULT_SPLIT_RATIOS, MODEL_FORMAT, PAIR_MODES
from image_jobs.extraction import spark_timestamp
from image_jobs.session import job_logger
from image_jobs.training import (
    TrainingInputError,
    best_per_pair,
    check_inputs,
    fit_multiclass,
    latest_features,
    make_pair_fitter,
    pair_result_schema,
    pair_tasks,
    restrict_run,
    stratified_test_mask,
)

log = job_logger("train_models")

# 128 components: 10x fewer dimensions than MobileNetV2's 1280 (32x fewer than VGG16's 4096), so
# every one of the thousands of pairwise fits is cheap, while keeping most of the variance (96.3%
# on the sample images). A run with fewer training images gets fewer (PCA cannot exceed the sample).
DEFAULT_PCA_COMPONENTS = 128


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument("--pca-components", type=int, default=DEFAULT_PCA_COMPONENTS)
    parser.add_argument("--test-fraction", type=float, default=0.2, help="multiclass test share, stratified")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-uri", default=None, help="recorded in the model, for prediction")
    args = parser.parse_args(argv)
    args.labels = parse_labels_json(parser, args.labels_json)
    try:
        args.split_ratios = [float(x) for x in args.split_ratios.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--split-ratios must be comma-separated numbers, got {args.split_ratios!r}")
    for name in ("max_per_class", "iterations", "pca_components"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def load_run_features(spark, args: argparse.Namespace):
    """The newest feature row per image the run sees: path, label, features."""
    df = storage.read_committed(spark, storage.join_uri(args.features_uri, f"backbone={args.backbone}"), log=log)
    if df is None:
        raise TrainingInputError(f"no features for backbone {args.backbone} under {args.features_uri}; "
                                 "run extract_features first")
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


def portable_model(scaler, pca, classifier, labels: list[str], args: argparse.Namespace, feature_dim: int) -> dict:
    """The multiclass pipeline as plain arrays: what a prediction step needs, without Spark.

    ``z = (x - scaler_mean) / scaler_std`` (0 where the std is 0), then ``z @ pca_components.T``: the
    PCA's own centring (the training mean of z, ~0) is folded into ``scaler_mean``, so the arrays give
    exactly scikit-learn's transform.
    """
    constant = scaler.var_ == 0
    std = np.where(constant, 0.0, scaler.scale_)
    mean = np.where(constant, scaler.mean_, scaler.mean_ + pca.mean_ * scaler.scale_)
    return {
        "format": MODEL_FORMAT,
        "run_key": args.run_key,
        "backbone": args.backbone,
        "weights_uri": args.weights_uri,
        "feature_dim": feature_dim,
        "labels": labels,
        "scaler_mean": mean.tolist(),
        "scaler_std": std.tolist(),
        "pca_components": pca.components_.tolist(),  # k x feature_dim
        "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
        "classifier": "multinomial_logistic_regression",
        "coef": classifier.coef_.tolist(),
        "intercept": classifier.intercept_.tolist(),
    }


def run(spark, args: argparse.Namespace) -> dict:
    """Train everything for one run; returns the training summary it wrote."""
    from pyspark.sql import functions as F

    started = time.perf_counter()
    # one read: the run's features (path order, so the split is reproducible) to the driver
    frame = load_run_features(spark, args).orderBy("path").toPandas()
    counts = {str(label): int(n) for label, n in frame["label"].value_counts().items()}
    labels = check_inputs(counts, args.labels, args.split_ratios, args.test_fraction, args.pair_mode,
                          args.focus_class)
    label_index = {label: i for i, label in enumerate(labels)}
    log.info("training on %d images of %d classes: %s", sum(counts.values()), len(labels), counts)

    # the multiclass train/test split, stratified and reproducible
    test = stratified_test_mask(frame["label"].to_numpy(), args.test_fraction, args.seed)
    features = np.stack(frame.pop("features").to_numpy()).astype(np.float32)  # held once, not twice
    feature_dim = features.shape[1]
    n_train = int((~test).sum())
    k = min(args.pca_components, feature_dim, n_train - 1)
    if k < args.pca_components:
        log.warning("PCA components reduced from %d to %d (feature dim %d, %d training images)",
                    args.pca_components, k, feature_dim, n_train)
    scaler, pca = fit_reduction(features[~test], k, args.seed)
    explained = pca.explained_variance_ratio_
    log.info("PCA: %d -> %d dimensions, %.1f%% of the variance kept", feature_dim, k, 100 * explained.sum())
    x = reduce(scaler, pca, features)
    del features
    y = frame["label"].map(label_index).to_numpy()
    reduce_seconds = time.perf_counter() - started

    # multiclass model: the one that answers "which class is this photo"
    mc_started = time.perf_counter()
    classifier = fit_multiclass(x[~test], y[~test], args.seed)
    proba = classifier.predict_proba(x[test])
    predicted = proba.argmax(axis=1)
    accuracy = float((predicted == y[test]).mean())
    storage.write_text(spark, storage.join_uri(args.models_uri, "multiclass", "model.json"),
                       json.dumps(portable_model(scaler, pca, classifier, labels, args, feature_dim)))
    predictions = frame.loc[test, ["path", "label"]].assign(
        predicted=[labels[i] for i in predicted],
        probability=proba.max(axis=1).astype(float),
        probabilities=list(proba.astype(np.float32)),
    )
    spark.createDataFrame(predictions).coalesce(1).write.mode("overwrite").parquet(
        storage.join_uri(args.models_uri, "multiclass", "test_predictions"))
    log.info("multiclass: accuracy %.2f%% on %d test images", 100 * accuracy, int(test.sum()))
    mc_seconds = time.perf_counter() - mc_started

    # pairwise sweep: the reduced matrix goes to every executor once; the task table spreads the fits
    sweep_started = time.perf_counter()
    tasks = pair_tasks(labels, args.pair_mode, args.focus_class, args.split_ratios)
    n_pairs = len({t.pair_index for t in tasks})
    log.info("pairwise sweep (%s): %d pairs x %d splits = %d models", args.pair_mode, n_pairs,
             len(args.split_ratios), len(tasks))
    broadcast = spark.sparkContext.broadcast((x, y))
    partitions = max(1, min(len(tasks), spark.sparkContext.defaultParallelism * 4))
    task_df = spark.createDataFrame(
        [(t.pair_index, t.class_1, t.class_2, t.split, t.num_model) for t in tasks],
        "pair_index int, class_1 string, class_2 string, split double, num_model int",
    ).repartition(partitions, "pair_index")
    results = best_per_pair(task_df.mapInPandas(
        make_pair_fitter(broadcast, label_index, args.max_per_class, args.iterations, args.seed),
        pair_result_schema(),
    )).cache()
    results.drop("coef", "intercept").orderBy("pair_index", "num_model").coalesce(1).write.mode(
        "overwrite").parquet(storage.join_uri(args.models_uri, "pairwise_results"))
    (results.filter("best_of_pair")
     .withColumn("pair", F.concat_ws("_VS_", "class_1", "class_2"))
     .select("pair", "class_1", "class_2", "split", "predict_pct", "nb_test", "coef", "intercept", "model_type")
     .repartition("pair").write.mode("overwrite").partitionBy("pair")
     .parquet(storage.join_uri(args.models_uri, "pairwise")))
    n_models = results.count()
    results.unpersist()
    broadcast.unpersist()
    sweep_seconds = time.perf_counter() - sweep_started
    log.info("pairwise sweep: %d models in %.1f s (%.0f models/s)", n_models, sweep_seconds,
             n_models / max(sweep_seconds, 1e-9))

    summary = {
        "run_key": args.run_key,
        "backbone": args.backbone,
        "feature_dim": feature_dim,
        "pca_components": k,
        "pca_explained_variance": [round(float(v), 6) for v in explained],
        "pca_explained_variance_total": round(float(explained.sum()), 6),
        "classes": labels,
        "image_counts": {label: int(counts[label]) for label in labels},
        "multiclass": {"accuracy": accuracy, "train_images": n_train, "test_images": int(test.sum()),
                       "test_fraction": args.test_fraction, "model": "standardise + PCA + logistic regression"},
        "pairwise": {"pair_mode": args.pair_mode, "focus_class": args.focus_class, "pairs": n_pairs,
                     "models": n_models, "split_ratios": args.split_ratios, "max_per_class": args.max_per_class,
                     "iterations": args.iterations},
        "seed": args.seed,
        "seconds": {"reduce": round(reduce_seconds, 2), "multiclass": round(mc_seconds, 2),
                    "pairwise": round(sweep_seconds, 2), "total": round(time.perf_counter() - started, 2)},
    }
    storage.write_text(spark, storage.join_uri(args.models_uri, "training_summary.json"),
                       json.dumps(summary, indent=2))
    log.info("done: %s", json.dumps({k: v for k, v in summary.items() if k != "pca_explained_variance"}))
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_job("train_models", parse_args(argv), run, (TrainingInputError,), log)


if __name__ == "__main__":
    sys.exit(main())
