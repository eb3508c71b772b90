"""EMR failures as a real account produces them, each explained without masking the error.

moto (S3, and EMR where it can, its answers scripted in-process where EMR's differ: throttling, a denial, a
slow termination) on 127.0.0.1; botocore's Stubber for the sensor's own client where moto cannot produce the
answer (a cluster ended by a bootstrap failure with its state-change code, a failed step's details).
The sensor and the teardown are the product's own operators, run outside a DAG with a minimal context.
"""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from fake_aws import ACCOUNT, BUCKET, PREFIX, REGION

CLUSTER, STEP = "j-2AXXXXXXGAPLF", "s-1V0XXXXXXXXXX"
LOGS = f"s3://{BUCKET}/{PREFIX}/logs"
CONTEXT = {"ti": SimpleNamespace(xcom_push=lambda **kwargs: None)}
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def step_response(state: str, details: dict | None = None, step_id: str = STEP) -> dict:
    status = {"State": state, "Timeline": {"CreationDateTime": NOW}}
    if details:
        status["FailureDetails"] = details
    return {"Step": {"Id": step_id, "Name": "extract_features", "Status": status,
                     "Config": {"Jar": "command-runner.jar", "Args": []}, "ActionOnFailure": "CANCEL_AND_WAIT"},
            "ResponseMetadata": {"HTTPStatusCode": 200}}


def cluster_response(state: str, code: str | None = None, message: str | None = None,
                     cluster_id: str = CLUSTER) -> dict:
    reason = {k: v for k, v in (("Code", code), ("Message", message)) if v}
    return {"Cluster": {"Id": cluster_id, "Name": "c", "LogUri": f"{LOGS}/",
                        "Status": {"State": state, "StateChangeReason": reason,
                                   "Timeline": {"CreationDateTime": NOW}}}}


@pytest.fixture
def stubbed(moto_server):
    """An EMR client that does not retry (the errors below are what is left after botocore's retries)."""
    client = boto3.client("emr", region_name=REGION, endpoint_url=moto_server,
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def sensor_on(client, cluster_id: str = CLUSTER, step_id: str = STEP, deferrable: bool = False):
    from image_pipeline.compute.emr.operators import EmrStepWithLogsSensor

    sensor = EmrStepWithLogsSensor(task_id="extract_features", job_flow_id=cluster_id, step_id=step_id, logs_uri=LOGS,
                                   aws_conn_id="aws_default", deferrable=deferrable, poke_interval=1, max_attempts=2)
    sensor.__dict__["hook"] = SimpleNamespace(conn=client, conn_region_name=REGION, conn_partition="aws")
    return sensor


def put_log(s3, uri: str, text: str) -> None:
    s3.put_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"), Body=gzip.compress(text.encode()))


def test_throttling_during_a_poke_is_polled_again_and_other_api_errors_surface_unchanged(aws, stubbed,
                                                                                         capfd):
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
    capfd.readouterr()
    with pytest.raises(ClientError, match="elasticmapreduce:DescribeStep"):  # the real error, not a TypeError
        sensor.poke(CONTEXT)
    logged = [line for line in "".join(capfd.readouterr()).splitlines() if "not retried" in line]
    assert len(logged) == 1 and f"polling step {STEP}" in logged[0]  # one line: the call and its error code
    assert "DescribeStep: AccessDeniedException" in logged[0]


def test_a_cluster_ended_by_its_bootstrap_fails_the_first_sensor_with_the_reason_and_the_log(aws, stubbed):
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


def test_a_step_failed_before_its_logs_shipped_names_where_they_will_be(aws, stubbed):
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


def test_in_cluster_mode_the_driver_container_log_is_named_and_read(aws, stubbed):
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


def test_an_api_error_while_explaining_is_said_never_raised(aws, stubbed):
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


def moto_step(emr, cluster_id: str, state: str) -> str:
    """A step of a moto cluster, put in ``state`` as EMR would (moto never runs steps)."""
    from moto.emr.models import emr_backends

    step_id = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[{
        "Name": "extract_features", "ActionOnFailure": "CANCEL_AND_WAIT",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit"]}}])["StepIds"][0]
    cluster = emr_backends[ACCOUNT][REGION].clusters[cluster_id]
    next(step for step in cluster.steps if step.id == step_id).state = state
    return step_id


def defer_and_trigger(sensor) -> dict:
    """``execute`` defers (its first poke saw the step unfinished); the provider's trigger then runs against
    moto to its first event."""
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(CONTEXT)
    assert deferred.value.method_name == "execute_complete"
    return asyncio.run(first_event(deferred.value.trigger))


def test_a_step_failed_while_deferred_is_explained_and_the_providers_error_raised(aws, moto_server, stubbed,
                                                                                   capfd):
    from airflow.exceptions import AirflowException

    emr = boto3.client("emr", region_name=REGION, endpoint_url=moto_server)
    cluster_id = moto_cluster(emr)
    step_id = moto_step(emr, cluster_id, "FAILED")
    put_log(aws, f"{LOGS}/{cluster_id}/steps/{step_id}/stderr.gz",
            "INFO spark-submit\nTraceback (most recent call last):\nValueError: no images under images_uri")
    client, stubber = stubbed
    sensor = sensor_on(client, cluster_id, step_id, deferrable=True)
    stubber.add_response("describe_step", step_response("RUNNING", step_id=step_id))  # execute's first poke
    stubber.add_response("describe_cluster", cluster_response("RUNNING", cluster_id=cluster_id))
    event = defer_and_trigger(sensor)
    assert event["status"] == "error" and f"step {step_id}" in event["message"] and "FAILED" in event["message"]

    failed = step_response("FAILED", {"Reason": "Unknown Error.", "Message": "Exit code 1",
                                      "LogFile": f"{LOGS}/{cluster_id}/steps/{step_id}/stderr.gz"}, step_id=step_id)
    stubber.add_response("describe_step", failed)  # the explanation's own look-ups
    stubber.add_response("describe_cluster", cluster_response("WAITING", cluster_id=cluster_id))
    capfd.readouterr()
    with pytest.raises(AirflowException, match="Error while running job") as raised:  # the provider's own error
        sensor.execute_complete(CONTEXT, event)
    assert "'status': 'error'" in str(raised.value)
    note = "\n".join(raised.value.__notes__)
    assert f"step extract_features ({step_id}) FAILED: Unknown Error.; Exit code 1" in note  # EMR's reason
    assert f"step log: {LOGS}/{cluster_id}/steps/{step_id}/stderr.gz" in note
    assert "ValueError: no images under images_uri" in note  # the tail of the shipped stderr
    logged = "".join(capfd.readouterr())
    assert "Unknown Error.; Exit code 1" in logged and "ValueError: no images under images_uri" in logged


def test_a_cluster_ended_in_its_bootstrap_while_deferred_gives_its_reason_and_the_bootstrap_log(
        aws, moto_server, stubbed, capfd):
    from airflow.exceptions import AirflowException
    from moto.emr.models import emr_backends

    emr = boto3.client("emr", region_name=REGION, endpoint_url=moto_server)
    cluster_id = moto_cluster(emr)
    step_id = moto_step(emr, cluster_id, "CANCELLED")  # EMR cancels the steps of a cluster that ends
    emr_backends[ACCOUNT][REGION].clusters[cluster_id].state = "TERMINATED_WITH_ERRORS"
    message = "On the master instance (i-0def456), bootstrap action 1 returned a non-zero return code"
    put_log(aws, f"{LOGS}/{cluster_id}/node/i-0def456/bootstrap-actions/1/stderr.gz",
            "bootstrap: pip install --no-index failed: No matching distribution found for openvino==2026.0.0")
    client, stubber = stubbed
    sensor = sensor_on(client, cluster_id, step_id, deferrable=True)
    stubber.add_response("describe_step", step_response("PENDING", step_id=step_id))  # execute's first poke
    stubber.add_response("describe_cluster", cluster_response("STARTING", cluster_id=cluster_id))  # the log link
    stubber.add_response("describe_cluster", cluster_response("STARTING", cluster_id=cluster_id))  # still starting
    event = defer_and_trigger(sensor)
    assert event["status"] == "error" and "CANCELLED" in event["message"]

    ended = cluster_response("TERMINATED_WITH_ERRORS", "BOOTSTRAP_FAILURE", message, cluster_id=cluster_id)
    stubber.add_response("describe_step", step_response("CANCELLED", step_id=step_id))
    stubber.add_response("describe_cluster", ended)
    stubber.add_response("list_instances", {"Instances": [{"Id": "ci-1", "Ec2InstanceId": "i-0def456"}]})
    capfd.readouterr()
    with pytest.raises(AirflowException, match="Error while running job") as raised:
        sensor.execute_complete(CONTEXT, event)
    note = "\n".join(raised.value.__notes__)
    assert note.splitlines()[0] == f"cluster {cluster_id} TERMINATED_WITH_ERRORS: BOOTSTRAP_FAILURE: {message}"
    assert f"bootstrap logs: {LOGS}/{cluster_id}/node/i-0def456/bootstrap-actions/" in note
    assert "No matching distribution found for openvino==2026.0.0" in note  # the bootstrap log's tail
    assert f"BOOTSTRAP_FAILURE: {message}" in "".join(capfd.readouterr())


def moto_cluster(emr) -> str:
    group = {"InstanceType": "m5.xlarge", "Market": "ON_DEMAND"}
    return emr.run_job_flow(
        Name="cost", ReleaseLabel="emr-7.13.0", JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole_V2",
        Instances={"KeepJobFlowAliveWhenNoSteps": True, "InstanceGroups": [
            {**group, "InstanceRole": "MASTER", "InstanceCount": 1},
            {**group, "InstanceRole": "CORE", "InstanceCount": 2},
            {**group, "InstanceRole": "TASK", "InstanceCount": 2, "Market": "SPOT"}]})["JobFlowId"]


class SlowTermination:
    """moto's cluster ended as EMR ends one: after TerminateJobFlows, DescribeCluster answers TERMINATING for the
    first polls and TERMINATED only on a later one, which alone carries the end time and the normalized
    instance hours (moto would answer TERMINATED at once). The sync waiter and the provider's trigger (its own
    async client) both poll through moto, so both see the same answers."""

    def __init__(self, monkeypatch, cluster_id: str, terminating_answers: int = 2, ran=timedelta(minutes=30),
                 normalized_instance_hours: int = 8):
        from moto.emr.models import Cluster, ElasticMapReduceBackend

        self.cluster_id, self.left, self.ran, self.nih = cluster_id, terminating_answers, ran, normalized_instance_hours
        self.answers: list[str] = []  # what DescribeCluster answered after TerminateJobFlows, in order
        describe = ElasticMapReduceBackend.describe_cluster

        def terminate(cluster) -> None:
            cluster.state = "TERMINATING"

        def describe_cluster(backend, cluster_id: str):
            cluster = describe(backend, cluster_id)
            if cluster_id == self.cluster_id and cluster.state == "TERMINATING":
                if self.left == 0:
                    cluster.state, cluster.end_datetime = "TERMINATED", cluster.creation_datetime + self.ran
                    cluster.normalized_instance_hours = self.nih
                self.left -= 1
            if cluster_id == self.cluster_id and cluster.state.startswith("TERMINAT"):
                self.answers.append(cluster.state)
            return cluster

        monkeypatch.setattr(Cluster, "terminate", terminate)
        monkeypatch.setattr(ElasticMapReduceBackend, "describe_cluster", describe_cluster)


async def first_event(trigger) -> dict:
    """Run the provider's trigger (as the triggerer does) to its first event."""
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


@pytest.mark.parametrize("mode", ["synchronous", "deferred"])
def test_the_teardown_waits_for_terminated_and_costs_the_instances_that_ran(aws, moto_server, monkeypatch,
                                                                             mode):
    from airflow.sdk.exceptions import TaskDeferred
    from moto.emr.models import emr_backends

    from image_pipeline.compute.emr.operators import EmrTerminateWithCostOperator

    emr = boto3.client("emr", region_name=REGION, endpoint_url=moto_server)
    cluster_id = moto_cluster(emr)
    cluster = emr_backends[ACCOUNT][REGION].clusters[cluster_id]
    # one of the two spot task nodes never launched (no spot capacity): ListInstances has 4 instances, not 5
    cluster.ec2_instances.remove(next(i for i in cluster.ec2_instances if i.market == "SPOT"))
    termination = SlowTermination(monkeypatch, cluster_id)
    op = EmrTerminateWithCostOperator(task_id="terminate_cluster", job_flow_id=cluster_id, aws_conn_id="aws_default",
                                      prices={"m5.xlarge": 0.24}, region=REGION, waiter_delay=0,
                                      waiter_max_attempts=10, deferrable=mode == "deferred")
    if op.deferrable:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(CONTEXT)
        assert deferred.value.method_name == "execute_complete"
        event = asyncio.run(first_event(deferred.value.trigger))
        assert event == {"status": "success", "value": None}
        summary = op.execute_complete(CONTEXT, event)
    else:
        summary = op.execute(CONTEXT)
    assert termination.answers[:3] == ["TERMINATING", "TERMINATING", "TERMINATED"]  # polled until it ended
    assert termination.answers[-1] == "TERMINATED"  # and the cost comes from the terminated cluster:
    assert summary["hours"] == 0.5 and summary["normalized_instance_hours"] == 8  # its end time, EMR's final hours
    assert summary["instances"] == {"m5.xlarge on-demand": 3, "m5.xlarge spot": 1}  # what ran, not what was asked
    ebs_hourly = 96 * 0.08 / 730  # each node's 32 + 64 GiB of gp3 at the default $0.08 per GiB-month
    assert summary["estimated_cost_usd"] == round(4 * (0.24 + ebs_hourly) * 0.5, 2)  # every instance until the end
    assert summary["hourly_price_usd"] == round(4 * (0.24 + ebs_hourly), 3)
    assert summary["unpriced_instances"] == {}
    assert summary["cluster_id"] == cluster_id and summary["backend"] == "emr" and cluster_id in summary["console_link"]


class ScriptedDescribeStep:
    """moto's DescribeStep answered as EMR would under load or without the permission: for step ``step_id``,
    each call takes the next entry of ``script``, an error code (served as EMR serves it: HTTP 400,
    ``{"__type": code}``, through moto's own error handling) or a step state; the last entry repeats.
    moto runs in this process (``ThreadedMotoServer``), so the provider's trigger, with its own async client,
    gets these answers over HTTP. ``answers`` is what was served, in order."""

    def __init__(self, monkeypatch, step_id: str, script: list[str], message: str = "Rate exceeded"):
        from moto.core.exceptions import JsonRESTError
        from moto.emr.models import ElasticMapReduceBackend

        self.answers: list[str] = []
        describe = ElasticMapReduceBackend.describe_step

        def describe_step(backend, cluster_id: str, asked: str):
            step = describe(backend, cluster_id, asked)
            if asked != step_id:
                return step
            answer = script[min(len(self.answers), len(script) - 1)]
            self.answers.append(answer)
            if not answer.isupper():  # an error code, not a state
                raise JsonRESTError(answer, message)
            step.state = answer
            return step

        monkeypatch.setattr(ElasticMapReduceBackend, "describe_step", describe_step)


def without_botocore_retries(monkeypatch) -> None:
    """The aws connection with ``config_kwargs`` retries at one attempt in all: each throttled answer reaches
    the provider's waiter instead of being absorbed by botocore's own retries (the case of throttling that
    outlasts them, without their backoff of seconds)."""
    import json
    import os

    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    conn["extra"]["config_kwargs"] = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))


def deferred_sensor(emr, stubber, monkeypatch, script: list[str], **describe):
    """A deferrable sensor on a moto step whose first poke (``execute``'s) saw it RUNNING."""
    cluster_id = moto_cluster(emr)
    step_id = moto_step(emr, cluster_id, "RUNNING")
    scripted = ScriptedDescribeStep(monkeypatch, step_id, script, **describe)
    sensor = sensor_on(stubber.client, cluster_id, step_id, deferrable=True)
    stubber.add_response("describe_step", step_response("RUNNING", step_id=step_id))  # execute's first poke
    stubber.add_response("describe_cluster", cluster_response("RUNNING", cluster_id=cluster_id))  # the log link
    return sensor, scripted, cluster_id, step_id


def test_throttling_while_deferred_is_polled_again_and_the_step_completes(aws, moto_server, stubbed,
                                                                          monkeypatch, caplog):
    """The provider's trigger (``EmrStepSensorTrigger``, polling in ``waiter_with_logging.async_wait``) treats
    ThrottlingException as retriable: it logs it, waits its delay and polls again, without counting the
    throttled poll against ``max_attempts`` (2 here: 3 throttled polls, then RUNNING, then COMPLETED still
    succeed). The run goes on to the success event and ``execute_complete`` returns."""
    import logging

    without_botocore_retries(monkeypatch)
    emr = boto3.client("emr", region_name=REGION, endpoint_url=moto_server)
    _, stubber = stubbed
    throttled = ["ThrottlingException"] * 3
    sensor, scripted, *_ = deferred_sensor(emr, stubber, monkeypatch, [*throttled, "RUNNING", "COMPLETED"])
    caplog.set_level(logging.INFO, logger="airflow.providers.amazon.aws.utils.waiter_with_logging")
    event = defer_and_trigger(sensor)
    assert scripted.answers == [*throttled, "RUNNING", "COMPLETED"]  # the throttled answers were really served
    retried = [r.getMessage() for r in caplog.records if "retriable error" in r.getMessage()]
    assert len(retried) == 3 and all("ThrottlingException" in line for line in retried)  # each reached the waiter
    assert event == {"status": "success", "value": None}
    assert sensor.execute_complete(CONTEXT, event) is None  # the run goes on


def test_access_denied_while_deferred_ends_at_once_with_the_error_code(aws, moto_server, stubbed,
                                                                       monkeypatch):
    """A non-retriable error code ends the provider's ``async_wait`` at its first answer (an AirflowException
    with the failure message, the response and the waiter's error, which names the code); the trigger sends
    it as its error event, and ``execute_complete`` raises the provider's error, explained. The connection's
    own retry settings are kept: botocore does not retry a denial either (one call served)."""
    from airflow.exceptions import AirflowException

    emr = boto3.client("emr", region_name=REGION, endpoint_url=moto_server)
    _, stubber = stubbed
    denied = "User: arn:aws:sts::123456789012:assumed-role/airflow/worker is not authorized to perform: " \
             "elasticmapreduce:DescribeStep"
    sensor, scripted, cluster_id, step_id = deferred_sensor(emr, stubber, monkeypatch, ["AccessDeniedException"],
                                                            message=denied)
    event = defer_and_trigger(sensor)
    assert scripted.answers == ["AccessDeniedException"]  # not polled again
    assert event["status"] == "error"
    assert f"Error while waiting for step {step_id} to complete" in event["message"]
    assert "An error occurred (AccessDeniedException)" in event["message"] and denied in event["message"]

    stubber.add_client_error("describe_step", service_error_code="AccessDeniedException", service_message=denied,
                             http_status_code=400)  # the explanation's own look-ups: the same role
    stubber.add_response("describe_cluster", cluster_response("RUNNING", cluster_id=cluster_id))
    with pytest.raises(AirflowException, match="Error while running job") as raised:
        sensor.execute_complete(CONTEXT, event)
    assert "AccessDeniedException" in str(raised.value)
    note = "\n".join(raised.value.__notes__)
    assert f"step {step_id}: could not be read (ClientError" in note and "AccessDeniedException" in note
