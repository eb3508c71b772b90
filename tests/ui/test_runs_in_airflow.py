"""Runs under a real scheduler (LocalExecutor), driven through the REST API as a user or the UI would.

- params that break the form's schema are refused at trigger time, naming the param; params that are
  valid in form but not in fact (missing images, unknown focus class) fail ``plan_run``, before any cluster;
- (two runs at the same time: the trigger-form test submits its run during another one);
- a step marked failed from outside (UI "mark failed"): Airflow kills the task (``on_kill`` stops
  spark-submit), the teardown still stops the cluster, no process of the run survives, the run fails;
- the fake AWS secret of the server's environment and connection is in no log, XCom or output file
  (the test makes a run of its own, then searches it and whatever the other tests' runs wrote).
"""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

import pytest

from airflow_server import (
    DAG_ID,
    SMALL,
    UI_FAKE_SECRET,
    http_json,
    processes_mentioning,
    task_instances,
    trigger,
    wait_finished,
    wait_for,
)
from image_pipeline.planning.layout import run_key_for

pytestmark = pytest.mark.spark


def task_log(server, run_id: str, task_id: str) -> str:
    folder = Path(server["home"]) / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("attempt=*.log")))


@pytest.mark.parametrize("conf,param", [
    ({"max_per_class": "many"}, "max_per_class"),
    ({"split_ratios": [0.5, 1.5]}, "split_ratios"),
    ({"backbone": "resnet9"}, "backbone"),
    ({"test_fraction": 0}, "test_fraction"),
])
def test_params_breaking_the_form_schema_are_refused_at_trigger(airflow_server, conf, param):
    with pytest.raises(urllib.error.HTTPError) as refused:
        trigger(airflow_server, conf)
    body = refused.value.read().decode()
    assert refused.value.code == 400 and param in body, body


def test_params_valid_in_form_but_not_in_fact_fail_plan_run_before_any_cluster(airflow_server):
    root = Path(airflow_server["root"])
    cases = {
        trigger(airflow_server, {"images_uri": f"file://{root}/no_such_folder"}): "param 'images_uri'",
        trigger(airflow_server, {"pair_mode": "one_vs_each", "focus_class": "unicorn"}): "param 'focus_class'",
        trigger(airflow_server, {"labels": ["Abyssinian", "zebra"]}): "param 'labels'",
    }
    for run_id, message in cases.items():
        assert wait_finished(airflow_server, run_id, 300) == "failed"
        states = {task: ti["state"] for task, ti in task_instances(airflow_server, run_id).items()}
        assert states["plan_run"] == "failed", states
        assert states["create_cluster"] in ("upstream_failed", None), states
        assert message in task_log(airflow_server, run_id, "plan_run")
        assert not (root / "runs" / run_key_for(run_id) / "cluster").exists()


def test_a_step_marked_failed_from_outside_is_killed_and_the_cluster_stopped(airflow_server):
    base, token, root = airflow_server["base"], airflow_server["token"], Path(airflow_server["root"])
    # new images, so the extraction has real work to interrupt
    from image_tools.sample_images import write_sample_images

    write_sample_images(root / "more_images", n_classes=3, per_class=40, seed=32)
    run_id = trigger(airflow_server, {**SMALL, "images_uri": f"file://{root}/more_images"})
    run_key = run_key_for(run_id)
    wait_for(lambda: task_instances(airflow_server, run_id)["extract_features"]["state"] == "running", 300,
             "extract_features to run")
    wait_for(lambda: any("SparkSubmit" in c for c in processes_mentioning(f"extract_features {run_key}")), 120,
             "spark-submit of the step")
    time.sleep(5)
    http_json(f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/extract_features", token,
              data={"new_state": "failed"}, method="PATCH")
    assert wait_finished(airflow_server, run_id, 300) == "failed"
    states = {task: ti["state"] for task, ti in task_instances(airflow_server, run_id).items()}
    assert states["extract_features"] == "failed" and states["terminate_cluster"] == "success", states
    assert states["train_models"] == "upstream_failed" and states["publish_report"] == "upstream_failed", states
    wait_for(lambda: processes_mentioning(run_key) == [], 60, "every process of the run to exit")
    # the task's supervisor writes the killed attempt's log as it winds down, after the run is finished
    wait_for(lambda: "killing spark-submit of extract_features" in task_log(airflow_server, run_id, "extract_features"),
             120, "the killed attempt's log to say it killed spark-submit")
    assert not list((root / "features" / "backbone=mobilenet_v2").glob(f"run={run_key}@*/_SUCCESS"))


@pytest.fixture
def finished_run(airflow_server) -> str:
    """A run of this test's own that went through every task (the other tests' runs are searched too)."""
    run_id = trigger(airflow_server, SMALL)
    assert wait_finished(airflow_server, run_id) == "success"
    return run_id


@pytest.mark.after_other_runs
def test_no_secret_in_any_log_xcom_or_output(airflow_server, finished_run):
    home, root = Path(airflow_server["home"]), Path(airflow_server["root"])
    run_key = run_key_for(finished_run)
    searched = [p for folder in (home / "logs", root / "runs", root / "features", root / "rejects")
                for p in folder.rglob("*") if p.is_file()]
    searched.append(home / "airflow.db")  # XComs (the run plans), run confs, task states
    # the searched files include the finished run's task logs, report and features
    assert any(f"run_id={finished_run}" in str(p) for p in searched)
    assert any(run_key in str(p) and p.name == "report.md" for p in searched)
    for secret in (UI_FAKE_SECRET, "AKIAUITESTKEY"):
        assert [str(p) for p in searched if secret.encode() in p.read_bytes()] == []
