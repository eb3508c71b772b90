"""Spark job: turn a run's training results into the report (CSV tables, summary JSON, PNG plots).

    spark-submit --py-files image_jobs.zip evaluate_models.py \
        --models-uri file:///data/runs/<run_key>/models --report-uri file:///data/runs/<run_key>/report \
        --rejects-uri file:///data/rejects --backbone mobilenet_v2 --run-key <run_key> \
        --modified-before 2026-11-21T10:00:00Z [--extract-summary-uri .../steps/extract_features.json]

Writes under ``--report-uri``: metrics.csv (one row per pairwise model, the study's columns first),
multiclass.csv, confusion_matrix.csv, hardest_pairs.csv, model_selection.csv (cross-validated accuracy
per setting of the multiclass model), precision_coverage.csv (the answer threshold's curve),
summary.json and plots/*.png. A retry overwrites the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from image_jobs import pairwise_report, report_tables, storage
from image_jobs.cli import run_job
from image_jobs.photo_listing import reason_kind_column, spark_timestamp
from image_jobs.session import job_logger

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = job_logger("evaluate_models")

HARDEST_PAIRS = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's command line, parsed and checked (errors exit through argparse)."""
    parser = argparse.ArgumentParser(description="Write the report of a run: metrics, summary and plots.")
    parser.add_argument("--models-uri", required=True)
    parser.add_argument("--report-uri", required=True)
    parser.add_argument("--rejects-uri", required=True, help="rejects dataset root, for the rejects count")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--run-key", required=True)
    parser.add_argument("--modified-before", required=True)
    parser.add_argument("--extract-summary-uri", default=None, help="the extraction step's summary JSON, if any")
    return parser.parse_args(argv)


def count_rejects(spark, args: argparse.Namespace, labels: list[str]) -> dict:
    """Rejected files the run's images include: total, by reason (first words), the unlabelled ones."""
    from pyspark.sql import functions as F

    df = storage.read_committed(spark, storage.join_uri(args.rejects_uri, f"backbone={args.backbone}"), log=log)
    if df is None:
        return {"count": 0, "by_reason": {}}
    df = df.filter(
        F.col("modificationTime").isNull()
        | (F.col("modificationTime") < F.to_timestamp(F.lit(spark_timestamp(args.modified_before))))
    )
    df = df.filter(F.col("label").isNull() | F.col("label").isin(labels)).dropDuplicates(["path"])
    by_reason = {r["kind"]: r["count"] for r in df.groupBy(reason_kind_column().alias("kind")).count().collect()}
    return {"count": int(sum(by_reason.values())), "by_reason": by_reason}


@dataclass
class Pairwise:
    """What the report shows of the pairwise models: the rows stay in Spark, the driver holds aggregates."""

    metrics: DataFrame  # metrics.csv's rows, in order
    pairs: DataFrame  # hardest_pairs.csv's rows, hardest first
    hardest: pd.DataFrame  # the first HARDEST_PAIRS of them
    models: int
    mean_pct: float


def read_training_results(spark: SparkSession, args: argparse.Namespace) -> tuple[dict, Pairwise, pd.DataFrame]:
    """Read what train_models wrote: its summary, the pairwise models (as a dataset and its aggregates) and the
    multiclass test predictions' counts per (label, predicted) pair."""
    from pyspark.sql import functions as F

    training = json.loads(storage.read_text(spark, storage.join_uri(args.models_uri, "training_summary.json")))
    results = spark.read.parquet(storage.join_uri(args.models_uri, "pairwise_results"))
    metrics = pairwise_report.metrics_frame(results)
    pairs = pairwise_report.pair_table(metrics)
    figures = results.agg(F.count("*").alias("n"), F.avg("predict_pct").alias("mean")).first()
    pairwise = Pairwise(metrics, pairs, pairs.limit(HARDEST_PAIRS).toPandas(), int(figures["n"]),
                        float(figures["mean"] or 0.0))
    # the test predictions stay in Spark: the driver gets their counts per (label, predicted) pair
    confusion = spark.read.parquet(storage.join_uri(args.models_uri, "multiclass", "test_predictions")).groupBy(
        "label", "predicted").count().toPandas()
    return training, pairwise, confusion


def write_tables(spark: SparkSession, report: str, pairwise: Pairwise, per_class: pd.DataFrame,
                 confusion: pd.DataFrame, multiclass: dict) -> None:
    """Write the report's CSV tables (``multiclass``: the training summary's multiclass part); the pairwise
    tables from Spark's tasks."""

    def write_csv(name: str, frame: pd.DataFrame, index: bool = False) -> None:
        """Write one small table as CSV under the report folder."""
        storage.write_text(spark, storage.join_uri(report, name), report_tables.csv_text(frame).to_csv(index=index))

    storage.write_csv_file(pairwise_report.csv_text_columns(pairwise.metrics), storage.join_uri(report, "metrics.csv"))
    storage.write_csv_file(pairwise_report.csv_text_columns(pairwise.pairs),
                           storage.join_uri(report, "hardest_pairs.csv"))
    write_csv("multiclass.csv", per_class)
    write_csv("confusion_matrix.csv", confusion, index=True)
    write_csv("model_selection.csv", report_tables.selection_table(multiclass["selection"]))
    write_csv("precision_coverage.csv", report_tables.precision_coverage_table(multiclass["answer_threshold"]))


def focus_classes(pairwise: Pairwise, training: dict, labels: list[str]) -> list[str]:
    """The classes that get a plot of their own: every class in all_pairs mode, else the pairs' first classes."""
    if training["pairwise"]["pair_mode"] == "all_pairs":
        return labels
    return sorted(row["class_1"] for row in pairwise.metrics.select("class_1").distinct().collect())


def pairwise_plots(pairwise: Pairwise, training: dict, labels: list[str]) -> tuple[dict[str, bytes], dict[str, str]]:
    """The pairwise plots by file name (from aggregates), and the per-class plot's file name of each focus class."""
    means = pairwise.pairs.select("class_1", "class_2", "mean_pct").toPandas()  # one row per pair
    plots = {
        "accuracy_vs_split.png": report_tables.plot_split_band(
            pairwise_report.band_by_split(pairwise.metrics).toPandas(),
            f"Pairwise accuracy vs split ratio ({len(means)} pairs)"),
        "pairwise_accuracy_heatmap.png": report_tables.plot_pair_heatmap(means, labels),
    }
    class_plots = {}
    for focus, (kind, table) in pairwise_report.focus_tables(pairwise.metrics,
                                                             focus_classes(pairwise, training, labels)).items():
        class_plots[focus] = f"accuracy_vs_split_{report_tables.plot_file_stem(focus)}.png"
        plots[class_plots[focus]] = report_tables.plot_focus_lines(table, focus) if kind == "lines" else (
            report_tables.plot_split_band(table, f"{focus} vs each other class: accuracy vs split ratio"))
    return plots, class_plots


def render_plots(training: dict, labels: list[str], pairwise: Pairwise,
                 confusion: pd.DataFrame) -> tuple[dict[str, bytes], dict[str, str]]:
    """The report's PNG plots by file name, and the per-class plot's file name of each focus class."""
    plots, class_plots = pairwise_plots(pairwise, training, labels)
    plots.update({
        "confusion_matrix.png": report_tables.plot_confusion_matrix(confusion),
        "pca_explained_variance.png": report_tables.plot_explained_variance(training["pca_explained_variance"]),
        "model_selection.png": report_tables.plot_model_selection(
            report_tables.selection_table(training["multiclass"]["selection"])),
        "precision_coverage.png": report_tables.plot_precision_coverage(
            report_tables.precision_coverage_table(training["multiclass"]["answer_threshold"]),
            training["multiclass"]["answer_threshold"]),
    })
    return plots, class_plots


def write_plots(spark: SparkSession, report: str, plots: dict[str, bytes], labels: list[str]) -> None:
    """Warn when no font can draw the class names, then write the plots under ``plots/``."""
    missing_glyphs = report_tables.unrenderable(labels)
    if missing_glyphs:
        log.warning("no installed font can draw every character of %s: the plots show boxes there (install a "
                    "font such as Noto Sans CJK); the CSV, JSON and report files have the exact names",
                    missing_glyphs)
    for name, png in plots.items():
        storage.write_bytes(spark, storage.join_uri(report, "plots", name), png)


def step_seconds(spark: SparkSession, args: argparse.Namespace, training: dict, started: float) -> dict:
    """The seconds each pipeline step took: training, extraction (when its summary exists), this one."""
    seconds = {"train_models": training["seconds"]["total"]}
    if args.extract_summary_uri and storage.exists(spark, args.extract_summary_uri):
        seconds["extract_features"] = json.loads(storage.read_text(spark, args.extract_summary_uri))["seconds"]
    seconds["evaluate_models"] = round(time.perf_counter() - started, 2)
    return seconds


def multiclass_report_summary(trained: dict, overall: dict) -> dict:
    """summary.json's multiclass part: test accuracy (with the 95% interval training computed on the same test
    predictions), what was chosen and why, the answer threshold and its curve (also in model_selection.csv
    and precision_coverage.csv)."""
    selection = trained["selection"]
    return {**overall, "accuracy_ci95": trained["accuracy_ci95"],
            "accuracy_ci95_method": trained["accuracy_ci95_method"], "model": trained["model"],
            "selection": {key: selection[key] for key in ("folds", "seed", "rule", "chosen", "table")},
            "answer_threshold": trained["answer_threshold"]}


@dataclass(frozen=True)
class ReportParts:
    """What the report's phases produced for summary.json: the multiclass figures, the pairwise aggregates,
    the rejects, the seconds per step and the plots' file names (with each focus class's plot)."""

    overall: dict
    pairwise: Pairwise
    rejects: dict
    seconds: dict
    plots: dict[str, bytes]
    class_plots: dict[str, str]


def report_summary(args: argparse.Namespace, training: dict, parts: ReportParts) -> dict:
    """summary.json's content, from the training summary and the report's tables (no I/O)."""
    return {
        "run_key": args.run_key,
        "backbone": args.backbone,
        "feature_dim": training["feature_dim"],
        "pca_components": training["pca_components"],
        "pca_explained_variance_total": training["pca_explained_variance_total"],
        "classes": training["classes"],
        "image_counts": training["image_counts"],
        "images": int(sum(training["image_counts"].values())),
        "rejects": parts.rejects,
        "multiclass": multiclass_report_summary(training["multiclass"], parts.overall),
        "pairwise": {**training["pairwise"], "mean_accuracy_pct": round(parts.pairwise.mean_pct, 4)},
        "hardest_pairs": parts.pairwise.hardest.round(4).to_dict(orient="records"),
        "seconds_per_step": parts.seconds,
        "report_uri": args.report_uri,
        "plots": sorted(parts.plots),
        "class_plots": parts.class_plots,
    }


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Write the report; returns summary.json's content."""
    started = time.perf_counter()
    training, pairwise, predictions = read_training_results(spark, args)
    labels = training["classes"]

    per_class, confusion, overall = report_tables.multiclass_tables(predictions, labels)
    report = args.report_uri
    write_tables(spark, report, pairwise, per_class, confusion, training["multiclass"])
    plots, class_plots = render_plots(training, labels, pairwise, confusion)
    write_plots(spark, report, plots, labels)

    seconds = step_seconds(spark, args, training, started)
    rejects = count_rejects(spark, args, labels)
    summary = report_summary(args, training, ReportParts(overall, pairwise, rejects, seconds, plots, class_plots))
    storage.write_text(spark, storage.join_uri(report, "summary.json"), json.dumps(summary, indent=2))
    log.info("report written to %s: multiclass accuracy %.2f%%, macro-F1 %.3f, %d pairwise models, %d plots",
             report, 100 * overall["accuracy"], overall["macro_f1"], pairwise.models, len(plots))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments and write the report under run_job; returns the exit code."""
    return run_job("evaluate_models", parse_args(argv), run, (), log)


if __name__ == "__main__":
    sys.exit(main())
