"""The extraction job with its photos in a real S3-compatible server (SeaweedFS): listed and read by Spark's
Python workers over s3://, directly, through a proxy that adds 50 ms to every request, and through one that
throttles (503 SlowDown): the same features as from local files, every photo exactly once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import extract_features
from image_tools.sample_images import write_sample_images
from latency_proxy import latency_proxy
from s3_server import ACCESS_KEY, SECRET_KEY, seaweed_s3

pytestmark = pytest.mark.spark

FAR_FUTURE = "2100-01-01T00:00:00Z"
BUCKET, PREFIX = "photos", "pets/images"
HOSTILE = "chat noir é [1]"  # spaces, accents and glob characters survive the round trip through S3 keys


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """3 classes x 5 generated photos and one hostile-named class, on local disk and in the bucket (written with
    pyarrow's S3 client: the Spark 3.5 test environment, like the EMR nodes, has no boto3)."""
    import pyarrow.fs as pafs

    root = tmp_path_factory.mktemp("s3-extract")
    images = root / "images"
    write_sample_images(images, n_classes=3, per_class=5, seed=21)
    (images / HOSTILE).mkdir()
    (images / HOSTILE / "photo 1.jpg").write_bytes(next((images / "Abyssinian").iterdir()).read_bytes())
    with seaweed_s3(root / "weed") as endpoint:
        client = pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=endpoint,
                                   region="us-east-1", allow_bucket_creation=True)
        client.create_dir(BUCKET)
        for path in sorted(images.rglob("*")):
            if path.is_file():
                with client.open_output_stream(f"{BUCKET}/{PREFIX}/{path.relative_to(images)}") as out:
                    out.write(path.read_bytes())
        yield {"endpoint": endpoint, "root": root, "n": sum(1 for p in images.rglob("*") if p.is_file())}


def point_workers_at(spark, monkeypatch, endpoint: str) -> None:
    """Credentials for the driver and the Python workers (the SDK's environment variables, as an EMR node's
    instance profile would give them), and the endpoint the driver passes on to the workers."""
    for name, value in {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                        "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
        monkeypatch.setitem(spark.sparkContext.environment, name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)


def extract(spark, images_uri: str, out: Path, weights: Path, run_key: str) -> dict:
    return extract_features.run(spark, extract_features.parse_args([
        "--images-uri", images_uri, "--features-uri", f"file://{out}/features", "--rejects-uri",
        f"file://{out}/rejects", "--backbone", "mobilenet_v2", "--weights-uri", f"file://{weights}",
        "--run-key", run_key, "--modified-before", FAR_FUTURE, "--batch-size", "4", "--read-concurrency", "8"]))


def features_by_photo(spark, out: Path, prefix: str) -> dict[str, tuple[str, np.ndarray]]:
    from image_jobs import storage

    rows = storage.read_committed(spark, f"file://{out}/features/backbone=mobilenet_v2").collect()
    assert len({r.path for r in rows}) == len(rows)  # every photo once
    return {r.path.removeprefix(prefix): (r.label, np.asarray(r.features)) for r in rows}


@pytest.fixture(scope="module")
def local_features(spark, bucket, converted_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-out")
    summary = extract(spark, f"file://{bucket['root']}/images", out, converted_weights, "local")
    assert summary["features_written"] == bucket["n"]
    return features_by_photo(spark, out, f"file:{bucket['root']}/images/")


def assert_same_features(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, (label, vector) in expected.items():
        assert got[key][0] == label
        np.testing.assert_array_equal(got[key][1], vector)


def test_photos_in_s3_give_the_features_of_the_same_local_files(spark, bucket, local_features, converted_weights,
                                                                tmp_path, monkeypatch):
    point_workers_at(spark, monkeypatch, bucket["endpoint"])
    summary = extract(spark, f"s3://{BUCKET}/{PREFIX}", tmp_path, converted_weights, "s3")
    assert (summary["images_seen"], summary["features_written"], summary["rejected"]) == (bucket["n"], bucket["n"], 0)
    got = features_by_photo(spark, tmp_path, f"s3://{BUCKET}/{PREFIX}/")
    assert {label for label, _ in got.values()} >= {HOSTILE}
    assert_same_features(got, local_features)


def test_latency_and_throttling_cost_no_photo_and_no_duplicate(spark, bucket, local_features, converted_weights,
                                                              tmp_path, monkeypatch):
    """50 ms on every request and a 503 SlowDown for every 7th: the SDK's retries absorb the throttling,
    every photo is featurized exactly once, none is rejected."""
    with latency_proxy(bucket["endpoint"], delay=0.05, throttle_every=7) as proxy:
        point_workers_at(spark, monkeypatch, proxy.endpoint)
        summary = extract(spark, f"s3://{BUCKET}/{PREFIX}", tmp_path, converted_weights, "slow")
    assert (summary["features_written"], summary["rejected"]) == (bucket["n"], 0)
    assert proxy.throttled > 0 and proxy.methods["GET"] >= bucket["n"] and proxy.methods["HEAD"] >= bucket["n"]
    assert_same_features(features_by_photo(spark, tmp_path, f"s3://{BUCKET}/{PREFIX}/"), local_features)


def test_a_missing_bucket_prefix_is_named(spark, bucket, converted_weights, tmp_path, monkeypatch):
    from image_jobs.photo_store import StoreError

    point_workers_at(spark, monkeypatch, bucket["endpoint"])
    with pytest.raises(StoreError, match=f"--images-uri s3://{BUCKET}/nothing/here does not exist"):
        extract(spark, f"s3://{BUCKET}/nothing/here", tmp_path, converted_weights, "missing")
