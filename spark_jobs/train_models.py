"""Spark job: reduce the run's features with PCA, run the pairwise SVM sweep, select and fit the multiclass model.

    spark-submit --py-files image_jobs.zip train_models.py \
        --features-uri file:///data/features --backbone mobilenet_v2 \
        --models-uri file:///data/runs/<run_key>/models --run-key <run_key> \
        --modified-before 2026-11-21T10:00:00Z --labels-uri file:///data/runs/<run_key>/steps/labels.json \
        --extract-summary-uri file:///data/runs/<run_key>/steps/extract_features.json --pair-mode all_pairs

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
from dataclasses import replace
from typing import TYPE_CHECKING

from image_jobs import storage
from image_jobs.cli import LabelsFileError, add_labels_args, load_labels, parse_labels_json, run_job
from image_jobs.conventions import DEFAULT_SPLIT_RATIOS, PAIR_MODES
from image_jobs.model_selection import (
    DEFAULT_C_GRID,
    DEFAULT_CV_FOLDS,
    DEFAULT_REDUCTIONS,
    DEFAULT_TARGET_PRECISION,
    SelectionInputError,
    parse_c_grid,
    parse_reductions,
    reduction_name,
)
from image_jobs.multiclass import cross_validate, fit_and_write
from image_jobs.pairwise import pairwise_sweep
from image_jobs.session import job_logger
from image_jobs.training import TrainingInputError, check_inputs
from image_jobs.training_data import (
    DEFAULT_CV_MAX_ROWS,
    TrainingData,
    class_counts,
    cv_sample,
    load_run_features,
    prepare,
    read_feature_identity,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from image_jobs.feature_identity import FeatureIdentity

log = job_logger("train_models")

# 128 components: 10x fewer dimensions than MobileNetV2's 1280 (32x fewer than VGG16's 4096), so
# every one of the thousands of pairwise fits is cheap, while keeping most of the variance (96.3%
# on the sample images). A run with fewer training images gets fewer (PCA cannot exceed the sample).
DEFAULT_PCA_COMPONENTS = 128


def add_selection_args(parser: argparse.ArgumentParser) -> None:
    """The multiclass model's selection: folds, the grids compared, the threshold's target, the sample's size."""
    parser.add_argument("--cv-folds", type=int, default=DEFAULT_CV_FOLDS,
                        help="folds of the multiclass model's cross-validation (on the training split)")
    parser.add_argument("--c-grid", default=",".join(str(c) for c in DEFAULT_C_GRID),
                        help="comma-separated regularisation strengths C of the multiclass model to compare")
    parser.add_argument("--reductions", default=",".join(reduction_name(k) for k in DEFAULT_REDUCTIONS),
                        help="comma-separated reductions to compare: none, or PCA sizes (64 or pca64)")
    parser.add_argument("--target-precision", type=float, default=DEFAULT_TARGET_PRECISION,
                        help="precision the answered photos must reach: sets the model's answer threshold")
    parser.add_argument("--cv-max-rows", type=int, default=DEFAULT_CV_MAX_ROWS,
                        help="the model selection's cross-validation runs on at most this many training rows (a "
                             "stratified sample; all of them below it); the chosen model is fitted on every row")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's command line, parsed and checked (errors exit through argparse)."""
    parser = argparse.ArgumentParser(description="Train pairwise SVMs and a multiclass model on CNN features.")
    parser.add_argument("--features-uri", required=True, help="feature dataset root (partitioned by backbone, run)")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--models-uri", required=True, help="this run's models folder")
    parser.add_argument("--run-key", required=True)
    parser.add_argument("--modified-before", required=True, help="ISO-8601: only images modified before it")
    add_labels_args(parser, "the run's classes")
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
    add_selection_args(parser)
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
    if args.cv_max_rows < 100:
        parser.error(f"--cv-max-rows must be >= 100, got {args.cv_max_rows}")
    if not 0 < args.target_precision <= 1:
        parser.error(f"--target-precision must be in (0, 1], got {args.target_precision}")
    return args


def read_training_data(spark: SparkSession, args: argparse.Namespace, requested: list[str],
                       identity: FeatureIdentity) -> TrainingData:
    """The run's rows (of the ``requested`` classes, every class when empty; of its feature ``identity``,
    newest per photo), its classes checked, split and reduced."""
    features = load_run_features(spark, args, requested, identity)
    counts = class_counts(features)
    labels = check_inputs(counts, requested, args.split_ratios, args.test_fraction, args.pair_mode,
                          args.focus_class)
    log.info("training on %d images of %d classes: %s", sum(counts.values()), len(labels), counts)
    return replace(prepare(spark, features, labels, counts, args), identity=identity)


def training_summary(args: argparse.Namespace, data: TrainingData, multiclass: dict, n_pairs: int, n_models: int,
                     seconds: dict[str, float]) -> dict:
    """The training summary of the run, from what the phases produced (no I/O)."""
    explained = data.reduction.explained_variance_ratio[:data.k]  # the sweep's PCA
    labels, counts = data.labels, data.counts
    return {
        "run_key": args.run_key,
        "backbone": args.backbone,
        "feature_identity": data.identity.to_dict(),
        "feature_dim": data.feature_dim,
        "pca_components": data.k,
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
    """Train everything for one run, phase by phase; returns the training summary it wrote."""
    started = time.perf_counter()
    requested = load_labels(spark, args)
    identity = read_feature_identity(spark, args.extract_summary_uri, args.backbone)
    data = read_training_data(spark, args, requested, identity)
    reduce_seconds = time.perf_counter() - started

    selection = cross_validate(spark, args, cv_sample(data, args.cv_max_rows, args.cv_folds, args.seed),
                               data.labels, data.k_fit, data.feature_dim)
    mc_started = time.perf_counter()
    multiclass = fit_and_write(spark, args, data, selection)
    mc_seconds = time.perf_counter() - mc_started

    n_pairs, n_models, sweep_seconds = pairwise_sweep(spark, args, data)
    data.rows.unpersist()

    seconds = {"reduce": reduce_seconds, "selection": selection.seconds, "multiclass": mc_seconds,
               "pairwise": sweep_seconds, "total": time.perf_counter() - started}
    summary = training_summary(args, data, multiclass, n_pairs, n_models, seconds)
    write_summary(spark, args, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments and train the run under run_job; returns the exit code."""
    return run_job("train_models", parse_args(argv), run, (TrainingInputError, LabelsFileError), log)


if __name__ == "__main__":
    sys.exit(main())
