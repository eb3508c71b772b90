"""
### Image classification on a transient Spark cluster

Turns folders of labelled photos (`<images_uri>/<label>/*.jpg|png`) into CNN features, a partitioned
sweep of pairwise linear SVMs, a multiclass classifier and a report:

1. **plan_run** resolves params and the data interval into one explicit run plan;
2. **create_cluster** (setup) starts the cluster: a local Spark standalone cluster by default,
   AWS EMR with `IMAGE_PIPELINE_COMPUTE=emr`;
3. **extract_features**, **train_models**, **evaluate_models** run the Spark steps;
4. **publish_report** reads the report back, enforces the `min_accuracy` gate and summarises;
5. **terminate_cluster** (teardown) always stops the cluster, also after a failure.

A run sees the images modified before its data interval's end, so backfills reproduce past models;
extraction is incremental, so a new class folder costs only its own images.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from image_pipeline.emr import load_emr_settings
from image_pipeline.params import dag_params
from image_pipeline.settings import load_settings
from image_pipeline.steps import STEP_NAMES

SETTINGS = load_settings()
EMR = load_emr_settings() if SETTINGS.compute == "emr" else None


@dag(
    schedule=SETTINGS.schedule,
    doc_md=__doc__,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    params=dag_params(SETTINGS, EMR),
    tags=["images", "spark", SETTINGS.compute],
    default_args={"retries": SETTINGS.retries, "retry_delay": pendulum.duration(seconds=SETTINGS.retry_delay_seconds)},
)
def image_classification():
    @task
    def plan_run(**context) -> dict:
        """Validate params and resolve them with the data interval into the run plan."""
        from image_pipeline.layout import run_key_for, run_layout
        from image_pipeline.plan import build_run_plan, scan_images

        dag_run = context["dag_run"]
        modified_before = context.get("data_interval_end") or dag_run.run_after  # manual runs: trigger time
        params = dict(context["params"])
        images_uri = (params.get("images_uri") or "").strip() or run_layout(
            SETTINGS.root_uri, run_key_for(dag_run.run_id)).images_uri
        scan = scan_images(images_uri, SETTINGS.aws_conn_id, modified_before)
        for warning in scan.warnings():
            print(f"WARNING: {warning}")
        plan = build_run_plan(params, dag_run.run_id, modified_before, SETTINGS, scan.counts, EMR).as_dict()
        print(f"run plan: {plan}")
        return plan

    @task(retries=0)
    def publish_report(plan: dict, cluster: dict | list | None = None) -> dict:
        """Read the report back, write report.md, log the summary, enforce the quality gate.

        ``cluster`` is what terminate_cluster returned: on EMR the cluster id, console link,
        normalized instance hours and estimated cost; locally the stopped process ids.
        """
        import json

        from airflow.sdk.exceptions import AirflowFailException

        from image_pipeline.report import QualityGateError, publish

        try:
            headline = publish(plan["report_uri"], plan["min_accuracy"], SETTINGS.aws_conn_id)
        except QualityGateError as exc:
            raise AirflowFailException(str(exc)) from exc
        print(f"multiclass accuracy {100 * headline['multiclass_accuracy']:.1f}% on {headline['classes']} classes, "
              f"{headline['images']} images ({headline['rejects']} rejected), "
              f"{headline['pairwise_models']} pairwise models")
        print("hardest pairs: " + ", ".join(
            f"{p['class_1']} vs {p['class_2']} {p['mean_pct']:.1f}%" for p in headline["hardest_pairs"]))
        print(f"seconds per step: {json.dumps(headline['seconds_per_step'])}")
        print(f"report: {headline['report_md']}")
        if isinstance(cluster, dict):
            headline["cluster"] = cluster
            print(f"cluster {cluster['cluster_id']}: {cluster['normalized_instance_hours']} normalized instance "
                  f"hours, about ${cluster['estimated_cost_usd']:.2f} ({cluster['console_link']})")
        return headline

    plan = plan_run()
    if SETTINGS.compute == "emr":
        last_step, terminate = emr_backend(plan)
    else:
        last_step, terminate = local_backend(plan)
    # the report is published once the cluster is gone, with what the cluster cost
    last_step >> terminate
    last_step >> publish_report(plan, terminate)


def local_backend(plan):
    """A Spark standalone cluster of local processes: start, three spark-submits, stop.

    Returns the last step and the teardown's output (what publish_report receives).
    """
    from image_pipeline.local_operators import LocalSparkStepOperator

    @task
    def stage_artifacts(plan: dict) -> dict:
        """Put the Spark jobs' code where the cluster reads it (skipped when already there)."""
        from image_pipeline.artifacts import stage_local

        return stage_local(plan["artifacts_uri"])

    @task(retries=0)
    def create_cluster(plan: dict) -> dict:
        """Start the run's own Spark standalone cluster on 127.0.0.1 and wait for its workers."""
        from dataclasses import asdict
        from pathlib import Path

        from image_pipeline.java import ensure_java_home
        from image_pipeline.local_cluster import start_cluster

        info = start_cluster(
            Path(plan["cluster_uri"].removeprefix("file://")), plan["local_workers"], plan["local_worker_cores"],
            plan["local_worker_memory_gb"], SETTINGS.python, ensure_java_home(),
        )
        return asdict(info)

    @task
    def terminate_cluster(plan: dict) -> list[int]:
        """Stop every process of the run's cluster (teardown: runs even when a step failed)."""
        from image_pipeline.local_cluster import stop_cluster

        return stop_cluster(plan["cluster_uri"].removeprefix("file://"))

    artifacts = stage_artifacts(plan)
    cluster = create_cluster(plan)
    steps = [
        LocalSparkStepOperator(task_id=name, step=name, plan=plan, cluster=cluster, artifacts=artifacts,
                               python=SETTINGS.python)
        for name in STEP_NAMES
    ]
    terminate = terminate_cluster(plan).as_teardown(setups=cluster)
    artifacts >> steps[0]
    cluster >> steps[0] >> steps[1] >> steps[2]
    return steps[-1], terminate


def emr_backend(plan):
    """A transient EMR cluster through the Amazon provider: create, add steps, sense each, terminate."""
    from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator

    from image_pipeline.emr_operators import (
        EmrAddNamedStepsOperator,
        EmrStepWithLogsSensor,
        EmrTerminateWithCostOperator,
    )

    @task
    def stage_artifacts(plan: dict) -> dict:
        """Upload code, entry scripts, bootstrap, EMR requirements, weights to artifacts/<hash>/ once."""
        from image_pipeline.artifacts import stage_s3

        staged = stage_s3(plan["artifacts_uri"], plan["weights_uri"], SETTINGS.aws_conn_id)
        print(f"staged under {staged['entry_dir_uri']}; uploaded now: {staged.pop('uploaded') or 'nothing'}")
        return staged

    @task(multiple_outputs=True)
    def emr_requests(plan: dict, artifacts: dict) -> dict:
        """The RunJobFlow body and the steps, built from the plan by pure functions."""
        from image_pipeline.emr import emr_steps, job_flow_overrides

        return {"job_flow": job_flow_overrides(plan, plan["emr"], artifacts, "image_classification"),
                "steps": emr_steps(plan, artifacts)}

    requests = emr_requests(plan, stage_artifacts(plan))
    cluster = EmrCreateJobFlowOperator(
        task_id="create_cluster", job_flow_overrides=requests["job_flow"], aws_conn_id=SETTINGS.aws_conn_id,
        emr_conn_id=None, retries=0,  # every setting is in the body: no base config from a connection
    )
    add_steps = EmrAddNamedStepsOperator(
        task_id="add_steps", job_flow_id=cluster.output, steps=requests["steps"], aws_conn_id=SETTINGS.aws_conn_id,
        retries=0,  # a retry would add the steps a second time
    )
    sensors = [
        EmrStepWithLogsSensor(
            task_id=name, job_flow_id=cluster.output, step_id=add_steps.output[name],
            logs_uri=f"{SETTINGS.root_uri}/logs", aws_conn_id=SETTINGS.aws_conn_id, deferrable=EMR.deferrable,
            poke_interval=EMR.poke_seconds, max_attempts=int(EMR.step_timeout_hours * 3600 // EMR.poke_seconds),
            timeout=EMR.step_timeout_hours * 3600,
        )
        for name in STEP_NAMES
    ]
    terminate = EmrTerminateWithCostOperator(
        task_id="terminate_cluster", job_flow_id=cluster.output, aws_conn_id=SETTINGS.aws_conn_id,
        prices=EMR.prices, region=EMR.region,
    ).as_teardown(setups=cluster)
    add_steps >> sensors[0] >> sensors[1] >> sensors[2]
    return sensors[-1], terminate.output


image_classification()
