"""The DAG file parses fast, offline, without heavy imports, into the expected task graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dag_parse import HEAVY, parse_in_subprocess
from image_pipeline.conventions import BACKBONE_NAMES
from project_paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "plugins" / "image_pipeline"


@pytest.fixture(scope="module")
def local_parse():
    return parse_in_subprocess("local")


def test_parses_fast_offline_without_heavy_imports(local_parse):
    print(f"DAG parse time: {local_parse['seconds']:.2f} s")
    assert local_parse["heavy_modules"] == [], local_parse["heavy_modules"]
    assert local_parse["dag_id"] == "image_classification"
    assert "Image classification on a transient Spark cluster" in local_parse["doc_md"]


def test_local_task_graph(local_parse):
    tasks = local_parse["tasks"]
    assert set(tasks) == {"plan_run", "stage_artifacts", "create_cluster", "extract_features", "train_models",
                          "evaluate_models", "publish_report", "terminate_cluster"}
    assert tasks["create_cluster"]["is_setup"] and tasks["terminate_cluster"]["is_teardown"]
    assert tasks["terminate_cluster"]["trigger_rule"] == "all_done_setup_success"
    assert not any(t["is_setup"] or t["is_teardown"] for name, t in tasks.items()
                   if name not in ("create_cluster", "terminate_cluster"))
    assert tasks["extract_features"]["upstream"] == ["create_cluster", "plan_run", "stage_artifacts"]
    assert tasks["train_models"]["upstream"] == ["create_cluster", "extract_features", "plan_run", "stage_artifacts"]
    assert "train_models" in tasks["evaluate_models"]["upstream"]
    assert "evaluate_models" in tasks["terminate_cluster"]["upstream"]
    assert "create_cluster" in tasks["terminate_cluster"]["upstream"]
    assert {"terminate_cluster", "evaluate_models"} <= set(tasks["publish_report"]["upstream"])
    assert tasks["create_cluster"]["retries"] == 0 and tasks["publish_report"]["retries"] == 0
    assert tasks["extract_features"]["operator"] == "LocalSparkStepOperator"


def test_emr_task_graph():
    parsed = parse_in_subprocess("emr")
    heavy = set(parsed["heavy_modules"]) - {"boto3"}  # the Amazon provider's operators import boto3
    assert heavy == set(), heavy
    tasks = parsed["tasks"]
    assert set(tasks) == {"plan_run", "stage_artifacts", "emr_requests", "create_cluster", "add_steps",
                          "extract_features", "train_models", "evaluate_models", "publish_report",
                          "terminate_cluster"}
    assert tasks["create_cluster"]["operator"] == "EmrCreateJobFlowOperator" and tasks["create_cluster"]["is_setup"]
    assert tasks["terminate_cluster"]["is_teardown"]
    assert tasks["terminate_cluster"]["trigger_rule"] == "all_done_setup_success"
    assert tasks["add_steps"]["retries"] == 0 and tasks["create_cluster"]["retries"] == 0
    for step, previous in [("extract_features", "add_steps"), ("train_models", "extract_features"),
                           ("evaluate_models", "train_models")]:
        assert tasks[step]["operator"] == "EmrStepWithLogsSensor"
        assert previous in tasks[step]["upstream"]
    assert tasks["extract_features"]["deferrable"] is True
    assert tasks["extract_features"]["max_attempts"] * tasks["extract_features"]["poke_interval"] >= 6 * 3600
    assert "evaluate_models" in tasks["terminate_cluster"]["upstream"]
    assert parsed["params"]["emr_instance_type"]["schema"]["enum"]
    for name in ("emr_release_label", "emr_core_instance_count", "emr_spot_task_count", "emr_idle_timeout_minutes",
                 "emr_subnet_id"):
        assert parsed["params"][name]["description"], name


def test_schedule_and_params(local_parse):
    assert local_parse["schedule"] == "@weekly" and local_parse["catchup"] is False
    params = local_parse["params"]
    for name in ("labels", "backbone", "pair_mode", "focus_class", "split_ratios", "max_per_class", "iterations",
                 "pca_components", "test_fraction", "min_accuracy", "local_workers", "local_worker_cores"):
        assert params[name]["description"], name
    assert params["backbone"]["schema"]["enum"] == list(BACKBONE_NAMES)
    assert params["max_per_class"]["schema"]["minimum"] == 2


def test_airflow_plugin_loader_does_not_import_the_library_as_bare_modules():
    """Airflow imports every .py under plugins/ by its bare file name unless .airflowignore says no:
    report.py, settings.py, steps.py... would shadow libraries of the same name (and did: 'packaging')."""
    bare = sorted({p.stem for p in PACKAGE.rglob("*.py")} | {p.name for p in PACKAGE.rglob("*") if p.is_dir()}
                  - {"__init__", "__pycache__"})
    assert {"settings", "run_plan", "cluster", "operators", "requests", "staging"} <= set(bare)
    probe = ("from airflow import plugins_manager as pm; pm.ensure_plugins_loaded(); import sys, json; "
             f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {set(bare)!r})))")
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_module_of_the_package_imports_from_the_dag_folder_s_point_of_view():
    """As Airflow's DAG processor sees it: only dags/ and plugins/ on sys.path (no spark_jobs/, tools/,
    tests/), every module of the package imports, and none pulls in a heavy library at import."""
    modules = sorted(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
                     for p in PACKAGE.rglob("*.py"))
    assert len(modules) > 25 and "image_pipeline.compute.local.cluster" in modules
    probe = ("import importlib, json, sys; before = set(sys.modules); "
             f"[importlib.import_module(m) for m in {modules!r}]; "
             "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "dags"), str(PROJECT_ROOT / "plugins")])
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300,
                         cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "image_jobs" not in imported and "image_tools" not in imported
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
