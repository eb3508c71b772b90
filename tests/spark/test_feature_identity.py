"""Feature identity in the stores: other weights or another precision class make features of their own, rows
written before identities existed are extracted again once, and the selection is a distributed anti-join."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

import extract_features
from image_jobs import storage
from image_jobs.feature_identity import weights_digest
from image_jobs.openvino_runtime import resolve_precision
from image_jobs.photo_listing import done_rows, list_photos, not_done
from image_jobs.photo_store import StoreOptions
from image_tools.sample_images import write_sample_images

pytestmark = pytest.mark.spark

FAR_FUTURE = "2100-01-01T00:00:00Z"


def extract(spark, root: Path, run_key: str, *weights_and_inference: str) -> dict:
    return extract_features.run(spark, extract_features.parse_args([
        "--images-uri", f"file://{root}/images", "--features-uri", f"file://{root}/features",
        "--rejects-uri", f"file://{root}/rejects", "--backbone", "mobilenet_v2", "--run-key", run_key,
        "--modified-before", FAR_FUTURE, "--batch-size", "4", *weights_and_inference]))


def identities(spark, root: Path) -> dict[tuple[str, str], int]:
    rows = storage.read_committed(spark, f"file://{root}/features/backbone=mobilenet_v2", merge_schema=True).groupBy(
        "weights_digest", "precision_class").count().collect()
    return {(r.weights_digest, r.precision_class): r["count"] for r in rows}


def test_other_weights_and_another_precision_class_extract_again(spark, tmp_path, converted_weights):
    """A random-weights run first, then the ImageNet weights: the photos are extracted again, not skipped;
    TensorFlow and OpenVINO at fp32 share rows; bf16 (where the CPU has it) makes its own."""
    write_sample_images(tmp_path / "images", n_classes=2, per_class=4, seed=41)
    weights = ["--weights-uri", f"file://{converted_weights}"]
    first = extract(spark, tmp_path, "random", "--random-weights")
    assert first["feature_identity"]["weights_digest"] == "random" and first["features_written"] == 8
    imagenet = extract(spark, tmp_path, "imagenet", *weights)
    assert (imagenet["skipped_done_earlier"], imagenet["features_written"]) == (0, 8)
    digest = weights_digest(converted_weights)
    assert imagenet["feature_identity"] == {"backbone": "mobilenet_v2", "weights_digest": digest,
                                            "precision_class": "fp32"}
    tensorflow = extract(spark, tmp_path, "tensorflow", *weights, "--runtime", "tensorflow")
    assert (tensorflow["skipped_done_earlier"], tensorflow["features_written"]) == (8, 0)
    expected = {("random", "fp32"): 8, (digest, "fp32"): 8}
    auto = extract(spark, tmp_path, "auto", *weights, "--precision", "auto")
    if resolve_precision("openvino", "auto") == "bf16":
        assert auto["feature_identity"]["precision_class"] == "bf16" and auto["features_written"] == 8
        expected[(digest, "bf16")] = 8
        again = extract(spark, tmp_path, "bf16", *weights, "--precision", "bf16")
        assert (again["skipped_done_earlier"], again["features_written"]) == (8, 0)
    else:  # auto is fp32 on this CPU: the same identity as the ImageNet run, nothing new
        assert (auto["skipped_done_earlier"], auto["features_written"]) == (8, 0)
    assert identities(spark, tmp_path) == expected


def test_rows_without_an_identity_are_extracted_again_once(spark, tmp_path, converted_weights):
    """A store written before identities existed (no identity columns): its rows are never reused; the next
    run extracts those photos again and the one after skips them."""
    write_sample_images(tmp_path / "images", n_classes=2, per_class=3, seed=42)
    weights = ["--weights-uri", f"file://{converted_weights}"]
    extract(spark, tmp_path, "written", *weights)
    for store in ("features", "rejects"):  # rewrite the run's rows as an old version of the job wrote them
        folder = tmp_path / store / "backbone=mobilenet_v2"
        (written,) = folder.glob("run=written@*")
        spark.read.parquet(str(written)).drop("weights_digest", "precision_class").write.parquet(
            str(folder / "run=legacy"))  # an old version wrote run=<key>/, without an attempt
        shutil.rmtree(written)
    assert "weights_digest" not in spark.read.parquet(f"file://{tmp_path}/features/backbone=mobilenet_v2").columns
    after = extract(spark, tmp_path, "after", *weights)
    assert (after["skipped_done_earlier"], after["features_written"]) == (0, 6)
    assert extract(spark, tmp_path, "then", *weights)["skipped_done_earlier"] == 6


def test_the_selection_is_a_distributed_anti_join(spark, tmp_path):
    """3,000 listed files, 1,000 done with the run's identity, 500 with another, 200 without one: the listing is
    made by Spark's tasks, the selection is a left anti-join in Spark's plan (no set of keys on the driver)
    and it keeps exactly the 2,000 photos not done with the run's identity."""
    images = tmp_path / "images"
    for folder in range(12):
        (images / f"class_{folder:02d}").mkdir(parents=True)
        for i in range(250):
            (images / f"class_{folder:02d}" / f"{i:04d}.jpg").write_bytes(b"x" * (1 + i % 7))
    options = StoreOptions()
    listing = list_photos(spark, f"file://{images}", FAR_FUTURE, options)
    keys = listing.orderBy("path").collect()
    assert len(keys) == 3000 and {r.label for r in keys} == {f"class_{f:02d}" for f in range(12)}
    done_uri = f"file://{tmp_path}/features/backbone=mobilenet_v2"
    identity = {"weights_digest": "sha256:" + "ab" * 32, "precision_class": "fp32"}
    for run, rows, columns in (("ours", keys[:1000], identity), ("theirs", keys[1000:1500],
                               {**identity, "precision_class": "bf16"}), ("legacy", keys[1500:1700], {})):
        frame = spark.createDataFrame([(r.path, r.label, r.length, r.mtime_ms) for r in rows],
                                      "path string, label string, length long, mtime_ms long")
        frame = frame.select("path", "label", "length", F.timestamp_millis("mtime_ms").alias("modificationTime"),
                             *[F.lit(v).alias(k) for k, v in columns.items()])
        frame.write.parquet(f"{done_uri}/run={run}")
    todo = not_done(listing, done_rows(spark, [done_uri], "now", identity))
    plan = todo._jdf.queryExecution().optimizedPlan().toString()
    assert "LeftAnti" in plan and "MapInPandas" in plan
    assert {r.path for r in todo.select("path").collect()} == {r.path for r in keys[1000:]}


def test_a_reject_that_was_not_the_files_fault_is_tried_again(spark, tmp_path):
    """Earlier versions recorded a decoder out of memory as a permanent reject: such rows are not done."""
    images = tmp_path / "images" / "cats"
    images.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (images / name).write_bytes(b"x" * 10)
    listing = list_photos(spark, f"file://{tmp_path}/images", FAR_FUTURE, StoreOptions())
    rows = {r.path: r for r in listing.collect()}
    reasons = {"a.jpg": "corrupt or truncated image: broken data stream", "b.jpg": "out of memory while decoding",
               "c.jpg": None}  # scored rows (scoring's batches) have no reason: done
    frame = spark.createDataFrame(
        [(path, r.label, r.length, r.mtime_ms, reasons[path.rsplit("/", 1)[1]]) for path, r in rows.items()
         if path.rsplit("/", 1)[1] in reasons], "path string, label string, length long, mtime_ms long, reason string")
    frame.select("path", "label", "length", F.timestamp_millis("mtime_ms").alias("modificationTime"),
                 "reason").write.parquet(f"file://{tmp_path}/rejects/run=old")
    todo = not_done(listing, done_rows(spark, [f"file://{tmp_path}/rejects"], "now"))
    assert sorted(r.path.rsplit("/", 1)[1] for r in todo.collect()) == ["b.jpg", "d.jpg"]
