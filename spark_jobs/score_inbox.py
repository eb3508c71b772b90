"""Spark job: score the photos dropped in the inbox with a trained run's model, incrementally.

    spark-submit --py-files image_jobs.zip score_inbox.py \
        --inbox-uri file:///data/inbox --predictions-uri file:///data/predictions/<model run_key> \
        --model-json-uri file:///data/models/published/sha256-<hex>/model.json --model-sha256 <hex> \
        --run-key <scoring run_key> --modified-before 2026-11-21T10:00:00Z --batch-size 32
        (or --model-uri file:///data/runs/<model run_key>/models: that run's multiclass/model.json)

Reads every photo under ``--inbox-uri`` (recursive, image extensions, modified before the run's time)
that has no row yet in this model's predictions (same path, length and modification time), scores it
with the model's backbone, PCA and multiclass classifier, marks the photos whose top probability is
under the answer threshold as uncertain (the model's, or ``--threshold``), and writes:

  <predictions-uri>/batches/run=<run-key>/   Parquet: this run's new rows (overwritten by a retry)
  <predictions-uri>/predictions.csv          every photo scored with this model: path, top1_class,
                                             top1_probability, top3 (JSON), reason, length,
                                             modification_time, scored_by_run, uncertain,
                                             threshold, model_sha256 (the SHA-256 of the model.json
                                             that scored the photo); replaced whole

A photo that cannot be scored (corrupt, empty, not an image...) gets a row with its reason. A second
run with no new photos adds no rows; a photo never gets two rows for the same model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from image_jobs import storage
from image_jobs.backbones import WeightsUnavailableError, get_backbone
from image_jobs.cli import add_inference_args, add_read_args, check_inference_args, run_job
from image_jobs.conventions import IMAGENET_WEIGHTS, RANDOM_WEIGHTS, is_weights_file, model_changed, model_sha256
from image_jobs.decode import DEFAULT_MAX_PIXELS
from image_jobs.extraction import done_rows, list_photos, not_done, photo_partitions
from image_jobs.feature_identity import FeatureIdentityError, check_scoring, job_identity
from image_jobs.featurize import TENSORFLOW, InferenceChoice
from image_jobs.inbox import csv_frame, first_score_per_photo, make_scorer, scored_schema
from image_jobs.inference import resolve_precision, ship_ir
from image_jobs.photo_store import StoreError, StoreLocation, StoreOptions, filesystem
from image_jobs.predictor import ModelError, MulticlassModel, check_threshold, load_model_json
from image_jobs.progress import ProgressLogger
from image_jobs.session import job_logger

if TYPE_CHECKING:
    from pyspark import Accumulator, SparkContext
    from pyspark.sql import DataFrame, SparkSession

log = job_logger("score_inbox")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's command line, parsed and checked (errors exit through argparse)."""
    parser = argparse.ArgumentParser(description="Score inbox photos with a trained run's multiclass model.")
    parser.add_argument("--inbox-uri", required=True, help="folder of photos to score (any sub-folders)")
    parser.add_argument("--predictions-uri", required=True, help="this model's predictions folder")
    parser.add_argument("--model-uri", default=None,
                        help="the models folder of the run whose model scores (its multiclass/model.json)")
    parser.add_argument("--model-json-uri", default=None,
                        help="the model.json to score with: the gated model as published (models/published/...)")
    parser.add_argument("--model-sha256", default=None,
                        help="the SHA-256 the model was published with: a model.json with other bytes is refused")
    parser.add_argument("--run-key", required=True, help="path-safe key of this scoring run")
    parser.add_argument("--modified-before", required=True, help="ISO-8601: only photos modified before it")
    parser.add_argument("--batch-size", type=int, default=32, help="photos per forward pass")
    parser.add_argument("--weights-uri", default=None,
                        help="the backbone's weights, where the cluster reads them; default: the model's own")
    parser.add_argument("--summary-uri", default=None, help="also write the job's JSON summary to this file")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="decompression-bomb guard: photos with more pixels are not scored")
    parser.add_argument("--threshold", type=float, default=None,
                        help="answer threshold in [0, 1] for this run: photos whose top probability is under it "
                             "are uncertain (default: the model's own; 0 for a model without one)")
    add_inference_args(parser)
    add_read_args(parser)
    args = parser.parse_args(argv)
    if (args.model_uri is None) == (args.model_json_uri is None):
        parser.error("give the model with one of --model-uri (a run's models folder) or --model-json-uri")
    check_inference_args(parser, args)
    if args.threshold is not None:
        try:
            check_threshold(args.threshold, "--threshold")
        except ValueError as exc:
            parser.error(str(exc))
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if "/" in args.run_key or ":" in args.run_key:
        parser.error(f"--run-key must be path-safe (no '/' or ':'), got {args.run_key!r}")
    return args


def load_model(spark, args: argparse.Namespace):
    """The run's validated model and the weights the workers load; clear errors before any task starts."""
    uri = args.model_json_uri or storage.join_uri(args.model_uri, "multiclass", "model.json")
    if not storage.exists(spark, uri):
        raise ModelError(f"no model at --model-{'json-' if args.model_json_uri else ''}uri "
                         f"{args.model_json_uri or args.model_uri}: {uri} does not exist")
    data = storage.read_bytes(spark, uri)
    args.model_digest = model_sha256(data)  # every row this run writes names it
    changed = model_changed(uri, args.model_digest, args.model_sha256)
    if changed:
        raise ModelError(changed)
    model = load_model_json(data.decode("utf-8"), uri)
    try:
        backbone = get_backbone(model.backbone)
    except ValueError as exc:
        raise ModelError(f"{uri}: {exc}") from None
    weights = args.weights_uri or model.weights
    if weights == IMAGENET_WEIGHTS:
        backbone.check_imagenet_cached()
    elif weights == RANDOM_WEIGHTS:
        log.warning("the model was trained on random-weight features (a timing run): its answers mean nothing")
    elif not storage.exists(spark, weights):
        raise WeightsUnavailableError(f"the model's weights {weights} do not exist or are not readable")
    return uri, model, weights


def prepare_model(spark: SparkSession,
                  args: argparse.Namespace) -> tuple[str, MulticlassModel, str, InferenceChoice]:
    """Load and check the run's model, ship its weights (and with openvino its IR, exported here when it is
    not yet) to the executors, and refuse features of another identity than the model's; returns (uri,
    model, weights, the forward pass's runtime)."""
    model_uri, model, weights = load_model(spark, args)
    if is_weights_file(weights):
        spark.sparkContext.addFile(weights)  # shipped once to every executor, from file://, s3:// or hdfs://
    precision = resolve_precision(args.runtime, args.precision)
    note = check_scoring(model.identity, job_identity(model.backbone, weights, args.runtime, precision), model_uri)
    if note:
        log.warning("%s", note)
    inference = TENSORFLOW
    if args.runtime == "openvino":
        inference = ship_ir(spark, model.backbone, weights, precision)
    log.info("forward pass: runtime %s, precision %s%s", inference.runtime, precision,
             f", IR {inference.ir_uri}" if inference.ir_uri else "")
    return model_uri, model, weights, inference


def inbox_exists(inbox_uri: str, options: StoreOptions) -> bool:
    """Whether the inbox folder is there (a missing inbox is nothing to score, not an error)."""
    import pyarrow.fs as pafs

    location = StoreLocation.of(inbox_uri)
    return filesystem(location, options).get_file_info(location.path).type == pafs.FileType.Directory


def select_new_photos(spark: SparkSession, args: argparse.Namespace, batches_uri: str,
                      options: StoreOptions) -> tuple[int, int, DataFrame | None]:
    """The listing and the incremental selection, in Spark: photos seen, photos to score, and those photos
    (a cached dataset; None when the inbox does not exist)."""
    if not inbox_exists(args.inbox_uri, options):
        log.warning("inbox %s does not exist: nothing to score", args.inbox_uri)
        return 0, 0, None
    listing = list_photos(spark, args.inbox_uri, args.modified_before, options, classes=False)
    todo = not_done(listing, done_rows(spark, [batches_uri], args.run_key, log=log)).persist()
    n_seen, n_todo = listing.count(), todo.count()
    listing.unpersist()
    log.info("photos in the inbox: %d (modified before %s), scored earlier with this model: %d, to score: %d",
             n_seen, args.modified_before, n_seen - n_todo, n_todo)
    return n_seen, n_todo, todo


def score_counters(sc: SparkContext) -> dict[str, Accumulator]:
    """The accumulators the scoring tasks report their progress and model loads to."""
    return {"done": sc.accumulator(0), "rejected": sc.accumulator(0), "seconds": sc.accumulator(0.0),
            "model_loads": sc.accumulator(0), "load_seconds": sc.accumulator(0.0)}


def scored_rows(spark: SparkSession, args: argparse.Namespace, model: MulticlassModel, weights: str,
                todo: DataFrame, n_todo: int, counters: dict[str, Accumulator], inference: InferenceChoice,
                options: StoreOptions) -> DataFrame:
    """The scored rows (``inbox.scored_schema``) of the photos to score, read ``options.concurrency`` at a time."""
    from pyspark.sql import functions as F

    scorer = make_scorer(model, weights, args.batch_size, args.max_pixels, counters, args.threshold, inference,
                         options)
    scored = todo.repartition(photo_partitions(spark, n_todo, args.batch_size)).mapInPandas(
        scorer, scored_schema("ms"))
    return scored.select("path", "length", F.timestamp_millis("mtime_ms").alias("modificationTime"),
                         *[name for name in scored.columns if name not in ("path", "length", "mtime_ms")])


def write_batch(spark: SparkSession, args: argparse.Namespace, scored: DataFrame, n_read: int,
                counters: dict[str, Accumulator], out_batch: str) -> int:
    """Score and write this run's batch in one pass, logging progress; returns its row count."""
    from pyspark.sql import functions as F

    batch = scored.withColumn("scored_by_run", F.lit(args.run_key)).withColumn(
        "model_sha256", F.lit(args.model_digest)).persist()
    with ProgressLogger(spark, log, n_read, counters):
        n_new = batch.count()
    batch.coalesce(max(1, spark.sparkContext.defaultParallelism)).write.mode("overwrite").parquet(out_batch)
    batch.unpersist()
    return n_new


def score_new_photos(spark: SparkSession, args: argparse.Namespace, model: MulticlassModel, weights: str,
                     todo: DataFrame | None, n_todo: int, counters: dict[str, Accumulator], out_batch: str,
                     inference: InferenceChoice, options: StoreOptions) -> int:
    """Write this run's batch of new rows (or remove a stale one when nothing is new); returns its rows."""
    if not n_todo:
        if storage.delete(spark, out_batch):
            log.info("removed %s: an earlier attempt of this run wrote it, nothing is new now", out_batch)
        return 0
    scored = scored_rows(spark, args, model, weights, todo, n_todo, counters, inference, options)
    return write_batch(spark, args, scored, n_todo, counters, out_batch)


def rewrite_predictions_csv(spark: SparkSession, args: argparse.Namespace, batches_uri: str,
                            csv_uri: str) -> tuple[int, int, int]:
    """Rewrite predictions.csv from every batch, written by Spark's tasks (the driver holds no row); returns
    (rows in it, this run's photos not scored, this run's uncertain ones), counted in Spark."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    batches = storage.read_committed(spark, batches_uri, log=log, merge_schema=True)
    if batches is not None:
        every = first_score_per_photo(batches.drop("run")).persist(StorageLevel.DISK_ONLY)
    else:
        every = spark.createDataFrame([], scored_schema()).withColumn("scored_by_run", F.lit(""))
    storage.write_csv_file(csv_frame(every), csv_uri)
    this_run = F.col("scored_by_run") == args.run_key
    uncertain = (this_run & F.col("uncertain")) if "uncertain" in every.columns else F.lit(False)
    totals = every.agg(F.count("*").alias("rows"), F.sum((this_run & F.col("reason").isNotNull()).cast("long"))
                       .alias("not_scored"), F.sum(uncertain.cast("long")).alias("uncertain")).first()
    for row in every.filter(this_run & F.col("reason").isNotNull()).select("path", "reason").limit(20).collect():
        log.warning("not scored %s: %s", row.path, row.reason)
    every.unpersist()
    return int(totals["rows"]), int(totals["not_scored"] or 0), int(totals["uncertain"] or 0)


def threshold_in_use(args: argparse.Namespace, model: MulticlassModel) -> tuple[float, str]:
    """The threshold this run scores with, and where it comes from (for the log and the summary)."""
    if args.threshold is not None:
        return args.threshold, f"{args.threshold:g} from --threshold (the model's: {model.threshold_note})"
    return model.threshold, model.threshold_note


def scoring_summary(args: argparse.Namespace, model: MulticlassModel, n_seen: int, n_todo: int, n_new: int,
                    n_not_scored: int, n_total: int, counters: dict[str, Accumulator], seconds: float,
                    phase_score: float, csv_uri: str, out_batch: str, n_uncertain: int) -> dict:
    """The job's summary, from what the phases produced (no I/O)."""
    threshold, source = threshold_in_use(args, model)
    return {
        "run_key": args.run_key,
        "model_run_key": model.run_key,
        "runtime": args.runtime,
        "precision": args.precision,
        "photos_seen": n_seen,
        "skipped_scored_earlier": n_seen - n_todo,
        "scored_now": n_new - n_not_scored,
        "not_scored_now": n_not_scored,
        "uncertain_now": n_uncertain,
        "threshold": threshold,
        "threshold_source": source,
        "predictions_total": n_total,
        "model_loads": counters["model_loads"].value,
        "model_load_seconds": round(counters["load_seconds"].value, 2),
        "score_task_seconds": round(counters["seconds"].value, 2),
        "seconds": round(seconds, 2),
        "score_phase_seconds": round(phase_score, 2),
        "predictions_csv": csv_uri,
        "batch_uri": out_batch if n_new else None,
    }


def write_summary(spark: SparkSession, args: argparse.Namespace, summary: dict) -> None:
    """Write the summary to ``--summary-uri`` (if given) and log it."""
    if args.summary_uri:
        storage.write_text(spark, args.summary_uri, json.dumps(summary, indent=2))
    log.info("done: %s", json.dumps(summary))


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Score the new inbox photos, append them as this run's batch, rewrite predictions.csv."""
    started = time.perf_counter()
    model_uri, model, weights, inference = prepare_model(spark, args)
    batches_uri = storage.join_uri(args.predictions_uri, "batches")
    out_batch = storage.join_uri(batches_uri, f"run={args.run_key}")
    csv_uri = storage.join_uri(args.predictions_uri, "predictions.csv")
    log.info("model of run %s (%s, %d classes: %s) from %s", model.run_key, model.backbone, len(model.labels),
             ", ".join(model.labels), model_uri)
    log.info("answer threshold: %s; photos under it are marked uncertain", threshold_in_use(args, model)[1])

    options = StoreOptions.from_environment(args.read_concurrency)  # the listing's and the reads'
    n_seen, n_todo, todo = select_new_photos(spark, args, batches_uri, options)
    counters = score_counters(spark.sparkContext)
    n_new = score_new_photos(spark, args, model, weights, todo, n_todo, counters, out_batch, inference, options)
    if todo is not None:
        todo.unpersist()
    phase_score = time.perf_counter() - started

    n_total, n_not_scored, n_uncertain = rewrite_predictions_csv(spark, args, batches_uri, csv_uri)
    summary = scoring_summary(args, model, n_seen, n_todo, n_new, n_not_scored, n_total, counters,
                              time.perf_counter() - started, phase_score, csv_uri, out_batch, n_uncertain)
    write_summary(spark, args, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments and score the inbox under run_job; returns the exit code."""
    return run_job("score_inbox", parse_args(argv), run,
                   (ModelError, WeightsUnavailableError, FeatureIdentityError, StoreError), log)


if __name__ == "__main__":
    sys.exit(main())
