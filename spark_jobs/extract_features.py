"""Spark job: extract CNN features from new images and append them as this run's feature rows.

    spark-submit --py-files image_jobs.zip extract_features.py \
        --images-uri file:///data/images --features-uri file:///data/features \
        --rejects-uri file:///data/rejects --backbone mobilenet_v2 \
        --weights-uri file:///data/weights/mobilenet_v2_imagenet.keras \
        --run-key manual__2026-11-21T10_00_00_00_00 --modified-before 2026-11-21T10:00:00Z

Writes ``<features-uri>/backbone=<name>/run=<run-key>/`` (path, label, length, modificationTime,
width, height, features array<float>) and the rejected files with their reasons under
``<rejects-uri>/backbone=<name>/run=<run-key>/``. Images that already have a feature or reject row
from another run (same path, length and modification time) are skipped; a retried run overwrites
its own partition, so rows are never duplicated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

from image_jobs import storage
from image_jobs.backbones import RANDOM_WEIGHTS, WeightsUnavailableError, get_backbone
from image_jobs.cli import add_inference_args, check_inference_args, parse_labels_json, run_job
from image_jobs.decode import DEFAULT_MAX_PIXELS
from image_jobs.extraction import (
    CHANGED,
    DEFAULT_MAX_FILE_BYTES,
    IMAGE_KEY,
    VANISHED,
    ListedImage,
    done_keys,
    image_frame,
    label_of,
    list_image_rows,
    precheck_reason,
    read_images,
    reason_kind,
    size_image_scan,
    split_readable,
)
from image_jobs.featurize import (
    FEATURE_COLUMNS,
    REJECT_COLUMNS,
    TENSORFLOW,
    InferenceChoice,
    make_featurizer,
    output_schema,
)
from image_jobs.inference import ship_ir
from image_jobs.progress import OutcomesParam, ProgressLogger
from image_jobs.session import job_logger

if TYPE_CHECKING:
    from pyspark import Accumulator, SparkContext
    from pyspark.sql import SparkSession

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
    parser.add_argument("--batch-size", type=int, required=True, help="images per forward pass")
    parser.add_argument("--labels-json", default="[]",
                        help='JSON list of class folders to include, e.g. \'["beagle", "pug"]\'; [] = all')
    parser.add_argument("--summary-uri", default=None, help="also write the job's JSON summary to this file")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="decompression-bomb guard: images with more pixels are rejected")
    add_inference_args(parser)
    args = parser.parse_args(argv)
    check_inference_args(parser, args, random_weights=args.random_weights)
    args.labels = parse_labels_json(parser, args.labels_json)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if "/" in args.run_key or ":" in args.run_key:
        parser.error(f"--run-key must be path-safe (no '/' or ':'), got {args.run_key!r}")
    try:
        get_backbone(args.backbone)
    except ValueError as exc:
        parser.error(str(exc))
    args.weights = RANDOM_WEIGHTS if args.random_weights else (args.weights_uri or "imagenet")
    return args


def check_weights_available(spark, backbone: str, weights: str) -> None:
    """Fail before any task starts when the weights cannot be had, saying how to provide them.

    Cheap checks only (no TensorFlow on the driver): the cache file for ``imagenet``, the file's
    existence for a weights URI. Loading itself happens once per Python worker.
    """
    if weights == RANDOM_WEIGHTS:
        log.warning("random weights requested: features are for timing only, not for training")
    elif weights == "imagenet":
        get_backbone(backbone).check_imagenet_cached()
    elif not storage.exists(spark, weights):
        raise WeightsUnavailableError(f"--weights-uri {weights} does not exist or is not readable")


def featurize_new_images(spark, args: argparse.Namespace, images_root: str, to_read: list[ListedImage],
                         counters: dict, inference: InferenceChoice = TENSORFLOW):
    """Featurized rows (``featurize.output_schema``) for the new, readable, labelled images ``to_read``."""
    from pyspark.sql import functions as F

    if not to_read:
        return spark.createDataFrame([], output_schema())
    size_image_scan(spark, len(to_read), sum(image.length for image in to_read), args.batch_size)
    # read only the class folders that have new images: a new class costs only its own files
    folders = [storage.join_uri(images_root, storage.escape_glob(label))
               for label in sorted({image.label for image in to_read})]
    content = read_images(spark, folders, args.modified_before, with_content=True).join(
        F.broadcast(image_frame(spark, to_read, "label")), IMAGE_KEY)  # the label as listed
    featurizer = make_featurizer(args.backbone, args.weights, args.batch_size, args.max_pixels, counters,
                                 inference)
    return content.mapInPandas(featurizer, output_schema())


def select_new_images(spark, args: argparse.Namespace, images_root: str) -> tuple[int, list[ListedImage]]:
    """The listing and the incremental selection, on the driver: how many images are seen, and the
    ones no other run has a feature or reject row for (labelled, in the allowed classes)."""
    listing = [image._replace(label=label_of(image.path, images_root))
               for image in list_image_rows(spark, args.images_uri, args.modified_before)]
    if args.labels:  # the allowed classes; files outside any class folder stay (they become rejects)
        allowed = set(args.labels)
        listing = [image for image in listing if image.label is None or image.label in allowed]
    done = done_keys(spark, [storage.join_uri(uri, f"backbone={args.backbone}")
                             for uri in (args.features_uri, args.rejects_uri)], args.run_key)
    todo = [image for image in listing if image.key not in done]
    log.info("images seen: %d (modified before %s), already done by earlier runs: %d, to process: %d",
             len(listing), args.modified_before, len(listing) - len(todo), len(todo))
    if args.labels:
        missing = sorted(set(args.labels) - {image.label for image in listing})
        if missing:
            log.warning("requested labels with no images: %s", missing)
    return len(listing), todo


def prepare_run(spark: SparkSession, args: argparse.Namespace) -> tuple[str, str, str, InferenceChoice]:
    """Check the inputs and ship the weights (and with openvino the IR, exported here when it is not yet);
    returns (images root, features output, rejects output, the forward pass's runtime)."""
    if not storage.exists(spark, args.images_uri):
        raise FileNotFoundError(f"--images-uri {args.images_uri} does not exist")
    images_root = storage.qualify(spark, args.images_uri)
    out_features = storage.join_uri(args.features_uri, f"backbone={args.backbone}", f"run={args.run_key}")
    out_rejects = storage.join_uri(args.rejects_uri, f"backbone={args.backbone}", f"run={args.run_key}")

    check_weights_available(spark, args.backbone, args.weights)
    if args.weights not in (RANDOM_WEIGHTS, "imagenet"):
        spark.sparkContext.addFile(args.weights)  # shipped once to every executor, from file://, s3:// or hdfs://
    inference = TENSORFLOW
    if args.runtime == "openvino":
        inference = ship_ir(spark, args.backbone, args.weights, args.precision)
    log.info("forward pass: runtime %s, precision %s%s", inference.runtime, inference.precision,
             f", IR {inference.ir_uri}" if inference.ir_uri else "")
    return images_root, out_features, out_rejects, inference


def extract_counters(sc: SparkContext) -> dict[str, Accumulator]:
    """The accumulators the featurizing tasks report progress, model loads and outcomes to."""
    return {"done": sc.accumulator(0), "rejected": sc.accumulator(0), "seconds": sc.accumulator(0.0),
            "model_loads": sc.accumulator(0), "load_seconds": sc.accumulator(0.0),
            "outcomes": sc.accumulator({}, OutcomesParam())}


def write_features(spark: SparkSession, args: argparse.Namespace, images_root: str, to_read: list[ListedImage],
                   counters: dict[str, Accumulator], out_features: str,
                   inference: InferenceChoice = TENSORFLOW) -> None:
    """Featurize the readable images and write their feature rows, in one logged pass."""
    from pyspark.sql import functions as F

    featurized = featurize_new_images(spark, args, images_root, to_read, counters, inference)
    with ProgressLogger(spark, log, len(to_read), counters):  # one pass: read, featurize, write
        (featurized.filter(F.col("reason").isNull()).select(*FEATURE_COLUMNS).write.mode("overwrite")
         .option("parquet.enable.dictionary#features.list.element", "false")  # CNN outputs never repeat
         .parquet(out_features))


def content_rejects(spark: SparkSession, to_read: list[ListedImage],
                    outcomes: dict[str, str | None]) -> tuple[list[tuple], list[tuple]]:
    """The reject rows of the content pass: (rejected by the model step, changed or vanished since listed)."""
    # what the content pass did with each image it read: its features, or the reason the model step
    # rejected it (from the successful tasks only, so a retried task counts once)
    model_rejects = [(*image, outcomes[image.path]) for image in to_read if outcomes.get(image.path)]
    # files deleted or rewritten since the listing: the content pass has no row for them (it skips
    # missing files and drops changed keys); a reject row each, never a silent gap
    unread = [(*image, CHANGED if storage.exists(spark, image.path) else VANISHED)
              for image in to_read if image.path not in outcomes]
    return model_rejects, unread


def write_rejects(spark: SparkSession, reject_rows: list[tuple], out_rejects: str) -> None:
    """Write this run's reject rows (path, length, mtime_ms, label, reason) as one Parquet file."""
    image_frame(spark, reject_rows, "label", "reason").select(*REJECT_COLUMNS).coalesce(1).write.mode(
        "overwrite").parquet(out_rejects)


def extraction_summary(args: argparse.Namespace, n_seen: int, n_todo: int, n_processed: int, n_features: int,
                       reject_rows: list[tuple], phases: dict[str, float], counters: dict[str, Accumulator],
                       seconds: float, out_features: str, out_rejects: str) -> dict:
    """The job's counts and timings, from what the phases produced (no I/O)."""
    by_reason = Counter(reason_kind(row[4]) for row in reject_rows)
    return {
        "run_key": args.run_key,
        "backbone": args.backbone,
        "runtime": args.runtime,
        "precision": args.precision,
        "images_seen": n_seen,
        "skipped_done_earlier": n_seen - n_todo,
        "processed": n_processed,
        "features_written": n_features,
        "rejected": len(reject_rows),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "seconds": round(seconds, 2),
        "phase_seconds": {k: round(v, 2) for k, v in phases.items()},
        "featurize_task_seconds": round(counters["seconds"].value, 2),
        "model_loads": counters["model_loads"].value,
        "model_load_seconds": round(counters["load_seconds"].value, 2),
        "images_per_second": round(n_processed / seconds, 2) if n_processed else 0.0,
        "features_uri": out_features,
        "rejects_uri": out_rejects,
    }


def report(spark: SparkSession, args: argparse.Namespace, summary: dict, reject_rows: list[tuple],
           out_rejects: str) -> None:
    """Log the first rejects, write the summary to ``--summary-uri`` (if given) and log it."""
    for row in reject_rows[:20]:
        log.warning("rejected %s: %s", row[0], row[4])
    if len(reject_rows) > 20:
        log.warning("... and %d more rejects, all listed in %s", len(reject_rows) - 20, out_rejects)
    if args.summary_uri:
        storage.write_text(spark, args.summary_uri, json.dumps(summary, indent=2))
    log.info("done: %s", json.dumps(summary))


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Extract features for the new images; returns the counts and timings it logged."""
    started = time.perf_counter()
    images_root, out_features, out_rejects, inference = prepare_run(spark, args)
    counters = extract_counters(spark.sparkContext)
    n_seen, todo = select_new_images(spark, args, images_root)
    phases = {"list": time.perf_counter() - started}

    to_read, rejected = split_readable(
        todo, lambda image: precheck_reason(image.label, image.length, DEFAULT_MAX_FILE_BYTES))
    write_features(spark, args, images_root, to_read, counters, out_features, inference)
    precheck_rejects = [(*image, reason) for image, reason in rejected]  # (path, length, mtime_ms, label, reason)
    model_rejects, unread = content_rejects(spark, to_read, counters["outcomes"].value)
    phases["featurize"] = time.perf_counter() - started - sum(phases.values())

    reject_rows = model_rejects + precheck_rejects + unread  # (path, length, mtime_ms, label, reason)
    write_rejects(spark, reject_rows, out_rejects)
    n_processed = len(to_read) - len(unread)
    n_features = n_processed - len(model_rejects)
    phases["write"] = time.perf_counter() - started - sum(phases.values())

    summary = extraction_summary(args, n_seen, len(todo), n_processed, n_features, reject_rows, phases, counters,
                                 time.perf_counter() - started, out_features, out_rejects)
    report(spark, args, summary, reject_rows, out_rejects)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments and extract the features under run_job; returns the exit code."""
    return run_job("extract_features", parse_args(argv), run, (), log)


if __name__ == "__main__":
    sys.exit(main())
