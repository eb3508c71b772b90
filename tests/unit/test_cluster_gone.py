"""A step retried after its local cluster went away fails at once, naming why and what to do, instead of
spending 40 s on "Failed to connect to master" and a py4j traceback."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime

import pytest

from image_pipeline.compute.local.health import gone_reason
from image_pipeline.planning.run_plan import build_run_plan
from image_pipeline.wiring.params import PARAM_SPECS
from image_pipeline.wiring.settings import load_settings

STOP_LINE = ("2026-12-06 03:12:40,118 INFO idle for 3605 s with no application: stopping the cluster "
             "(idle timeout 60 min)")


def dead_cluster(cluster_dir, watchdog_stopped: bool) -> dict:
    """cluster.json of a cluster whose processes have exited (the pid of a finished child), with its
    watchdog's log."""
    finished = subprocess.Popen(["true"])
    finished.wait()
    cluster_dir.mkdir(parents=True)
    log = cluster_dir / "watchdog.log"
    log.write_text("2026-12-06 02:12:35,001 INFO watching the cluster\n" + (STOP_LINE + "\n" if watchdog_stopped
                                                                               else ""))
    info = {"cluster_dir": str(cluster_dir), "master_url": "spark://127.0.0.1:1", "master_webui": "http://127.0.0.1:1",
            "workers": 1, "processes": [
                {"role": "master", "pid": finished.pid, "pgid": finished.pid, "log": str(cluster_dir / "m.log")},
                {"role": "watchdog", "pid": finished.pid, "pgid": finished.pid, "log": str(log)}]}
    (cluster_dir / "cluster.json").write_text(json.dumps(info))
    return info


def test_the_reason_names_the_watchdogs_stop_or_the_missing_master(tmp_path):
    assert "its watchdog stopped it after the idle timeout: " + STOP_LINE in gone_reason(
        dead_cluster(tmp_path / "idle", True)["cluster_dir"])
    reason = gone_reason(dead_cluster(tmp_path / "killed", False)["cluster_dir"])
    assert "its master is not running" in reason and "clear this task together with its setup task" in reason
    assert "does not exist" in gone_reason(tmp_path / "never")


def test_a_step_on_a_gone_cluster_fails_at_once_without_retries(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from image_pipeline.compute.local.operators import LocalSparkStepOperator

    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": f"file://{tmp_path}"})
    params = {name: list(spec.default) if isinstance(spec.default, tuple) else spec.default
              for name, spec in PARAM_SPECS.items()}
    params.update(weights_uri="random", runtime="tensorflow")
    plan = build_run_plan(params, "r", datetime(2026, 3, 1, tzinfo=UTC), settings, {"a": 20, "b": 20}).as_dict()
    cluster = dead_cluster(tmp_path / "runs" / "r" / "cluster", True)
    step = LocalSparkStepOperator(task_id="train_models", step="train_models", plan=plan, cluster=cluster,
                                  artifacts={}, python="python3")
    started = time.monotonic()
    with pytest.raises(AirflowFailException, match="train_models not submitted: the run's local cluster at "
                                                   "spark://127.0.0.1:1 is gone: its watchdog stopped it") as failed:
        step.execute({})
    assert time.monotonic() - started < 10
    assert "create_cluster" in str(failed.value)


def test_steps_for_an_emr_cluster_that_ended_fail_with_its_reason(monkeypatch):
    """Adding steps to a terminated cluster fails before the AddJobFlowSteps call, with EMR's state-change
    reason and what to do (moto keeps the terminated cluster and its reason)."""
    import boto3
    from airflow.sdk.exceptions import AirflowFailException
    from moto import mock_aws

    from image_pipeline.compute.emr.operators import EmrAddNamedStepsOperator

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {
        "region_name": "us-east-1"}}))
    with mock_aws():
        emr = boto3.client("emr", region_name="us-east-1")
        cluster = emr.run_job_flow(Name="c", ReleaseLabel="emr-7.13.0", JobFlowRole="r", ServiceRole="s",
                                   Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1,
                                              "KeepJobFlowAliveWhenNoSteps": True})["JobFlowId"]
        emr.terminate_job_flows(JobFlowIds=[cluster])
        step = {"Name": "extract_features", "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "x.py"]}}
        operator = EmrAddNamedStepsOperator(task_id="add_steps", job_flow_id=cluster, steps=[step],
                                            aws_conn_id="aws_default")
        with pytest.raises(AirflowFailException, match=rf"steps not added: the run's cluster {cluster} TERMINATED: "
                                                       r".*clear this task together with its setup task"):
            operator.execute({})
        assert emr.list_steps(ClusterId=cluster)["Steps"] == []
