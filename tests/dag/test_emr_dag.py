"""The whole DAG with the EMR backend against a moto server on 127.0.0.1 (no AWS account needed).

S3 is moto's too, or a real S3-compatible server (SeaweedFS) with IMAGE_PIPELINE_TEST_S3=seaweedfs: the
connection then sends each service to its own endpoint (the Amazon provider's ``service_config``), as
tests/mwaa/test_mwaa.py runs it.

moto creates the cluster and records the steps but never runs them: a simulator thread plays the
cluster's part, completing each step in order (the evaluation step writes the report to S3), failing
one with a stderr log under the LogUri, or ending the cluster in its bootstrap, as EMR would.
moto has no instance fleets, so these runs use instance groups (IMAGE_PIPELINE_EMR_CAPACITY=groups);
the fleets request is checked against botocore's model in tests/unit/test_emr.py.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest

from command_lines import option
from fake_aws import ACCOUNT, BUCKET, FAKE_KEY_ID, FAKE_SECRET, PREFIX, REGION
from project_paths import DAGS_DIR

pytestmark = pytest.mark.spark  # slow-ish: parses the DAG and runs it with dag.test()

PROJECT_ROOT = Path(__file__).resolve().parents[2]

ROOT = f"s3://{BUCKET}/{PREFIX}"
STEP_ORDER = ["extract_features", "train_models", "evaluate_models"]


def fake_report(s3, report_uri: str) -> None:
    """What evaluate_models writes, as the simulated cluster's evaluation step."""
    key = report_uri.removeprefix(f"s3://{BUCKET}/")
    summary = {"run_key": "k", "backbone": "mobilenet_v2", "feature_dim": 1280, "pca_components": 2,
               "pca_explained_variance_total": 0.9, "classes": ["cat", "dog"], "image_counts": {"cat": 1, "dog": 2},
               "rejects": {"count": 0}, "multiclass": {"accuracy": 0.9, "macro_f1": 0.88},
               "hardest_pairs": [{"class_1": "cat", "class_2": "dog", "mean_pct": 90.0, "min_pct": 80.0}],
               "seconds_per_step": {"train_models": 1.0}, "plots": ["confusion_matrix.png"]}
    metrics = ("class_1,class_2,split,iteration,num_model,predict_pct,nb_train,nb_test,nb_correct,model_type,"
               "fit_seconds,best_of_pair\ncat,dog,0.5,100,1,90.0,10,10,9,linear_svm,0.01,True\n")
    s3.put_object(Bucket=BUCKET, Key=f"{key}/summary.json", Body=json.dumps(summary).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{key}/metrics.csv", Body=metrics.encode())


def fake_model(s3, models_uri: str, weights_uri: str) -> None:
    """What train_models writes and publish_report reads back: the multiclass model."""
    key = models_uri.removeprefix(f"s3://{BUCKET}/")
    model = {"format": "image-pipeline-multiclass/1", "backbone": "mobilenet_v2", "labels": ["cat", "dog"],
             "weights_uri": weights_uri}
    s3.put_object(Bucket=BUCKET, Key=f"{key}/multiclass/model.json", Body=json.dumps(model).encode())


def fake_predictions(s3, args: list[str]) -> None:
    """What score_inbox writes: a prediction for every inbox photo, and its summary."""
    inbox, predictions = option(args, "--inbox-uri"), option(args, "--predictions-uri")
    photos = s3.list_objects_v2(Bucket=BUCKET, Prefix=inbox.removeprefix(f"s3://{BUCKET}/") + "/")["Contents"]
    rows = ["path,top1_class,top1_probability,top3,reason,length,modification_time,scored_by_run"]
    rows += [f"s3://{BUCKET}/{o['Key']},cat,0.9,[],,{o['Size']},"
             f"{o['LastModified'].strftime('%Y-%m-%dT%H:%M:%S.000Z')},{option(args, '--run-key')}" for o in photos]
    s3.put_object(Bucket=BUCKET, Key=predictions.removeprefix(f"s3://{BUCKET}/") + "/predictions.csv",
                  Body="\n".join(rows).encode())
    summary = {"scored_now": len(photos), "not_scored_now": 0, "skipped_scored_earlier": 0,
               "predictions_total": len(photos), "predictions_csv": f"{predictions}/predictions.csv"}
    s3.put_object(Bucket=BUCKET, Key=option(args, "--summary-uri").removeprefix(f"s3://{BUCKET}/"),
                  Body=json.dumps(summary).encode())


class ClusterSimulator(threading.Thread):
    """Completes (or fails) the moto cluster's steps in order, like EMR running them."""

    def __init__(self, s3, fail_step: str | None = None, fail_bootstrap: bool = False, polls: int = 0):
        super().__init__(daemon=True)
        self.s3, self.fail_step, self.stop_event, self.seen_args = s3, fail_step, threading.Event(), {}
        # polls: a step stays RUNNING until its sensor has asked for it this many times (DescribeStep)
        self.fail_bootstrap, self.polls, self.described = fail_bootstrap, polls, {}

    def end_in_bootstrap(self, cluster) -> None:
        """A bootstrap action fails on the primary node: EMR ends the cluster and cancels its steps."""
        instance = sorted(cluster.ec2_instances, key=lambda i: i.id)[0].ec2_instance.id
        log = "ERROR: No matching distribution found for tensorflow-cpu==2.21.0\nbootstrap: pip failed"
        self.s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/logs/{cluster.id}/node/{instance}/bootstrap-actions/1/"
                           "stderr.gz", Body=gzip.compress(log.encode()))
        cluster.state = "TERMINATED_WITH_ERRORS"
        cluster.last_state_change_reason = "Master instance failed attempting to run bootstrap action 1"
        for step in cluster.steps:
            step.state = "CANCELLED"

    def run(self) -> None:
        from moto.emr.models import emr_backends

        while not self.stop_event.wait(0.2):
            for cluster in list(emr_backends[ACCOUNT][REGION].clusters.values()):
                if self.fail_bootstrap and cluster.steps and cluster.state != "TERMINATED_WITH_ERRORS":
                    time.sleep(1.5)  # the first sensor sees its step pending first
                    self.end_in_bootstrap(cluster)
                    continue
                for step in cluster.steps:
                    if step.state in ("COMPLETED", "FAILED", "CANCELLED"):
                        continue
                    self.seen_args[step.name] = list(step.args)
                    if self.described.get(step.id, 0) < self.polls:
                        step.state = "RUNNING"  # a step that takes a while: its sensor finds it running
                        break
                    if step.name == self.fail_step:
                        # the cause sits far above the tail, deep in a stack trace, as on a real failure
                        log = "\n".join(["Caused by: java.io.IOException: No space left on device",
                                         *(f"line {i}" for i in range(100)), "ValueError: the failure's own words"])
                        key = f"{PREFIX}/logs/{cluster.id}/steps/{step.id}/stderr.gz"
                        self.s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(log.encode()))
                        step.state = "FAILED"
                        for later in cluster.steps[cluster.steps.index(step) + 1:]:
                            later.state = "CANCELLED"  # ActionOnFailure CANCEL_AND_WAIT
                    else:
                        if step.name == "train_models":
                            fake_model(self.s3, option(step.args, "--models-uri"), option(step.args, "--weights-uri"))
                        if step.name == "evaluate_models":
                            fake_report(self.s3, option(step.args, "--report-uri"))
                        if step.name == "score_inbox":
                            fake_predictions(self.s3, step.args)
                        step.state = "COMPLETED"
                    break  # one step at a time, in order


@pytest.fixture(scope="module")
def emr_dag(aws, airflow_db, moto_server):
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"IMAGE_PIPELINE_COMPUTE": "emr", "IMAGE_PIPELINE_ROOT_URI": ROOT,
                           "IMAGE_PIPELINE_RETRIES": "0", "IMAGE_PIPELINE_EMR_DEFERRABLE": "false",
                           "IMAGE_PIPELINE_EMR_POKE_SECONDS": "1", "IMAGE_PIPELINE_EMR_STEP_TIMEOUT_HOURS": "0.05",
                           "IMAGE_PIPELINE_SCHEDULE": "none", "IMAGE_PIPELINE_EMR_CAPACITY": "groups"}.items():
            mp.setenv(key, value)
        bag = DagBag(dag_folder=str(DAGS_DIR / "image_classification.py"))
        assert not bag.import_errors, bag.import_errors
        yield bag.get_dag("image_classification")


@pytest.fixture(scope="module")
def emr_scoring_dag(emr_dag):
    """image_scoring with the same EMR settings (emr_dag's environment is still in place)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / "image_scoring.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("image_scoring")


def states(dag_run) -> dict[str, str]:
    from dag_runs import task_states

    return task_states(dag_run)


def run_with_simulator(dag, s3, fail_step=None, run_conf=None, fail_bootstrap=False):
    simulator = ClusterSimulator(s3, fail_step, fail_bootstrap)
    simulator.start()
    try:
        dag_run = dag.test(run_conf=run_conf or {"emr_core_instance_count": 3, "emr_spot_task_count": 2})
    finally:
        simulator.stop_event.set()
        simulator.join()
    return dag_run, simulator


def only_cluster(emr, state_filter=None):
    clusters = emr.list_clusters(**({"ClusterStates": state_filter} if state_filter else {}))["Clusters"]
    return clusters


def assert_no_secret_anywhere(dag_run, logged: str, s3, emr, cluster_id: str) -> None:
    """The connection's key id and secret are in no task log, XCom, run plan, S3 object or EMR request."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = session.query(XComModel).filter(XComModel.dag_id == dag_run.dag_id,
                                                XComModel.run_id == dag_run.run_id).all()
        values = {(x.task_id, x.key): json.dumps(x.value, default=str) for x in xcoms}
    assert ("plan_run", "return_value") in values and ("emr_requests", "job_flow") in values
    objects = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    stored = {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in objects}
    cluster = json.dumps(emr.describe_cluster(ClusterId=cluster_id), default=str)
    steps = json.dumps(emr.list_steps(ClusterId=cluster_id), default=str)
    assert "run plan:" in logged and len(stored) > 5
    for secret in (FAKE_KEY_ID, FAKE_SECRET):
        assert secret not in logged
        assert [k for k, v in values.items() if secret in v] == []
        assert [k for k, v in stored.items() if secret.encode() in v] == []
        assert secret not in cluster and secret not in steps


def test_emr_run_creates_steps_publishes_and_terminates(emr_dag, aws, moto_server, capfd):
    emr = boto3.client("emr", endpoint_url=moto_server, region_name=REGION)
    before = {c["Id"] for c in only_cluster(emr)}
    dag_run, simulator = run_with_simulator(emr_dag, aws)
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success", states(dag_run)
    assert set(states(dag_run).values()) == {"success"}
    (cluster_id,) = {c["Id"] for c in only_cluster(emr)} - before
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Status"]["State"] in ("TERMINATING", "TERMINATED")
    assert cluster["ReleaseLabel"] == "emr-7.13.0"
    assert {t["Key"]: t["Value"] for t in cluster["Tags"]}["dag_id"] == "image_classification"
    groups = {g["InstanceGroupType"]: g for g in emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert groups["CORE"]["RequestedInstanceCount"] == 3 and groups["CORE"]["Market"] == "ON_DEMAND"
    assert groups["TASK"]["RequestedInstanceCount"] == 2 and groups["TASK"]["Market"] == "SPOT"  # spot: task nodes only
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert sorted(s["Name"] for s in steps) == sorted(STEP_ORDER) and len(steps) == 3  # added once
    labels_uri = option(simulator.seen_args["train_models"], "--labels-uri")  # plan_run wrote the class list there
    assert labels_uri == option(simulator.seen_args["extract_features"], "--labels-uri")
    labels_key = labels_uri.removeprefix(f"s3://{BUCKET}/")
    assert json.loads(aws.get_object(Bucket=BUCKET, Key=labels_key)["Body"].read()) == ["cat", "dog"]
    staged = [o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/artifacts/")["Contents"]]
    assert {k.rsplit("/", 1)[-1] for k in staged} >= {"image_jobs.zip", "extract_features.py",
                                                       "install_python_deps.sh", "requirements-emr.txt"}
    from image_pipeline.compute.emr.wheelhouse import requirements_hash

    assert f"{PREFIX}/artifacts/wheelhouse-{requirements_hash()}/manifest.json" in staged  # the nodes' wheelhouse
    report_uri = option(simulator.seen_args["evaluate_models"], "--report-uri")
    report_md = aws.get_object(Bucket=BUCKET, Key=report_uri.removeprefix(f"s3://{BUCKET}/") + "/report.md")
    assert b"Multiclass accuracy" in report_md["Body"].read()
    # the run passed its gate: it is the latest successful model, with the weights the cluster used
    latest = json.loads(aws.get_object(Bucket=BUCKET, Key=f"{PREFIX}/models/latest.json")["Body"].read())
    assert latest["report_uri"] == report_uri and latest["multiclass_accuracy"] == 0.9
    assert latest["weights_uri"] == option(simulator.seen_args["train_models"], "--weights-uri")
    assert latest["weights_uri"] == f"{ROOT}/weights/mobilenet_v2_imagenet.keras"  # on S3 already: not copied
    captured = capfd.readouterr()
    logged = captured.out
    assert f"cluster {cluster_id}:" in logged and "normalized instance hours" in logged
    assert "4 x m5.xlarge on-demand, 2 x m5.xlarge spot" in logged  # the instances that ran
    assert f"clusterDetails/{cluster_id}" in logged
    assert_no_secret_anywhere(dag_run, captured.out + captured.err, aws, emr, cluster_id)

    # a second run stages nothing new: the artifacts are named by their content hash
    dag_run, _ = run_with_simulator(emr_dag, aws)
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    again = [o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/artifacts/")["Contents"]]
    assert sorted(again) == sorted(staged)


def test_a_deployment_with_default_deferrable_on_runs_the_whole_dag(emr_dag, aws, moto_server, monkeypatch):
    """``[operators] default_deferrable = True`` (many deployments set it) and the sensors and the teardown
    deferring (IMAGE_PIPELINE_EMR_DEFERRABLE's default): add_steps still adds the steps in one call and names
    each step's id, each sensor and the teardown wait on their provider trigger (run in line by dag.test()),
    and the run succeeds. Under the switch the provider's add_steps would defer until every step ended, and
    push no step ids for the sensors."""
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True", "IMAGE_PIPELINE_EMR_DEFERRABLE": "true",
           "PYTHONPATH": os.pathsep.join(str(PROJECT_ROOT / p) for p in ("plugins", "spark_jobs", "tools", "tests"))}
    from moto.emr.models import ElasticMapReduceBackend

    # each step runs until its sensor has poked once (and found it running) and its trigger has polled once
    simulator = ClusterSimulator(aws, polls=2)
    describe_step = ElasticMapReduceBackend.describe_step

    def counted(backend, cluster_id, step_id):
        simulator.described[step_id] = simulator.described.get(step_id, 0) + 1
        return describe_step(backend, cluster_id, step_id)

    monkeypatch.setattr(ElasticMapReduceBackend, "describe_step", counted)
    simulator.start()
    try:
        done = subprocess.run([sys.executable, str(PROJECT_ROOT / "tests" / "emr_dag_probe.py"),
                               str(DAGS_DIR / "image_classification.py"), json.dumps({"emr_core_instance_count": 2})],
                              capture_output=True, text=True, env=env, timeout=900)
    finally:
        simulator.stop_event.set()
        simulator.join()
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "success" and set(result["states"].values()) == {"success"}, result["states"]
    assert result["deferrable"]["create_cluster"] is False and result["deferrable"]["add_steps"] is False
    assert all(result["deferrable"][name] is True for name in [*STEP_ORDER, "terminate_cluster"])
    # a trigger for each sensor and one for the teardown: none for add_steps
    assert (done.stdout + done.stderr).count("[DAG TEST] running trigger in line") == len(STEP_ORDER) + 1


def test_failed_step_fails_the_run_explains_why_and_terminates(emr_dag, aws, moto_server, capfd):
    emr = boto3.client("emr", endpoint_url=moto_server, region_name=REGION)
    before = {c["Id"] for c in only_cluster(emr)}
    dag_run, _ = run_with_simulator(emr_dag, aws, fail_step="train_models")
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    s = states(dag_run)
    assert s["extract_features"] == "success" and s["train_models"] == "failed"
    assert s["evaluate_models"] == "upstream_failed" and s["terminate_cluster"] == "success"
    assert s["publish_report"] == "upstream_failed"
    (cluster_id,) = {c["Id"] for c in only_cluster(emr)} - before
    assert emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] in ("TERMINATING", "TERMINATED")
    captured = capfd.readouterr()
    logged = captured.out + captured.err  # the task log, as dag.test() prints it
    assert "the failure's own words" in logged and f"{cluster_id}/steps/" in logged and "stderr.gz" in logged
    assert "cause: disk full" in logged  # found although it is not in the tail


def test_emr_scoring_scores_the_inbox_with_the_latest_model_then_skips(emr_dag, emr_scoring_dag, aws, moto_server):
    emr = boto3.client("emr", endpoint_url=moto_server, region_name=REGION)
    if "Contents" not in aws.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/models/latest.json"):
        assert str(getattr(run_with_simulator(emr_dag, aws)[0].state, "value", "")) == "success"
    latest = json.loads(aws.get_object(Bucket=BUCKET, Key=f"{PREFIX}/models/latest.json")["Body"].read())
    for name in ("team_a/1.jpg", "team_a/2.png", "team_b/3.jpeg"):
        aws.put_object(Bucket=BUCKET, Key=f"{PREFIX}/inbox/{name}", Body=b"photo bytes")
    time.sleep(1.2)  # the run must start after the photos' modification times
    before = {c["Id"] for c in only_cluster(emr)}
    dag_run, simulator = run_with_simulator(emr_scoring_dag, aws, run_conf={"batch_size": 8})
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success", states(dag_run)
    assert set(states(dag_run).values()) == {"success"}
    (cluster_id,) = {c["Id"] for c in only_cluster(emr)} - before
    assert emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] in ("TERMINATING", "TERMINATED")
    tags = {t["Key"]: t["Value"] for t in emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Tags"]}
    assert tags["dag_id"] == "image_scoring"
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert step["Name"] == "score_inbox"
    args = simulator.seen_args["score_inbox"]
    assert option(args, "--inbox-uri") == f"{ROOT}/inbox" and option(args, "--model-json-uri") == latest["model_uri"]
    assert option(args, "--model-sha256") == latest["model_sha256"]  # the gated model, checked by its digest
    assert option(args, "--predictions-uri") == f"{ROOT}/predictions/{latest['run_key']}"
    assert option(args, "--weights-uri") == latest["weights_uri"] and option(args, "--batch-size") == "8"

    # every inbox photo has its prediction from this model now: the next poll starts no cluster
    before = {c["Id"] for c in only_cluster(emr)}
    dag_run, _ = run_with_simulator(emr_scoring_dag, aws)
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    assert states(dag_run)["plan_scoring"] == "skipped" and states(dag_run)["create_cluster"] == "skipped"
    assert {c["Id"] for c in only_cluster(emr)} == before


def test_a_cluster_that_never_reaches_its_steps_fails_the_first_sensor_with_its_reason(emr_dag, aws, moto_server,
                                                                                         capfd):
    emr = boto3.client("emr", endpoint_url=moto_server, region_name=REGION)
    before = {c["Id"] for c in only_cluster(emr)}
    dag_run, _ = run_with_simulator(emr_dag, aws, fail_bootstrap=True)
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    s = states(dag_run)
    assert s["extract_features"] == "failed" and s["train_models"] == "upstream_failed"
    assert s["terminate_cluster"] == "success"  # the teardown still runs (and costs the cluster)
    (cluster_id,) = {c["Id"] for c in only_cluster(emr)} - before
    logged = "".join(capfd.readouterr())
    assert f"cluster {cluster_id} TERMINATED_WITH_ERRORS" in logged
    assert "Master instance failed attempting to run bootstrap action 1" in logged
    assert f"logs/{cluster_id}/node/" in logged and "No matching distribution found for tensorflow-cpu" in logged
