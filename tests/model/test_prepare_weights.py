"""One recipe prepares the offline weights (image_tools.prepare_weights): ``make weights`` and the compose stack's
``airflow-prepare-data`` service run it alike, the latter as the Airflow user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
import yaml

from image_jobs.conventions import PREPARED_WEIGHTS
from image_tools.prepare_weights import convert, prepare
from project_paths import PROJECT_ROOT

RECIPE = re.compile(r"python -m image_tools\.prepare_weights --dir (\S+)")


def test_make_and_the_compose_stack_prepare_the_weights_with_one_recipe():
    services = yaml.safe_load((PROJECT_ROOT / "docker-compose.yaml").read_text())["services"]
    running = {name: RECIPE.findall(" ".join(spec.get("command") or [])) for name, spec in services.items()}
    assert {name: dirs for name, dirs in running.items() if dirs} == {"airflow-prepare-data": ["data/weights"]}
    service = services["airflow-prepare-data"]
    script = service["command"][-1]
    # where the compose recipe writes: data/weights under /opt/airflow, which is the checkout's data/
    assert script.startswith("cd /opt/airflow &&") and "./data:/opt/airflow/data" in service["volumes"]
    in_compose = PurePosixPath("/opt/airflow") / running["airflow-prepare-data"][0]
    assert in_compose == PurePosixPath("/opt/airflow/data/weights")
    # as the Airflow user, through the image's entrypoint (which gives an AIRFLOW_UID without an account its home)
    assert service["user"] == "${AIRFLOW_UID:-50000}:0" and "entrypoint" not in service
    for other in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert services[other]["depends_on"]["airflow-prepare-data"]["condition"] == "service_completed_successfully"
    # the only root service writes neither the weights nor the images
    as_root = [name for name, spec in services.items() if str(spec.get("user", "")).startswith("0:")]
    assert as_root == ["airflow-init"]
    init = " ".join(services["airflow-init"]["command"])
    assert "weights" not in init and "sample_images" not in init

    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    made = subprocess.run(["make", "-n", "weights"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert made.returncode == 0, made.stderr
    in_make = RECIPE.findall(made.stdout.replace('"', ""))
    assert in_make == [str(PROJECT_ROOT / "data" / "weights")]
    for command in (made.stdout, script):  # the same import path: the tools and the jobs' library
        assert re.search(r"PYTHONPATH=\S*tools:\S*spark_jobs", command), command


def test_the_recipe_converts_what_is_missing_and_exports_each_ir_once(converted_weights, tmp_path):
    assert set(PREPARED_WEIGHTS) == {"mobilenet_v2", "efficientnet_lite2"}  # both models, by default
    weights = tmp_path / PREPARED_WEIGHTS["mobilenet_v2"]
    shutil.copyfile(converted_weights, weights)  # converted already: kept, not converted again
    before = weights.stat().st_mtime_ns
    first = prepare(tmp_path, ("mobilenet_v2",))["mobilenet_v2"]
    assert first.is_file() and first.with_suffix(".bin").stat().st_size > 1_000_000
    assert first.parent.parent == tmp_path and weights.stat().st_mtime_ns == before
    exported = first.stat().st_mtime_ns
    assert prepare(tmp_path, ("mobilenet_v2",))["mobilenet_v2"] == first and first.stat().st_mtime_ns == exported
    with pytest.raises(ValueError, match="vgg16"):
        convert("vgg16", tmp_path / "vgg16.keras")  # no offline checkpoint for it
