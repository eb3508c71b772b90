"""The EMR bootstrap action for real: the staged wheelhouse installed offline into a fresh Python 3.11.

The wheelhouse is the real one (``make wheelhouse``; ``make test`` builds it first), staged by
``stage_s3`` into a real S3-compatible server (SeaweedFS on 127.0.0.1) and copied from there into a
local folder that stands in for S3. The staged script then runs here as on a node, with the
arguments the RunJobFlow request gives it: ``aws`` copies from that folder, ``sudo`` runs its
arguments, ``dnf`` records what it is asked for (and gives the interpreter its pip with
``ensurepip``), the node's interpreter is a venv made without pip, and pip has no network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from dataclasses import asdict
from pathlib import Path

import airflow.sdk  # noqa: F401  Airflow binds its logging to the streams of its first import
import pytest

from image_pipeline.compute.emr.requests import job_flow_overrides, load_emr_settings
from image_pipeline.compute.emr.wheelhouse import (
    REQUIREMENTS,
    WheelhouseError,
    complete_wheelhouse,
    read_manifest,
    requirements_hash,
    wheelhouse_root,
    write_manifest,
)
from image_pipeline.compute.staging import stage_s3
from s3_server import seaweed_bucket

pytestmark = pytest.mark.slow  # installs TensorFlow and the rest into a fresh venv (a minute or two)

BUCKET, PREFIX = "pipeline", "prod"
ARTIFACTS_URI = f"s3://{BUCKET}/{PREFIX}/artifacts"
CONN_ID = "bootstrap_s3"  # a connection id of its own (other modules point theirs at other servers)
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing answers there
SCRIPT = Path(__file__).resolve().parents[2] / "bootstrap" / "install_python_deps.sh"

AWS_SHIM = r"""
# aws s3 cp [--recursive] [--only-show-errors] s3://<bucket>/<key> <path>, from $FAKE_S3/<bucket>/<key>
set -euo pipefail
echo "aws $*" >> "$CALLS"
if [ -n "${AWS_SHIM_FAIL:-}" ]; then echo "Could not connect to the endpoint URL" >&2; exit 255; fi
[ "$1 $2" = "s3 cp" ] || { echo "aws shim: only 's3 cp' is known, got: $*" >&2; exit 2; }
shift 2
recursive=""
paths=()
for arg in "$@"; do
  case "$arg" in
    --recursive) recursive=1 ;;
    --only-show-errors) ;;
    --*) echo "aws shim: unknown option $arg" >&2; exit 2 ;;
    *) paths+=("$arg") ;;
  esac
done
source="$FAKE_S3/${paths[0]#s3://}"
if [ -n "$recursive" ]; then
  mkdir -p "${paths[1]}"
  if [ -d "$source" ]; then cp -R "$source/." "${paths[1]}/"; fi  # as on S3: an empty prefix copies nothing
else
  cp "$source" "${paths[1]}"
fi
"""
DNF_SHIM = """
echo "dnf $*" >> "$CALLS"
for package in "$@"; do
  if [ "$package" = python3.11-pip ]; then "$BOOTSTRAP_PYTHON" -m ensurepip --default-pip > /dev/null; fi
done
"""


def pins() -> dict[str, str]:
    """The requirements file's pins, name -> version."""
    lines = (line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return dict(line.split("==") for line in lines if line)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def keys(client, prefix: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def write_shim(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body.lstrip("\n"))
    path.chmod(0o755)


def node_interpreter(folder: Path) -> str:
    """A fresh Python 3.11 without pip, as on a node whose image lacks python3.11-pip."""
    python311 = shutil.which("python3.11")
    if python311 is None:
        pytest.fail("python3.11 is not on PATH: the bootstrap test needs it for the nodes' interpreter")
    subprocess.run([python311, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    return str(folder / "bin" / "python")


def run_bootstrap(root: Path, script: Path, args: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    """The bootstrap as on a node: shims for aws, sudo and dnf first on PATH, pip denied the network."""
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    write_shim(bin_dir, "aws", AWS_SHIM)
    write_shim(bin_dir, "sudo", 'exec "$@"')
    write_shim(bin_dir, "dnf", DNF_SHIM)
    (root / "tmp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k.lower() not in ("pythonpath", "virtual_env", "no_proxy")}
    env.update({"PATH": f"{bin_dir}:{os.environ['PATH']}", "BOOTSTRAP_PYTHON": node_interpreter(root / "node"),
                "BOOTSTRAP_RETRY_SECONDS": "0", "FAKE_S3": str(root / "s3"), "CALLS": str(root / "calls.log"),
                "TMPDIR": str(root / "tmp"),
                # no index, no configuration (this machine's index and find-links), proxies nobody answers
                "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "HTTPS_PROXY": DEAD_PROXY,
                "HTTP_PROXY": DEAD_PROXY, "https_proxy": DEAD_PROXY, "http_proxy": DEAD_PROXY, **extra_env})
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    folder = complete_wheelhouse(REQUIREMENTS, wheelhouse_root())
    if folder is None:
        pytest.fail(f"no wheelhouse for {REQUIREMENTS.name} (requirements hash {requirements_hash()}) in "
                    f"{wheelhouse_root()}: run `make wheelhouse` (make test builds it before the tests)")
    return folder


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, \
            seaweed_bucket(tmp_path_factory.mktemp("seaweed"), CONN_ID, BUCKET, mp) as client:
        yield client


@pytest.fixture(scope="module")
def first_staging(s3, wheelhouse) -> dict:
    return stage_s3(ARTIFACTS_URI, None, CONN_ID)


@pytest.fixture(scope="module")
def node(tmp_path_factory, s3, first_staging) -> dict:
    """The staged bootstrap run once on a fresh interpreter, from a local copy of what staging uploaded."""
    root = tmp_path_factory.mktemp("node")
    for key in keys(s3, f"{PREFIX}/artifacts/"):
        target = root / "s3" / BUCKET / key
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(BUCKET, key, str(target))
    plan = {"run_key": "r1", "root_uri": f"s3://{BUCKET}/{PREFIX}", "logs_uri": f"s3://{BUCKET}/{PREFIX}/logs",
            "batch_size": 32}
    body = job_flow_overrides(plan, asdict(load_emr_settings({})), first_staging, "image_classification")
    action = body["BootstrapActions"][0]["ScriptBootstrapAction"]
    script = root / "s3" / action["Path"].removeprefix("s3://")
    out = run_bootstrap(root, script, action["Args"])
    calls = (root / "calls.log").read_text() if (root / "calls.log").exists() else ""
    return {"out": out, "calls": calls, "python": str(root / "node" / "bin" / "python"), "args": action["Args"]}


def test_the_bootstrap_installs_every_pin_offline_from_the_staged_wheelhouse(node, first_staging):
    out = node["out"]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert node["args"] == [first_staging["wheelhouse_uri"], first_staging["requirements_uri"]]
    assert "dnf install -y python3.11 python3.11-pip" in node["calls"]  # the venv had no pip
    assert f"aws s3 cp --recursive --only-show-errors {first_staging['wheelhouse_uri']} " in node["calls"]
    installed = json.loads(subprocess.run(
        [node["python"], "-c", "import importlib.metadata as m, json; "
                               "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"],
        check=True, capture_output=True, text=True).stdout)
    installed = {normalized(name): version for name, version in installed.items()}
    assert {name: installed.get(normalized(name)) for name in pins()} == pins()
    assert "bootstrap: python deps ok" in out.stdout  # the import check
    for name, version in pins().items():
        assert f"bootstrap: installed {name}=={version}" in out.stdout
    manifest = read_manifest(complete_wheelhouse(REQUIREMENTS, wheelhouse_root()))
    assert f"{len(manifest['wheels'])} wheels, all as in its manifest" in out.stdout


def test_staging_uploads_the_wheelhouse_manifest_last_and_a_second_staging_uploads_no_wheel(
        s3, first_staging, wheelhouse):
    prefix = f"{PREFIX}/artifacts/wheelhouse-{requirements_hash(REQUIREMENTS)}/"
    assert first_staging["wheelhouse_uri"] == f"s3://{BUCKET}/{prefix.rstrip('/')}"
    wheels = read_manifest(wheelhouse)["wheels"]
    staged = keys(s3, prefix)
    assert staged == {**{prefix + w["file"]: w["size"] for w in wheels},
                      prefix + "manifest.json": (wheelhouse / "manifest.json").stat().st_size}
    uploaded_now = [key for key in first_staging["uploaded"] if key.startswith(prefix)]
    assert sorted(uploaded_now) == sorted(staged) and uploaded_now[-1] == prefix + "manifest.json"
    second = stage_s3(ARTIFACTS_URI, None, CONN_ID)
    assert second["uploaded"] == [] and keys(s3, prefix) == staged
    assert second["wheelhouse_uri"] == first_staging["wheelhouse_uri"]


def test_staging_fails_naming_the_command_when_the_wheelhouse_is_missing_and_cannot_be_built(
        s3, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_PIPELINE_WHEELHOUSE_DIR", str(tmp_path / "wheelhouses"))
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the builder's pip reaches no index
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(WheelhouseError) as failed:
        stage_s3(f"s3://{BUCKET}/offline/artifacts", None, CONN_ID)
    message, name = str(failed.value), requirements_hash(REQUIREMENTS)
    assert "`make wheelhouse`" in message and "python -m image_pipeline.compute.emr.wheelhouse" in message
    first_pin = "==".join(next(iter(pins().items())))
    assert f"requirements hash {name}" in message and first_pin in message  # pip's reason: no index has it
    assert keys(s3, "offline/") == {}  # it failed before anything was uploaded
    assert not (tmp_path / "wheelhouses" / name / "manifest.json").exists()


def tiny_wheelhouse(fake_s3: Path, requirements: Path) -> Path:
    """A staged wheelhouse of one small wheel for ``requirements``, with its manifest."""
    folder = fake_s3 / BUCKET / "small" / f"wheelhouse-{requirements_hash(requirements)}"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "tiny-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("tiny/__init__.py", "")
    write_manifest(folder, requirements)
    return folder


@pytest.mark.parametrize("fault, expected", [
    ("not staged", "no manifest.json under s3://pipeline/small/wheelhouse-"),
    ("damaged wheel", "missing or damaged wheels from s3://pipeline/small/wheelhouse-"),
    ("no S3", "failed 4 times, giving up"),
], ids=["not-staged", "damaged-wheel", "no-s3"])
def test_the_bootstrap_fails_loudly(tmp_path, fault, expected):
    requirements = tmp_path / "s3" / BUCKET / "small" / "requirements-emr.txt"
    requirements.parent.mkdir(parents=True)
    shutil.copy(REQUIREMENTS, requirements)
    folder = tiny_wheelhouse(tmp_path / "s3", requirements)
    if fault == "not staged":
        shutil.rmtree(folder)
    if fault == "damaged wheel":
        with (folder / "tiny-1.0-py3-none-any.whl").open("ab") as wheel:
            wheel.write(b"flipped on the way")
    args = [f"s3://{BUCKET}/small/{folder.name}", f"s3://{BUCKET}/small/requirements-emr.txt"]
    out = run_bootstrap(tmp_path, SCRIPT, args, **({"AWS_SHIM_FAIL": "1"} if fault == "no S3" else {}))
    assert out.returncode != 0 and expected in out.stderr, out.stderr
    assert "bootstrap: failed" in out.stderr  # the failing command is named
    assert list((tmp_path / "node").rglob("numpy")) == [] and "python deps ok" not in out.stdout
    if fault == "no S3":
        assert (tmp_path / "calls.log").read_text().count("aws s3 cp") == 4
