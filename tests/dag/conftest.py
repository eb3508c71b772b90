"""Fixtures of the DAG tests: the session's Airflow metadata database, and a moto server playing AWS with the
account of tests/fake_aws.py (S3 moto's too, or SeaweedFS with IMAGE_PIPELINE_TEST_S3=seaweedfs)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from fake_aws import BUCKET, FAKE_KEY_ID, FAKE_SECRET, PREFIX, REGION
from image_pipeline.compute.local.cluster import free_port


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The test session's Airflow metadata database (in the AIRFLOW_HOME tests/conftest.py made), migrated once."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy())
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@contextlib.contextmanager
def s3_endpoint(moto_server: str, tmp_path_factory):
    """moto's own S3, or SeaweedFS taking the connection's fake credentials (IMAGE_PIPELINE_TEST_S3=seaweedfs)."""
    if os.environ.get("IMAGE_PIPELINE_TEST_S3") != "seaweedfs":
        yield moto_server
        return
    from s3_server import seaweed_s3

    with seaweed_s3(tmp_path_factory.mktemp("seaweed"), access_key=FAKE_KEY_ID, secret_key=FAKE_SECRET) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def aws(moto_server, tmp_path_factory):
    """The connection and credentials pointed at moto, the bucket with 20 images of two classes and the weights."""
    from s3_server import tiny_wheelhouse

    with pytest.MonkeyPatch.context() as mp, s3_endpoint(moto_server, tmp_path_factory) as s3_url:
        for key, value in {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                           "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(key, value)
        # the simulated cluster installs nothing: a tiny wheelhouse stands in for the real one
        mp.setenv("IMAGE_PIPELINE_WHEELHOUSE_DIR", str(tiny_wheelhouse(tmp_path_factory.mktemp("wheelhouses"))))
        mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
            "conn_type": "aws", "login": FAKE_KEY_ID, "password": FAKE_SECRET,
            "extra": {"region_name": REGION, "endpoint_url": moto_server,
                      "service_config": {"s3": {"endpoint_url": s3_url}}}}))
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        # 10 per class: the default split ratios need one image on each side of a 0.1 / 0.9 split
        for key in [*(f"images/cat/{i}.jpg" for i in range(10)), *(f"images/dog/{i}.jpg" for i in range(9)),
                    "images/dog/nested/c.png"]:
            s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=b"jpeg bytes")
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/weights/mobilenet_v2_imagenet.keras", Body=b"weights")
        time.sleep(1.2)  # the run must be triggered after the images' modification times
        yield s3
