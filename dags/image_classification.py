"""
### Image classification on a transient Spark cluster

Turns folders of labelled photos (`<images_uri>/<label>/*.jpg|png`) into CNN features, a partitioned
sweep of pairwise linear SVMs, a multiclass classifier and a report:

1. **plan_run** resolves params and the data interval into one explicit run plan;
2. **create_cluster** (setup) starts the cluster: a local Spark standalone cluster by default,
   AWS EMR with `IMAGE_PIPELINE_COMPUTE=emr`;
3. **extract_features**, **train_models**, **evaluate_models** run the Spark steps;
4. **publish_report** reads the report back, enforces the `min_accuracy` gate and summarises; a run
   that passes records its model as the latest successful one (`models/latest.json`) and emits the
   `image_classifier_model:<root>` Asset, on which the `image_scoring` DAG is scheduled;
5. **terminate_cluster** (teardown) always stops the cluster, also after a failure.

A run sees the images modified before its data interval's end, so backfills reproduce past models;
extraction is incremental, so a new class folder costs only its own images.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from image_pipeline.compute.backends import compute_steps
from image_pipeline.compute.emr.requests import load_emr_settings
from image_pipeline.compute.steps import STEP_NAMES
from image_pipeline.wiring.assets import model_asset
from image_pipeline.wiring.params import dag_params
from image_pipeline.wiring.settings import load_settings

SETTINGS = load_settings()
EMR = load_emr_settings() if SETTINGS.compute == "emr" else None
MODEL = model_asset(SETTINGS.root_uri)  # the latest successful model: image_scoring is scheduled on it


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
        from image_pipeline.planning.layout import run_key_for, run_layout
        from image_pipeline.planning.listing import scan_images
        from image_pipeline.planning.run_plan import build_run_plan, write_labels

        dag_run = context["dag_run"]
        modified_before = context.get("data_interval_end") or dag_run.run_after  # manual runs: trigger time
        params = dict(context["params"])
        images_uri = (params.get("images_uri") or "").strip() or run_layout(
            SETTINGS.root_uri, run_key_for(dag_run.run_id)).images_uri
        scan = scan_images(images_uri, SETTINGS.aws_conn_id, modified_before)
        for warning in scan.warnings():
            print(f"WARNING: {warning}")
        plan = build_run_plan(params, dag_run.run_id, modified_before, SETTINGS, scan.counts, EMR).as_dict()
        print(f"run plan: {plan}; the {len(plan['labels'])} classes in {write_labels(plan, SETTINGS.aws_conn_id)}")
        return plan

    @task(retries=0, outlets=[MODEL])
    def publish_report(plan: dict, cluster: dict, **context) -> dict:
        """Read the report back, write report.md, log the summary, enforce the quality gate; then record
        the run as the latest successful model (models/latest.json), which emits the model Asset's event.

        ``cluster`` is what terminate_cluster returned: the backends' cluster summary
        (``compute.contract.cluster_summary``: id, hours, cost, console link, process ids).
        """
        from airflow.sdk.exceptions import AirflowFailException

        from image_pipeline.compute.contract import cluster_summary_line
        from image_pipeline.publishing.latest_model import publish_run
        from image_pipeline.publishing.run_report import QualityGateError, headline_lines

        try:
            headline = publish_run(plan, SETTINGS.aws_conn_id)  # the gate fails before latest.json is touched
        except QualityGateError as exc:
            raise AirflowFailException(str(exc)) from exc
        for line in headline_lines(headline, plan["run_key"]):
            print(line)
        latest = headline["latest"]
        context["outlet_events"][MODEL].extra = {"run_key": latest["record"]["run_key"],
                                                 "models_uri": latest["record"]["models_uri"],
                                                 "replaced": latest["replaced"]}
        headline["cluster"] = cluster
        print(cluster_summary_line(cluster))
        return headline

    plan = plan_run()
    last_step, terminate = compute_steps(plan, STEP_NAMES, SETTINGS, EMR, "image_classification")
    # the report is published once the cluster is gone, with what the cluster cost
    last_step >> terminate
    last_step >> publish_report(plan, terminate)


image_classification()
