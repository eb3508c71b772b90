"""The two compute backends as task groups a DAG wires in: a transient cluster, Spark steps, teardown.

Both DAGs (``image_classification``, ``image_scoring``) call ``compute_steps`` inside their DAG body
with their plan's XComArg and their step names. The task ids are the same for both backends:
``stage_artifacts``, ``create_cluster`` (setup), one task per step, ``terminate_cluster`` (teardown);
EMR adds ``emr_requests`` and ``add_steps``. Each step's entry script and arguments come from
``steps.steps_for(plan)``, so local and EMR run the same code with the same arguments.

Called at parse time: only Airflow's task and operator definitions are imported here, never a
library that does I/O or heavy work; the tasks import what they need when they run.
"""

from __future__ import annotations

from collections.abc import Sequence

from image_pipeline.wiring.settings import Settings


def compute_steps(plan, step_names: Sequence[str], settings: Settings, emr=None, dag_id: str = ""):
    """Wire the run's cluster and steps; returns (last step task, teardown output for the next task).

    ``plan`` is the plan task's XComArg (a dict with the plan's URIs and settings), ``emr`` the
    deployment's ``EmrSettings`` when ``settings.compute == "emr"``.
    """
    if settings.compute == "emr":
        return emr_backend(plan, step_names, settings, emr, dag_id)
    return local_backend(plan, step_names, settings)


def log_staged(staged: dict) -> dict:
    """Log where the code was staged and what was written now; returns ``staged`` unchanged."""
    print(f"staged under {staged['entry_dir_uri']}; written now: {len(staged['uploaded']) or 'nothing'}")
    return staged


def local_backend(plan, step_names: Sequence[str], settings: Settings):
    """A Spark standalone cluster of local processes: start, one spark-submit per step, stop.

    Returns the last step and the teardown's output (what a task after the teardown receives).
    """
    from airflow.sdk import chain

    from image_pipeline.compute.local.operators import LocalSparkStepOperator

    stage_artifacts, create_cluster, terminate_cluster = local_cluster_tasks(settings)
    artifacts = stage_artifacts(plan)
    cluster = create_cluster(plan)
    steps = [
        LocalSparkStepOperator(task_id=name, step=name, plan=plan, cluster=cluster, artifacts=artifacts,
                               python=settings.python)
        for name in step_names
    ]
    terminate = terminate_cluster(plan).as_teardown(setups=cluster)
    artifacts >> steps[0]
    chain(cluster, *steps)
    return steps[-1], terminate


def local_cluster_tasks(settings: Settings):
    """The local backend's stage, setup and teardown tasks (decorated functions, not yet called)."""
    from airflow.sdk import task

    @task
    def stage_artifacts(plan: dict) -> dict:
        """Put the Spark jobs' code where the cluster reads it (skipped when already there)."""
        from image_pipeline.compute.staging import stage_local

        return log_staged(stage_local(plan["artifacts_uri"]))

    @task(retries=0)
    def create_cluster(plan: dict) -> dict:
        """Start the run's own Spark standalone cluster on 127.0.0.1 and wait for its workers."""
        from dataclasses import asdict
        from pathlib import Path

        from image_pipeline.compute.local.cluster import start_cluster
        from image_pipeline.compute.local.java import require_java_home

        info = start_cluster(
            Path(plan["cluster_uri"].removeprefix("file://")), plan["local_workers"], plan["local_worker_cores"],
            plan["local_worker_memory_gb"], settings.python, require_java_home(),
            idle_timeout_minutes=settings.local_idle_timeout_minutes,
        )
        return asdict(info)

    @task
    def terminate_cluster(plan: dict) -> dict:
        """Stop every process of the run's cluster (teardown: runs even when a step failed)."""
        from image_pipeline.compute.contract import cluster_summary_line
        from image_pipeline.compute.local.cluster import terminate_local_cluster

        summary = terminate_local_cluster(plan["cluster_uri"].removeprefix("file://"))
        print(cluster_summary_line(summary))
        return summary

    return stage_artifacts, create_cluster, terminate_cluster


def emr_backend(plan, step_names: Sequence[str], settings: Settings, emr, dag_id: str):
    """A transient EMR cluster through the Amazon provider: create, add steps, sense each, terminate."""
    from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator
    from airflow.sdk import chain

    from image_pipeline.compute.emr.operators import (
        EmrAddNamedStepsOperator,
        EmrStepWithLogsSensor,
        EmrTerminateWithCostOperator,
    )
    from image_pipeline.planning.layout import logs_uri

    stage_artifacts, emr_requests = emr_request_tasks(settings, dag_id)
    requests = emr_requests(plan, stage_artifacts(plan))
    # each wait decided here, never by [operators] default_deferrable: creating the cluster and adding the
    # steps are single API calls (the first step's sensor waits for the cluster); the sensors and the
    # teardown's wait for TERMINATED defer when IMAGE_PIPELINE_EMR_DEFERRABLE says so
    cluster = EmrCreateJobFlowOperator(
        task_id="create_cluster", job_flow_overrides=requests["job_flow"], aws_conn_id=settings.aws_conn_id,
        emr_conn_id=None, retries=0,  # every setting is in the body: no base config from a connection
        wait_for_completion=False, deferrable=False,
    )
    add_steps = EmrAddNamedStepsOperator(
        task_id="add_steps", job_flow_id=cluster.output, steps=requests["steps"], aws_conn_id=settings.aws_conn_id,
        retries=0,  # a retry would add the steps a second time
    )
    sensors = [
        EmrStepWithLogsSensor(
            task_id=name, job_flow_id=cluster.output, step_id=add_steps.output[name],
            logs_uri=logs_uri(settings.root_uri), aws_conn_id=settings.aws_conn_id, deferrable=emr.deferrable,
            poke_interval=emr.poke_seconds, max_attempts=int(emr.step_timeout_hours * 3600 // emr.poke_seconds),
            timeout=emr.step_timeout_hours * 3600,
        )
        for name in step_names
    ]
    terminate = EmrTerminateWithCostOperator(
        task_id="terminate_cluster", job_flow_id=cluster.output, aws_conn_id=settings.aws_conn_id,
        prices=emr.prices, region=emr.region, deferrable=emr.deferrable, ebs_gib_month_usd=emr.ebs_gib_month_usd,
    ).as_teardown(setups=cluster)
    chain(add_steps, *sensors)
    return sensors[-1], terminate.output


def emr_request_tasks(settings: Settings, dag_id: str):
    """The EMR backend's staging task and the task building its requests (decorated, not yet called)."""
    from airflow.sdk import task

    @task
    def stage_artifacts(plan: dict) -> dict:
        """Upload code, entry scripts, bootstrap, EMR requirements, weights to artifacts/<hash>/ once."""
        from image_pipeline.compute.staging import stage_s3

        return log_staged(stage_s3(plan["artifacts_uri"], plan["weights_uri"], settings.aws_conn_id))

    @task(multiple_outputs=True)
    def emr_requests(plan: dict, artifacts: dict) -> dict:
        """The RunJobFlow body and the steps, built from the plan by pure functions."""
        from image_pipeline.compute.emr.requests import emr_steps, job_flow_overrides

        return {"job_flow": job_flow_overrides(plan, plan["emr"], artifacts, dag_id),
                "steps": emr_steps(plan, artifacts)}

    return stage_artifacts, emr_requests
