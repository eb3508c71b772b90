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
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from image_jobs import storage
from image_jobs.backbones import WeightsUnavailableError, get_backbone
from image_jobs.cli import (
    add_batch_args,
    add_inference_args,
    add_read_args,
    check_inference_args,
    check_run_args,
    run_job,
    write_summary,
)
from image_jobs.conventions import model_changed, model_sha256
from image_jobs.feature_identity import FeatureIdentity, FeatureIdentityError, check_scoring
from image_jobs.forward_pass import ShippedForwardPass, check_weights, ship_forward_pass
from image_jobs.inbox import csv_frame, first_score_per_photo, make_scorer, scored_schema
from image_jobs.photo_listing import done_rows, list_photos, not_done, photo_partitions
from image_jobs.photo_store import StoreError, StoreLocation, StoreOptions, filesystem
from image_jobs.predictor import ModelError, MulticlassModel, check_threshold, load_model_json
from image_jobs.progress import ProgressLogger, task_counters
from image_jobs.session import job_logger

if TYPE_CHECKING:
    from pyspark import Accumulator
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
    add_batch_args(parser, 32, "photos with more pixels are not scored")
    parser.add_argument("--weights-uri", default=None,
                        help="the backbone's weights, where the cluster reads them; default: the model's own")
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
    check_run_args(parser, args)
    return args


@dataclass(frozen=True)
class LoadedModel:
    """The run's model as read and checked on the driver: where it was, its content, its SHA-256 (every row
    this run writes names it) and the weights the workers load."""

    uri: str
    model: MulticlassModel
    digest: str
    weights: str


def load_model(spark: SparkSession, args: argparse.Namespace) -> LoadedModel:
    """The run's validated model and the weights the workers load; clear errors before any task starts."""
    uri = args.model_json_uri or storage.join_uri(args.model_uri, "multiclass", "model.json")
    if not storage.exists(spark, uri):
        raise ModelError(f"no model at --model-{'json-' if args.model_json_uri else ''}uri "
                         f"{args.model_json_uri or args.model_uri}: {uri} does not exist")
    data = storage.read_bytes(spark, uri)
    digest = model_sha256(data)
    changed = model_changed(uri, digest, args.model_sha256)
    if changed:
        raise ModelError(changed)
    model = load_model_json(data.decode("utf-8"), uri)
    try:
        get_backbone(model.backbone)
    except ValueError as exc:
        raise ModelError(f"{uri}: {exc}") from None
    weights = args.weights_uri or model.weights
    check_weights(spark, model.backbone, weights, f"the model's weights {weights} do not exist or are not readable",
                  "the model was trained on random-weight features (a timing run): its answers mean nothing", log)
    return LoadedModel(uri, model, digest, weights)


@dataclass(frozen=True)
class ScoringRun:
    """What the driver settled before scoring: the model, its forward pass, where this run writes and how
    the photos are read."""

    loaded: LoadedModel
    forward: ShippedForwardPass
    options: StoreOptions
    batches_uri: str
    out_batch: str
    csv_uri: str

    @property
    def model(self) -> MulticlassModel:
        return self.loaded.model


def prepare_run(spark: SparkSession, args: argparse.Namespace) -> ScoringRun:
    """Load and check the run's model, ship its weights (and with openvino its IR, exported here when it is
    not yet) to the executors, and refuse features of another identity than the model's."""
    loaded = load_model(spark, args)

    def check_identity(identity: FeatureIdentity) -> None:
        note = check_scoring(loaded.model.identity, identity, loaded.uri)
        if note:
            log.warning("%s", note)

    forward = ship_forward_pass(spark, loaded.model.backbone, loaded.weights, args.runtime, args.precision,
                                check_identity)
    log.info("forward pass: %s", forward.describe())
    batches_uri = storage.join_uri(args.predictions_uri, "batches")
    return ScoringRun(loaded, forward, StoreOptions.from_environment(args.read_concurrency), batches_uri,
                      storage.join_uri(batches_uri, f"run={args.run_key}"),
                      storage.join_uri(args.predictions_uri, "predictions.csv"))


def inbox_exists(inbox_uri: str, options: StoreOptions) -> bool:
    """Whether the inbox folder is there (a missing inbox is nothing to score, not an error)."""
    import pyarrow.fs as pafs

    location = StoreLocation.of(inbox_uri)
    return filesystem(location, options).get_file_info(location.path).type == pafs.FileType.Directory


@dataclass
class ScoringCounts:
    """What the phases counted: photos seen and to score, rows this run wrote (the not scored and uncertain
    among them), and rows in predictions.csv."""

    seen: int = 0
    todo: int = 0
    new: int = 0
    not_scored: int = 0
    uncertain: int = 0
    total: int = 0


def select_new_photos(spark: SparkSession, args: argparse.Namespace,
                      scoring: ScoringRun) -> tuple[ScoringCounts, DataFrame | None]:
    """The listing and the incremental selection, in Spark: photos seen and to score, and those photos
    (a cached dataset; None when the inbox does not exist)."""
    if not inbox_exists(args.inbox_uri, scoring.options):
        log.warning("inbox %s does not exist: nothing to score", args.inbox_uri)
        return ScoringCounts(), None
    listing = list_photos(spark, args.inbox_uri, args.modified_before, scoring.options, classes=False)
    todo = not_done(listing, done_rows(spark, [scoring.batches_uri], args.run_key, log=log)).persist()
    n_seen, n_todo = listing.count(), todo.count()
    listing.unpersist()
    log.info("photos in the inbox: %d (modified before %s), scored earlier with this model: %d, to score: %d",
             n_seen, args.modified_before, n_seen - n_todo, n_todo)
    return ScoringCounts(n_seen, n_todo), todo


def scored_rows(spark: SparkSession, args: argparse.Namespace, scoring: ScoringRun, todo: DataFrame, n_todo: int,
                counters: dict[str, Accumulator]) -> DataFrame:
    """The scored rows (``inbox.scored_schema``) of the photos to score, read ``options.concurrency`` at a time."""
    from pyspark.sql import functions as F

    scorer = make_scorer(scoring.model, scoring.forward.weights, args.batch_size, args.max_pixels, counters,
                         args.threshold, scoring.forward.inference, scoring.options)
    scored = todo.repartition(photo_partitions(spark, n_todo, args.batch_size)).mapInPandas(
        scorer, scored_schema("ms"))
    return scored.select("path", "length", F.timestamp_millis("mtime_ms").alias("modificationTime"),
                         *[name for name in scored.columns if name not in ("path", "length", "mtime_ms")])


def write_batch(spark: SparkSession, args: argparse.Namespace, scoring: ScoringRun, scored: DataFrame, n_read: int,
                counters: dict[str, Accumulator]) -> int:
    """Score and write this run's batch in one pass, logging progress; returns its row count."""
    from pyspark.sql import functions as F

    batch = scored.withColumn("scored_by_run", F.lit(args.run_key)).withColumn(
        "model_sha256", F.lit(scoring.loaded.digest)).persist()
    with ProgressLogger(spark, log, n_read, counters):
        n_new = batch.count()
    batch.coalesce(max(1, spark.sparkContext.defaultParallelism)).write.mode("overwrite").parquet(scoring.out_batch)
    batch.unpersist()
    return n_new


def score_new_photos(spark: SparkSession, args: argparse.Namespace, scoring: ScoringRun, todo: DataFrame | None,
                     n_todo: int, counters: dict[str, Accumulator]) -> int:
    """Write this run's batch of new rows (or remove a stale one when nothing is new); returns its rows."""
    if not n_todo:
        if storage.delete(spark, scoring.out_batch):
            log.info("removed %s: an earlier attempt of this run wrote it, nothing is new now", scoring.out_batch)
        return 0
    scored = scored_rows(spark, args, scoring, todo, n_todo, counters)
    return write_batch(spark, args, scoring, scored, n_todo, counters)


def rewrite_predictions_csv(spark: SparkSession, args: argparse.Namespace, scoring: ScoringRun,
                            counts: ScoringCounts) -> None:
    """Rewrite predictions.csv from every batch, written by Spark's tasks (the driver holds no row); counts
    its rows, this run's photos not scored and this run's uncertain ones into ``counts``, in Spark."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    batches = storage.read_committed(spark, scoring.batches_uri, log=log, merge_schema=True)
    if batches is not None:
        every = first_score_per_photo(batches.drop("run")).persist(StorageLevel.DISK_ONLY)
    else:
        every = spark.createDataFrame([], scored_schema()).withColumn("scored_by_run", F.lit(""))
    storage.write_csv_file(csv_frame(every), scoring.csv_uri)
    this_run = F.col("scored_by_run") == args.run_key
    uncertain = (this_run & F.col("uncertain")) if "uncertain" in every.columns else F.lit(False)
    totals = every.agg(F.count("*").alias("rows"), F.sum((this_run & F.col("reason").isNotNull()).cast("long"))
                       .alias("not_scored"), F.sum(uncertain.cast("long")).alias("uncertain")).first()
    for row in every.filter(this_run & F.col("reason").isNotNull()).select("path", "reason").limit(20).collect():
        log.warning("not scored %s: %s", row.path, row.reason)
    every.unpersist()
    counts.total, counts.not_scored = int(totals["rows"]), int(totals["not_scored"] or 0)
    counts.uncertain = int(totals["uncertain"] or 0)


def threshold_in_use(args: argparse.Namespace, model: MulticlassModel) -> tuple[float, str]:
    """The threshold this run scores with, and where it comes from (for the log and the summary)."""
    if args.threshold is not None:
        return args.threshold, f"{args.threshold:g} from --threshold (the model's: {model.threshold_note})"
    return model.threshold, model.threshold_note


def scoring_summary(args: argparse.Namespace, scoring: ScoringRun, counts: ScoringCounts,
                    counters: dict[str, Accumulator], seconds: float, phase_score: float) -> dict:
    """The job's summary, from what the phases produced (no I/O)."""
    threshold, source = threshold_in_use(args, scoring.model)
    return {
        "run_key": args.run_key,
        "model_run_key": scoring.model.run_key,
        "runtime": args.runtime,
        "precision": args.precision,
        "photos_seen": counts.seen,
        "skipped_scored_earlier": counts.seen - counts.todo,
        "scored_now": counts.new - counts.not_scored,
        "not_scored_now": counts.not_scored,
        "uncertain_now": counts.uncertain,
        "threshold": threshold,
        "threshold_source": source,
        "predictions_total": counts.total,
        "model_loads": counters["model_loads"].value,
        "model_load_seconds": round(counters["load_seconds"].value, 2),
        "score_task_seconds": round(counters["seconds"].value, 2),
        "seconds": round(seconds, 2),
        "score_phase_seconds": round(phase_score, 2),
        "predictions_csv": scoring.csv_uri,
        "batch_uri": scoring.out_batch if counts.new else None,
    }


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Score the new inbox photos, append them as this run's batch, rewrite predictions.csv."""
    started = time.perf_counter()
    scoring = prepare_run(spark, args)
    model = scoring.model
    log.info("model of run %s (%s, %d classes: %s) from %s", model.run_key, model.backbone, len(model.labels),
             ", ".join(model.labels), scoring.loaded.uri)
    log.info("answer threshold: %s; photos under it are marked uncertain", threshold_in_use(args, model)[1])

    counts, todo = select_new_photos(spark, args, scoring)
    counters = task_counters(spark.sparkContext)
    counts.new = score_new_photos(spark, args, scoring, todo, counts.todo, counters)
    if todo is not None:
        todo.unpersist()
    phase_score = time.perf_counter() - started

    rewrite_predictions_csv(spark, args, scoring, counts)
    summary = scoring_summary(args, scoring, counts, counters, time.perf_counter() - started, phase_score)
    write_summary(spark, args.summary_uri, summary, log)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments and score the inbox under run_job; returns the exit code."""
    return run_job("score_inbox", parse_args(argv), run,
                   (ModelError, WeightsUnavailableError, FeatureIdentityError, StoreError), log)


if __name__ == "__main__":
    sys.exit(main())
