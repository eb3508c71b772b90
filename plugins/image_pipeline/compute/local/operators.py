"""Airflow operators of the local backend: a Spark step submitted to the run's local cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator


class LocalSparkStepOperator(BaseOperator):
    """Run one Spark step of the run plan with spark-submit against the run's local master.

    It first checks the cluster is there (``health.gone_reason``): a step whose cluster is gone fails at
    once, naming why and what to do. The driver's output streams into the task log line by line; a
    non-zero exit fails the task with the tail of that output. Killing the task (or marking it failed)
    kills spark-submit's process group; the cluster itself is stopped by the ``terminate_cluster`` teardown.
    """

    template_fields = ("plan", "cluster", "artifacts")
    ui_color = "#f4a460"

    def __init__(self, *, step: str, plan: Any, cluster: Any, artifacts: Any, python: str, **kwargs):
        super().__init__(**kwargs)
        self.step, self.plan, self.cluster, self.artifacts, self.python = step, plan, cluster, artifacts, python
        self._process = None

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from image_pipeline.compute.local.cluster import ClusterInfo, cluster_env
        from image_pipeline.compute.local.health import gone_reason
        from image_pipeline.compute.local.java import require_java_home
        from image_pipeline.compute.local.submit import StepFailedError, StepProcess, spark_submit_argv
        from image_pipeline.compute.staging import local_path
        from image_pipeline.compute.steps import step_by_name

        spec = step_by_name(self.plan, self.step)
        info = ClusterInfo(**self.cluster)
        gone = gone_reason(info.cluster_dir)
        if gone:  # a retry would meet the same: fail at once, naming the cause and the fix
            raise AirflowFailException(f"{spec.name} not submitted: {gone}")
        argv = spark_submit_argv(
            info, str(Path(local_path(self.artifacts["entry_dir_uri"])) / spec.entry_script), list(spec.args),
            local_path(self.artifacts["jobs_zip_uri"]), self.python, f"{spec.name} {self.plan['run_key']}",
        )
        env = cluster_env(Path(info.cluster_dir), self.python, require_java_home())
        self.log.info("submitting %s to %s: %s", spec.name, info.master_url, argv)
        self._process = StepProcess(argv, env, lambda line: self.log.info("%s", line),
                                    work_dir=Path(info.cluster_dir) / "work")
        code = self._process.run()
        if code != 0:
            raise StepFailedError(self._process.failure_message(spec.name, code))
        return {"step": spec.name, "exit_code": code}

    def on_kill(self) -> None:
        if self._process is not None:
            self.log.warning("killing spark-submit of %s", self.step)
            self._process.kill()
