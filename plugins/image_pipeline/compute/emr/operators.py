"""Amazon provider operators, extended where the run needs more than they give.

- ``EmrAddNamedStepsOperator`` also pushes each step id under the step's name, so each sensor is
  wired with ``add_steps.output["<step name>"]``. It never defers: deferred, the provider's operator waits
  for *every* step on one trigger (60 polls of 30 s) and its ``execute_complete`` pushes no per-step ids.
  Its default comes from ``[operators] default_deferrable``, so it is set explicitly.
- ``EmrStepWithLogsSensor`` explains a step that did not complete in its own log (``explain.explain_step``:
  EMR's reasons, the cluster's state-change reason when it ended, the step's, the driver's and the
  bootstrap's log paths and tails) and re-raises the provider's own exception with the explanation as a
  note. A transient API error (throttling, a 5xx) during a poke is logged and the sensor pokes again;
  any other one is logged as one line naming the API call and its error code, then re-raised as it is.
  While its step is pending it watches the cluster: one that ends before the step runs (bootstrap
  failure, capacity, a role it cannot use) fails the sensor at once, with the cluster's reason.
- ``EmrTerminateWithCostOperator`` terminates, waits for ``TERMINATED`` (synchronously, or deferred when
  ``deferrable``, given explicitly: the backend passes ``IMAGE_PIPELINE_EMR_DEFERRABLE``), then
  reports the cluster id, its console link, the instances that ran, normalized instance hours and an
  estimated cost, all from the terminated cluster.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator, EmrTerminateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from image_pipeline.compute.contract import cluster_summary, cluster_summary_line
from image_pipeline.compute.diagnosis import CLUSTER_GONE_FIX
from image_pipeline.compute.emr.explain import TERMINAL_CLUSTER_STATES, cluster_line, explain_step, s3_log_store
from image_pipeline.compute.emr.requests import DEFAULT_EBS_GIB_MONTH_USD, cluster_cost, console_link


class EmrAddNamedStepsOperator(EmrAddStepsOperator):
    """Add the run's steps (never retried: a retry would add them twice) and name their ids in XCom.

    One API call: it neither waits nor defers (the sensors wait, one per step)."""

    def __init__(self, **kwargs):
        if kwargs.pop("deferrable", False) or kwargs.pop("wait_for_completion", False):
            raise ValueError("add_steps never waits: each step's sensor does (deferrable or not)")
        super().__init__(deferrable=False, wait_for_completion=False, **kwargs)

    def execute(self, context) -> list[str]:
        self._require_running_cluster()
        step_ids = super().execute(context)
        for step, step_id in zip(self.steps, step_ids, strict=True):
            context["ti"].xcom_push(key=step["Name"], value=step_id)
        return step_ids


    def _require_running_cluster(self) -> None:
        """Steps added to a cluster that has ended are refused by EMR with no word of why it ended: fail first,
        with the cluster's state-change reason and what to do."""
        from airflow.providers.amazon.aws.hooks.emr import EmrHook
        from airflow.sdk.exceptions import AirflowFailException

        if not self.job_flow_id:
            return  # resolved from job_flow_name by the provider: nothing to check yet
        describe = EmrHook(aws_conn_id=self.aws_conn_id).conn.describe_cluster(ClusterId=self.job_flow_id)
        ended = cluster_line(describe)
        if ended:
            raise AirflowFailException(f"steps not added: the run's {ended}; {CLUSTER_GONE_FIX}")


def is_transient(exc: BaseException) -> bool:
    """Whether an AWS API error is worth another poke: botocore's own throttling and transient rules."""
    from botocore.retries.standard import RetryContext, ThrottledRetryableChecker, TransientRetryableChecker

    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if not isinstance(exc, ClientError):
        return False
    context = RetryContext(attempt_number=1, parsed_response=exc.response)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return ThrottledRetryableChecker().is_retryable(context) or TransientRetryableChecker().is_retryable(context) \
        or status >= 500


def api_error_line(exc: BaseException) -> str:
    """``DescribeStep: AccessDeniedException (...)``: the API call and the error code of an AWS error."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{exc.operation_name}: {error.get('Code', 'no error code')} ({error.get('Message', '')})"
    return f"{type(exc).__name__}: {exc}"


class EmrStepWithLogsSensor(EmrStepSensor):
    """Wait for one step; explain in the log why it did not complete, without masking the error."""

    template_fields = (*EmrStepSensor.template_fields, "logs_uri")

    def __init__(self, *, logs_uri: str, **kwargs):
        super().__init__(**kwargs)
        self.logs_uri = logs_uri
        self._step_state = ""

    def get_emr_response(self, context) -> dict[str, Any]:
        response = super().get_emr_response(context)
        self._step_state = response["Step"]["Status"]["State"]
        return response

    def explain(self) -> str:
        """The explanation (never raises: what cannot be read is said so), logged as an error."""
        try:
            message = explain_step(self.hook.conn, s3_log_store(self.aws_conn_id), self.logs_uri,
                                   self.job_flow_id, self.step_id)
        except Exception as exc:  # the explanation must never hide the failure it explains
            message = f"no explanation: {type(exc).__name__}: {exc}"
        self.log.error("%s", message)
        return message

    def _fail_with_explanation(self, exc: BaseException) -> None:
        exc.add_note(self.explain())
        raise exc

    def _poll_again_if_transient(self, exc: BaseException, doing: str) -> None:
        """A transient API error is logged as a warning, and the caller polls again; any other one is logged
        in one line (the call and its error code) and re-raised as it is."""
        if not is_transient(exc):
            self.log.error("AWS error while %s, not retried: %s", doing, api_error_line(exc))
            raise exc
        self.log.warning("transient AWS error while %s, polling again: %s", doing, exc)

    def _check_cluster(self) -> None:
        """While the step is pending: fail now, with the cluster's reason, if the cluster has ended."""
        from airflow.exceptions import AirflowException

        try:
            describe = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)
        except (ClientError, ConnectionError, HTTPClientError) as exc:
            self._poll_again_if_transient(exc, f"checking cluster {self.job_flow_id}")
            return
        state = describe["Cluster"]["Status"]["State"]
        if state in TERMINAL_CLUSTER_STATES:
            self._fail_with_explanation(AirflowException(
                f"{cluster_line(describe)} (before step {self.step_id} ran)"))
        self.log.info("step %s pending; cluster %s is %s (provisioning and bootstrap come before the first step)",
                      self.step_id, self.job_flow_id, state)

    def poke(self, context) -> bool:
        from airflow.exceptions import AirflowException

        try:
            done = super().poke(context)
        except (ClientError, ConnectionError, HTTPClientError) as exc:
            self._poll_again_if_transient(exc, f"polling step {self.step_id}")
            return False
        except AirflowException as exc:  # the step ended in a failed state
            self._fail_with_explanation(exc)
        if not done and self._step_state == "PENDING":
            self._check_cluster()
        return done

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> None:
        """After the provider's trigger: its error event (``{"status": "error", "message": ...}``) is explained."""
        try:
            super().execute_complete(context, event)
        except Exception as exc:
            self._fail_with_explanation(exc)


class EmrTerminateWithCostOperator(EmrTerminateJobFlowOperator):
    """Terminate the cluster (teardown), wait until it is terminated, then log and return what it cost."""

    def __init__(self, *, prices: dict[str, float], region: str, deferrable: bool,
                 ebs_gib_month_usd: float = DEFAULT_EBS_GIB_MONTH_USD, **kwargs):
        super().__init__(deferrable=deferrable, **kwargs)
        self.prices, self.region, self.ebs_gib_month_usd = prices, region, ebs_gib_month_usd

    def _wait_terminated(self) -> None:
        from airflow.exceptions import AirflowException
        from airflow.providers.amazon.aws.utils.waiter_with_logging import wait

        try:
            wait(waiter=self.hook.get_waiter("job_flow_terminated"), waiter_delay=self.waiter_delay,
                 waiter_max_attempts=self.waiter_max_attempts, args={"ClusterId": self.job_flow_id},
                 failure_message="the cluster ended with errors", status_message="cluster state",
                 status_args=["Cluster.Status.State"])
        except AirflowException:
            if self._state() != "TERMINATED_WITH_ERRORS":  # ended with errors is ended: its cost still counts
                raise

    def _state(self) -> str:
        return self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]["Status"]["State"]

    def summary(self) -> dict:
        """The cost summary of the terminated cluster, logged as one line."""
        conn = self.hook.conn
        describe = conn.describe_cluster(ClusterId=self.job_flow_id)
        instances = conn.get_paginator("list_instances").paginate(ClusterId=self.job_flow_id)
        cost = cluster_cost(describe, self.prices, [i for page in instances for i in page["Instances"]],
                            ebs_gib_month_usd=self.ebs_gib_month_usd)
        if unpriced := cost["unpriced_instances"]:
            self.log.warning("THE COST ESTIMATE IS TOO LOW: %s ran without a price and are not in it; set their "
                             "USD per instance-hour in IMAGE_PIPELINE_EMR_PRICES_JSON",
                             ", ".join(f"{n} x {kind}" for kind, n in unpriced.items()))
        summary = cluster_summary(backend="emr", console_link=console_link(self.region, self.job_flow_id), **cost)
        self.log.info("%s", cluster_summary_line(summary))
        return summary

    def execute(self, context) -> dict:
        super().execute(context)  # deferrable: this defers, and execute_complete continues
        self._wait_terminated()
        return self.summary()

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        try:
            super().execute_complete(context, event)
        except Exception:
            if self._state() not in ("TERMINATED", "TERMINATED_WITH_ERRORS"):
                raise
        return self.summary()
