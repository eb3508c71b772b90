"""EMR failures as a real account produces them, each explained without masking the error.

moto (S3, and EMR where it can) on 127.0.0.1; botocore's Stubber where moto cannot produce the error
(throttling, a cluster ended by a bootstrap failure with its state-change code, a failed step's details).
The sensor and the teardown are the product's own operators, run outside a DAG with a minimal context.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from test_emr_dag import BUCKET, PREFIX, REGION, aws, moto_server  # noqa: F401  (the module's fixtures)

CLUSTER, STEP = "j-2AXXXXXXGAPLF", "s-1V0XXXXXXXXXX"
LOGS = f"s3://{BUCKET}/{PREFIX}/logs"
CONTEXT = {"ti": SimpleNamespace(xcom_push=lambda **kwargs: None)}
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def step_response(state: str, details: dict | None = None) -> dict:
    status = {"State": state, "Timeline": {"CreationDateTime": NOW}}
    if details:
        status["FailureDetails"] = details
    return {"Step": {"Id": STEP, "Name": "extract_features", "Status": status,
                     "Config": {"Jar": "command-runner.jar", "Args": []}, "ActionOnFailure": "CANCEL_AND_WAIT"},
            "ResponseMetadata": {"HTTPStatusCode": 200}}


def cluster_response(state: str, code: str | None = None, message: str | None = None) -> dict:
    reason = {k: v for k, v in (("Code", code), ("Message", message)) if v}
    return {"Cluster": {"Id": CLUSTER, "Name": "c", "LogUri": f"{LOGS}/",
                        "Status": {"State": state, "StateChangeReason": reason,
                                   "Timeline": {"CreationDateTime": NOW}}}}


@pytest.fixture
def stubbed(moto_server):  # noqa: F811
    """An EMR client that does not retry (the errors below are what is left after botocore's retries)."""
    client = boto3.client("emr", region_name=REGION, endpoint_url=moto_server,
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def sensor_on(client):
    from image_pipeline.compute.emr.operators import EmrStepWithLogsSensor

    sensor = EmrStepWithLogsSensor(task_id="extract_features", job_flow_id=CLUSTER, step_id=STEP, logs_uri=LOGS,
                                   aws_conn_id="aws_default", deferrable=False, poke_interval=1)
    sensor.__dict__["hook"] = SimpleNamespace(conn=client, conn_region_name=REGION, conn_partition="aws")
    return sensor


def put_log(s3, uri: str, text: str) -> None:
    s3.put_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"), Body=gzip.compress(text.encode()))


def test_throttling_during_a_poke_is_polled_again_and_other_api_errors_surface_unchanged(aws, stubbed):  # noqa: F811
    from botocore.exceptions import ClientError

    client, stubber = stubbed
    sensor = sensor_on(client)
    stubber.add_client_error("describe_step", service_error_code="ThrottlingException",
                             service_message="Rate exceeded", http_status_code=400)
    stubber.add_response("describe_step", step_response("RUNNING"))
    stubber.add_response("describe_cluster", cluster_response("RUNNING"))  # the provider's log link
    stubber.add_response("describe_step", step_response("COMPLETED"))
    stubber.add_response("describe_cluster", cluster_response("RUNNING"))
    assert [sensor.poke(CONTEXT) for _ in range(3)] == [False, False, True]

    stubber.add_client_error("describe_step", service_error_code="AccessDeniedException",
                             service_message="not authorized to perform: elasticmapreduce:DescribeStep",
                             http_status_code=400)
    with pytest.raises(ClientError, match="elasticmapreduce:DescribeStep"):  # the real error, not a TypeError
        sensor.poke(CONTEXT)


def test_a_cluster_ended_by_its_bootstrap_fails_the_first_sensor_with_the_reason_and_the_log(aws, stubbed):  # noqa: F811
    from airflow.exceptions import AirflowException

    client, stubber = stubbed
    message = "On the master instance (i-0abc123), bootstrap action 1 returned a non-zero return code"
    put_log(aws, f"{LOGS}/{CLUSTER}/node/i-0abc123/bootstrap-actions/1/stderr.gz",
            "ERROR: Could not find a version that satisfies the requirement tensorflow-cpu==2.21.0")
    stubber.add_response("describe_step", step_response("PENDING"))
    stubber.add_response("describe_cluster", cluster_response("STARTING"))  # the provider's log link
    stubber.add_response("describe_cluster", cluster_response("TERMINATED_WITH_ERRORS", "BOOTSTRAP_FAILURE", message))
    # the explanation's own look-ups
    stubber.add_response("describe_step", step_response("CANCELLED"))
    stubber.add_response("describe_cluster", cluster_response("TERMINATED_WITH_ERRORS", "BOOTSTRAP_FAILURE", message))
    stubber.add_response("list_instances", {"Instances": [{"Id": "ci-1", "Ec2InstanceId": "i-0abc123"}]})
    with pytest.raises(AirflowException) as raised:
        sensor_on(client).poke(CONTEXT)
    assert "TERMINATED_WITH_ERRORS: BOOTSTRAP_FAILURE" in str(raised.value) and message in str(raised.value)
    note = "\n".join(raised.value.__notes__)
    assert f"{LOGS}/{CLUSTER}/node/i-0abc123/bootstrap-actions/" in note
    assert "Could not find a version that satisfies the requirement tensorflow-cpu" in note  # the log's tail


def test_a_step_failed_before_its_logs_shipped_names_where_they_will_be(aws, stubbed):  # noqa: F811
    from airflow.exceptions import AirflowException

    client, stubber = stubbed
    failed = step_response("FAILED", {"Reason": "Unknown Error.", "LogFile": None})
    failed["Step"]["Status"]["FailureDetails"].pop("LogFile")
    stubber.add_response("describe_step", failed)
    stubber.add_response("describe_cluster", cluster_response("WAITING"))
    stubber.add_response("describe_step", failed)
    stubber.add_response("describe_cluster", cluster_response("WAITING"))
    with pytest.raises(AirflowException, match="EMR job failed") as raised:  # the provider's own exception
        sensor_on(client).poke(CONTEXT)
    note = "\n".join(raised.value.__notes__)
    assert f"{LOGS}/{CLUSTER}/steps/{STEP}/stderr.gz" in note and "not readable yet" in note


def test_in_cluster_mode_the_driver_container_log_is_named_and_read(aws, stubbed):  # noqa: F811
    from airflow.exceptions import AirflowException

    client, stubber = stubbed
    app = "application_1767225600000_0003"
    put_log(aws, f"{LOGS}/{CLUSTER}/steps/{STEP}/stderr.gz",
            f"INFO Client: Submitted application {app}\nException in thread main: User application exited with 1")
    failed = step_response("FAILED", {"Reason": "Unknown Error."})
    for _ in range(2):  # the poke, then the explanation
        stubber.add_response("describe_step", failed)
        stubber.add_response("describe_cluster", cluster_response("WAITING"))
    with pytest.raises(AirflowException) as raised:
        sensor_on(client).poke(CONTEXT)
    note = "\n".join(raised.value.__notes__)
    assert f"{LOGS}/{CLUSTER}/containers/{app}/" in note and "container logs not readable yet" in note

    # later, the containers' logs are there: the driver's own words come first
    put_log(aws, f"{LOGS}/{CLUSTER}/containers/{app}/container_1767225600000_0003_01_000001/stderr.gz",
            "Traceback (most recent call last):\n"
            "2026-03-01 10:00:01 ERROR train_models: class 'pug' has 1 image(s); at least 10 are needed")
    put_log(aws, f"{LOGS}/{CLUSTER}/containers/{app}/container_1767225600000_0003_01_000002/stderr.gz",
            "executor log")
    for _ in range(2):
        stubber.add_response("describe_step", failed)
        stubber.add_response("describe_cluster", cluster_response("WAITING"))
    with pytest.raises(AirflowException) as raised:
        sensor_on(client).poke(CONTEXT)
    note = raised.value.__notes__[0]
    assert note.splitlines()[0] == "cause: the job stopped on its input: class 'pug' has 1 image(s); " \
                                   "at least 10 are needed"
    assert "container_1767225600000_0003_01_000001/stderr.gz" in note


def test_an_api_error_while_explaining_is_said_never_raised(aws, stubbed):  # noqa: F811
    from airflow.exceptions import AirflowException

    client, stubber = stubbed
    stubber.add_response("describe_step", step_response("FAILED", {"Reason": "Unknown Error."}))
    stubber.add_response("describe_cluster", cluster_response("WAITING"))
    stubber.add_client_error("describe_step", service_error_code="ThrottlingException", http_status_code=400)
    stubber.add_client_error("describe_cluster", service_error_code="ThrottlingException", http_status_code=400)
    with pytest.raises(AirflowException, match="EMR job failed") as raised:
        sensor_on(client).poke(CONTEXT)
    note = "\n".join(raised.value.__notes__)
    assert f"step {STEP}: could not be read (ClientError" in note and "ThrottlingException" in note


def moto_cluster(emr) -> str:
    group = {"InstanceType": "m5.xlarge", "Market": "ON_DEMAND"}
    return emr.run_job_flow(
        Name="cost", ReleaseLabel="emr-7.13.0", JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole_V2",
        Instances={"KeepJobFlowAliveWhenNoSteps": True, "InstanceGroups": [
            {**group, "InstanceRole": "MASTER", "InstanceCount": 1},
            {**group, "InstanceRole": "CORE", "InstanceCount": 2},
            {**group, "InstanceRole": "TASK", "InstanceCount": 2, "Market": "SPOT"}]})["JobFlowId"]


@pytest.mark.parametrize("deferrable", [False, True])
def test_the_teardown_waits_for_terminated_and_costs_the_instances_that_ran(aws, moto_server, deferrable):  # noqa: F811
    from airflow.sdk.exceptions import TaskDeferred

    from image_pipeline.compute.emr.operators import EmrTerminateWithCostOperator

    emr = boto3.client("emr", region_name=REGION, endpoint_url=moto_server)
    cluster_id = moto_cluster(emr)
    op = EmrTerminateWithCostOperator(task_id="terminate_cluster", job_flow_id=cluster_id, aws_conn_id="aws_default",
                                      prices={"m5.xlarge": 0.24}, region=REGION, deferrable=deferrable,
                                      waiter_delay=1, waiter_max_attempts=5)
    if deferrable:  # the provider's global default_deferrable on: the summary comes from execute_complete
        with pytest.raises(TaskDeferred):
            op.execute(CONTEXT)
        summary = op.execute_complete(CONTEXT, {"status": "success", "job_flow_id": cluster_id})
    else:
        summary = op.execute(CONTEXT)
    assert emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == "TERMINATED"
    assert summary["cluster_id"] == cluster_id and summary["backend"] == "emr"
    assert summary["instances"] == {"m5.xlarge on-demand": 3, "m5.xlarge spot": 2}
    assert summary["hourly_price_usd"] == round(5 * 0.24, 3)
    assert summary["estimated_cost_usd"] >= round(5 * 0.24 / 60, 2)  # one minute at least per instance
    assert cluster_id in summary["console_link"]
    assert timedelta(0) <= timedelta(hours=summary["hours"]) < timedelta(minutes=5)
