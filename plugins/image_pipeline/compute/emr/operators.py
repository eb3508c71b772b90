"""Amazon provider operators, extended where the run needs more than they give.

- ``EmrAddNamedStepsOperator`` also pushes each step id under the step's name, so each sensor is
  wired with ``add_steps.output["<step name>"]``.
- ``EmrStepWithLogsSensor`` explains a failed step in its own log: EMR's failure reason and
  message, the tail of the step's stderr fetched from the cluster's LogUri, and the full log's path.
- ``EmrTerminateWithCostOperator`` terminates and reports the cluster id, its console link,
  normalized instance hours and an estimated cost.
"""

from __future__ import annotations

import gzip
from typing import Any

from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator, EmrTerminateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor

from image_pipeline.compute.contract import cluster_summary, cluster_summary_line
from image_pipeline.compute.emr.requests import cluster_cost, console_link, step_log_uri

LOG_TAIL_LINES = 40


class EmrAddNamedStepsOperator(EmrAddStepsOperator):
    """Add the run's steps (never retried: a retry would add them twice) and name their ids in XCom."""

    def execute(self, context) -> list[str]:
        step_ids = super().execute(context)
        for step, step_id in zip(self.steps, step_ids, strict=True):
            context["ti"].xcom_push(key=step["Name"], value=step_id)
        return step_ids


class EmrStepWithLogsSensor(EmrStepSensor):
    """Wait for one step; when it fails, log why, with the tail of its stderr from LogUri."""

    template_fields = (*EmrStepSensor.template_fields, "logs_uri")

    def __init__(self, *, logs_uri: str, **kwargs):
        super().__init__(**kwargs)
        self.logs_uri = logs_uri

    def explain_failure(self) -> str:
        """Failure reason, message, log path and the stderr tail of the step (best effort)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from image_pipeline.compute.diagnosis import diagnose_text

        step = self.hook.conn.describe_step(ClusterId=self.job_flow_id, StepId=self.step_id)["Step"]
        details = step["Status"].get("FailureDetails", {})
        log_uri = step_log_uri(self.logs_uri, self.job_flow_id, self.step_id)
        lines = [f"step {step.get('Name')} ({self.step_id}) {step['Status']['State']}: "
                 f"{details.get('Reason', 'no reason given')}; {details.get('Message', '')}".rstrip("; "),
                 f"full log: {details.get('LogFile') or log_uri}"]
        try:
            s3 = S3Hook(aws_conn_id=self.aws_conn_id)
            bucket, key = S3Hook.parse_s3_url(log_uri)
            data = s3.get_key(key, bucket).get()["Body"].read()
            text = gzip.decompress(data).decode(errors="replace") if log_uri.endswith(".gz") else data.decode()
            diagnosis = diagnose_text(text)
            if diagnosis:
                lines.insert(1, diagnosis)
            tail = text.splitlines()[-LOG_TAIL_LINES:]
            lines += [f"last {len(tail)} lines of {log_uri}:", *tail]
        except Exception as exc:  # the log may not have been shipped yet: say so, keep the reason
            lines.append(f"stderr not readable at {log_uri} yet ({type(exc).__name__}: {exc})")
        message = "\n".join(lines)
        self.log.error("%s", message)
        return message

    def poke(self, context) -> bool:
        try:
            return super().poke(context)
        except Exception as exc:
            raise type(exc)(f"{exc}\n{self.explain_failure()}") from exc

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> None:
        try:
            super().execute_complete(context, event)
        except Exception as exc:
            raise type(exc)(f"{exc}\n{self.explain_failure()}") from exc


class EmrTerminateWithCostOperator(EmrTerminateJobFlowOperator):
    """Terminate the cluster (teardown), then log and return what it cost."""

    def __init__(self, *, prices: dict[str, float], region: str, **kwargs):
        super().__init__(**kwargs)
        self.prices, self.region = prices, region

    def execute(self, context) -> dict:
        from airflow.providers.amazon.aws.hooks.emr import EmrHook

        super().execute(context)
        conn = EmrHook(aws_conn_id=self.aws_conn_id).conn
        describe = conn.describe_cluster(ClusterId=self.job_flow_id)
        groups = conn.list_instance_groups(ClusterId=self.job_flow_id).get("InstanceGroups", [])
        summary = cluster_summary(backend="emr", console_link=console_link(self.region, self.job_flow_id),
                                  **cluster_cost(describe, self.prices, groups))
        self.log.info("%s", cluster_summary_line(summary))
        return summary
