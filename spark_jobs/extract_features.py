"""Spark job: extract CNN features from new images and append them as this run's feature rows.

    spark-submit --py-files image_jobs.zip extract_features.py \
        --images-uri file:///data/images --features-uri file:///data/features \
        --rejects-uri file:///data/rejects --backbone mobilenet_v2 \
        --weights-uri file:///data/weights/mobilenet_v2_imagenet.keras \
        --run-key manual__2026-11-21T10_00_00_00_00 --modified-before 2026-11-21T10:00:00Z

Writes ``<features-uri>/backbone=<name>/run=<run-key>@<attempt>/`` (path, label, length, modificationTime,
width, height, the feature identity, features array<float>) and the rejected files with their reasons
under ``<rejects-uri>/backbone=<name>/run=<run-key>@<attempt>/``. Images that already have a feature or
reject row of the same feature identity (backbone, weights digest, precision class) from another run (same
path, length and modification time) are skipped. Each attempt writes a folder of its own and readers take
each run's newest committed attempt (``storage.partitions``): a retry never removes rows a reader is
reading, and rows are never duplicated. The listing and the selection are Spark datasets; the tasks read the photos'
bytes ``--read-concurrency`` at a time (``image_jobs.photo_store``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from image_jobs import storage
from image_jobs.backbones import get_backbone
from image_jobs.cli import (
    LabelsFileError,
    add_batch_args,
    add_inference_args,
    add_labels_args,
    add_read_args,
    check_inference_args,
    check_run_args,
    load_labels,
    parse_labels_json,
    run_job,
    write_summary,
)
from image_jobs.conventions import IMAGENET_WEIGHTS, RANDOM_WEIGHTS
from image_jobs.feature_identity import FeatureIdentity
from image_jobs.featurize import FEATURE_COLUMNS, REJECT_COLUMNS, make_featurizer, output_schema
from image_jobs.forward_pass import ShippedForwardPass, check_weights, ship_forward_pass
from image_jobs.photo_listing import (
    CHANGED,
    VANISHED,
    done_rows,
    list_photos,
    not_done,
    photo_partitions,
    reason_kind_column,
)
from image_jobs.photo_store import StoreError, StoreOptions
from image_jobs.progress import ProgressLogger, task_counters
from image_jobs.session import job_logger

if TYPE_CHECKING:
    from pyspark import Accumulator
    from pyspark.sql import DataFrame, SparkSession

log = job_logger("extract_features")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's command line, parsed and checked (errors exit through argparse)."""
    parser = argparse.ArgumentParser(description="Extract CNN features from images into Parquet.")
    parser.add_argument("--images-uri", required=True, help="root with one folder per class")
    parser.add_argument("--features-uri", required=True, help="feature dataset root (partitioned by backbone, run)")
    parser.add_argument("--rejects-uri", required=True, help="rejects dataset root (partitioned by backbone, run)")
    parser.add_argument("--backbone", required=True, help="backbone name, e.g. mobilenet_v2 or vgg16")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights-uri", default=None,
                         help="weights file (.keras model or .h5 weights), local path, file:// or s3://; "
                              "default: Keras' cache (imagenet)")
    weights.add_argument("--random-weights", action="store_true",
                         help="random initialisation, for timing runs only: the features are meaningless")
    parser.add_argument("--run-key", required=True, help="path-safe run identifier")
    parser.add_argument("--modified-before", required=True,
                        help="ISO-8601 time: only images modified before it are seen")
    add_batch_args(parser, None, "images with more pixels are rejected")
    add_labels_args(parser, "the class folders to include")
    add_inference_args(parser)
    add_read_args(parser)
    args = parser.parse_args(argv)
    check_inference_args(parser, args, random_weights=args.random_weights)
    args.labels = parse_labels_json(parser, args.labels_json)
    check_run_args(parser, args)
    try:
        get_backbone(args.backbone)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def weights_of(args: argparse.Namespace) -> str:
    """The weights the arguments ask for: random, a weights URI, or Keras' cached ImageNet weights."""
    return RANDOM_WEIGHTS if args.random_weights else (args.weights_uri or IMAGENET_WEIGHTS)


@dataclass
class Selection:
    """The listing and the photos to process (datasets, cached), and how many of each."""

    listing: DataFrame
    todo: DataFrame
    n_seen: int
    n_todo: int


def select_new_images(spark: SparkSession, args: argparse.Namespace, labels: list[str], options: StoreOptions,
                      identity: FeatureIdentity) -> Selection:
    """The listing and the incremental selection, in Spark: every image seen, and the ones no other run
    has a feature or reject row of this identity for (labelled or not: loose files become rejects)."""
    listing = list_photos(spark, args.images_uri, args.modified_before, options, labels)
    done = done_rows(spark, [storage.join_uri(uri, f"backbone={args.backbone}")
                             for uri in (args.features_uri, args.rejects_uri)], args.run_key, identity.columns(), log)
    todo = not_done(listing, done)
    todo = todo if todo is listing else todo.persist()  # nothing done earlier: the cached listing itself
    n_seen, n_todo = listing.count(), todo.count()
    log.info("images seen: %d (modified before %s), already done by earlier runs with these features (%s): %d, "
             "to process: %d", n_seen, args.modified_before, identity.describe(), n_seen - n_todo, n_todo)
    if labels:
        found = {row.label for row in listing.select("label").distinct().collect()}
        missing = sorted(set(labels) - found)
        if missing:
            log.warning("requested labels with no images: %s", missing)
    return Selection(listing, todo, n_seen, n_todo)


@dataclass(frozen=True)
class Prepared:
    """What ``prepare_run`` settled: the run's classes, the outputs, the forward pass (with the identity of its
    features) and how the photos are read."""

    labels: list[str]
    out_features: str
    out_rejects: str
    forward: ShippedForwardPass
    options: StoreOptions


def prepare_run(spark: SparkSession, args: argparse.Namespace) -> Prepared:
    """Read the run's classes, check the weights and ship them (and with openvino the IR, exported here when it
    is not yet), resolve the precision, and settle the feature identity of this run."""
    labels = load_labels(spark, args)
    # each attempt writes a folder of its own: a retry never removes rows another run is reading
    out_features = storage.attempt_folder(storage.join_uri(args.features_uri, f"backbone={args.backbone}"),
                                          args.run_key)
    out_rejects = storage.attempt_folder(storage.join_uri(args.rejects_uri, f"backbone={args.backbone}"),
                                         args.run_key)
    weights = weights_of(args)
    check_weights(spark, args.backbone, weights, f"--weights-uri {weights} does not exist or is not readable",
                  "random weights requested: features are for timing only, not for training", log)
    forward = ship_forward_pass(spark, args.backbone, weights, args.runtime, args.precision)
    log.info("forward pass: %s; feature identity: %s", forward.describe(), forward.identity.describe())
    return Prepared(labels, out_features, out_rejects, forward, StoreOptions.from_environment(args.read_concurrency))


def featurized_rows(spark: SparkSession, args: argparse.Namespace, prepared: Prepared, selection: Selection,
                    counters: dict[str, Accumulator]) -> DataFrame:
    """Every photo to process with its features or its reject reason and the run's identity, cached on disk
    once computed (the features and the rejects are written from it without running the model twice)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    identity = [F.lit(value).alias(column) for column, value in prepared.forward.identity.columns().items()]
    if selection.n_todo == 0:
        rows = spark.createDataFrame([], output_schema())
    else:
        featurizer = make_featurizer(args.backbone, prepared.forward.weights, args.batch_size, args.max_pixels,
                                     counters, prepared.forward.inference, prepared.options)
        rows = (selection.todo.repartition(photo_partitions(spark, selection.n_todo, args.batch_size))
                .mapInPandas(featurizer, output_schema()))
    return rows.select("*", F.timestamp_millis("mtime_ms").alias("modificationTime"), *identity).persist(
        StorageLevel.DISK_ONLY)


def write_features(spark: SparkSession, featurized: DataFrame, n_todo: int, counters: dict[str, Accumulator],
                   prepared: Prepared) -> None:
    """Featurize (logging progress) and write the feature rows, in one pass."""
    from pyspark.sql import functions as F

    with ProgressLogger(spark, log, n_todo, counters):  # one pass: read, featurize, write
        (featurized.filter(F.col("reason").isNull()).select(*FEATURE_COLUMNS).write.mode("overwrite")
         .option("parquet.enable.dictionary#features.list.element", "false")  # CNN outputs never repeat
         .parquet(prepared.out_features))


def write_rejects(spark: SparkSession, featurized: DataFrame, prepared: Prepared, any_rejected: bool) -> None:
    """Write the reject rows of the same pass (read back from the executors' disks, the model not run again).

    With ``any_rejected`` false (no successful featurizing task reported a reject: a task's accumulator
    updates count only when it succeeds), the rejects' attempt folder is written empty without reading the
    cached rows back: at a million photos that read is every feature row again.
    """
    from pyspark.sql import functions as F

    rejects = featurized.filter(F.col("reason").isNotNull()).select(*REJECT_COLUMNS)
    rows = rejects.coalesce(spark.sparkContext.defaultParallelism) if any_rejected else rejects.limit(0)
    rows.write.mode("overwrite").parquet(prepared.out_rejects)


@dataclass
class Outcome:
    """What became of the photos to process, counted from the written rows (aggregates, never rows)."""

    n_features: int = 0
    n_unread: int = 0  # changed or vanished since the listing
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    first_rejects: list = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


def count_outcome(spark: SparkSession, prepared: Prepared, any_rejected: bool) -> Outcome:
    """Count features, rejects by kind and photos unread from the rows written (the features' count from
    the Parquet footers; the rejects, when there are any, read back), in Spark; the first 20 rejects."""
    from pyspark.sql import functions as F

    n_features = spark.read.parquet(prepared.out_features).count()
    if not any_rejected:
        return Outcome(n_features)
    rejects = spark.read.parquet(prepared.out_rejects)
    by_kind = rejects.groupBy(reason_kind_column().alias("kind")).agg(
        F.count("*").alias("count"), F.count(F.when(F.col("reason").isin(CHANGED, VANISHED), 1)).alias("unread"),
    ).collect()
    first = rejects.select("path", "reason").limit(20).collect()
    return Outcome(n_features, sum(int(row["unread"]) for row in by_kind),
                   dict(sorted((row["kind"], int(row["count"])) for row in by_kind)),
                   [(row.path, row.reason) for row in first])


def extraction_summary(args: argparse.Namespace, prepared: Prepared, selection: Selection, outcome: Outcome,
                       phases: dict[str, float], counters: dict[str, Accumulator], seconds: float) -> dict:
    """The job's counts and timings, from what the phases produced (no I/O)."""
    n_processed = selection.n_todo - outcome.n_unread
    return {
        "run_key": args.run_key,
        "backbone": args.backbone,
        "runtime": args.runtime,
        "precision": args.precision,
        "feature_identity": prepared.forward.identity.to_dict(),
        "read_concurrency": prepared.options.concurrency,
        "images_seen": selection.n_seen,
        "skipped_done_earlier": selection.n_seen - selection.n_todo,
        "processed": n_processed,
        "features_written": outcome.n_features,
        "rejected": outcome.n_rejected,
        "rejected_by_reason": outcome.rejected_by_reason,
        "seconds": round(seconds, 2),
        "phase_seconds": {k: round(v, 2) for k, v in phases.items()},
        "featurize_task_seconds": round(counters["seconds"].value, 2),
        "model_loads": counters["model_loads"].value,
        "model_load_seconds": round(counters["load_seconds"].value, 2),
        "images_per_second": round(n_processed / seconds, 2) if n_processed else 0.0,
        "features_uri": prepared.out_features,
        "rejects_uri": prepared.out_rejects,
    }


def report(spark: SparkSession, args: argparse.Namespace, summary: dict, outcome: Outcome) -> None:
    """Log the first rejects, write the summary to ``--summary-uri`` (if given) and log it."""
    for path, reason in outcome.first_rejects:
        log.warning("rejected %s: %s", path, reason)
    if outcome.n_rejected > len(outcome.first_rejects):
        log.warning("... and %d more rejects, all listed in %s", outcome.n_rejected - len(outcome.first_rejects),
                    summary["rejects_uri"])
    write_summary(spark, args.summary_uri, summary, log)


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Extract features for the new images; returns the counts and timings it logged."""
    started = time.perf_counter()
    prepared = prepare_run(spark, args)
    counters = task_counters(spark.sparkContext)
    selection = select_new_images(spark, args, prepared.labels, prepared.options, prepared.forward.identity)
    phases = {"list": time.perf_counter() - started}

    featurized = featurized_rows(spark, args, prepared, selection, counters)
    write_features(spark, featurized, selection.n_todo, counters, prepared)
    phases["featurize"] = time.perf_counter() - started - sum(phases.values())

    any_rejected = counters["rejected"].value > 0
    write_rejects(spark, featurized, prepared, any_rejected)
    outcome = count_outcome(spark, prepared, any_rejected)
    for frame in {id(f): f for f in (featurized, selection.todo, selection.listing)}.values():
        frame.unpersist()
    phases["write"] = time.perf_counter() - started - sum(phases.values())
    summary = extraction_summary(args, prepared, selection, outcome, phases, counters, time.perf_counter() - started)
    report(spark, args, summary, outcome)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments and extract the features under run_job; returns the exit code."""
    return run_job("extract_features", parse_args(argv), run, (StoreError, LabelsFileError), log)


if __name__ == "__main__":
    sys.exit(main())
