"""
### Scoring the field team's photos with the latest successful model

Photos dropped anywhere under `<root>/inbox/` are classified by the model of the latest training run
that passed its quality gate (`<root>/models/latest.json`), on a transient Spark cluster:

1. **plan_scoring** reads the latest successful model (fails clearly when no training run has
   passed yet) and plans the run; when every inbox photo already has a prediction from that model,
   the run stops here (skipped) and no cluster starts;
2. **create_cluster** (setup) starts the cluster: a local Spark standalone cluster by default,
   AWS EMR with `IMAGE_PIPELINE_COMPUTE=emr`;
3. **score_inbox** scores the photos not scored yet by this model and rewrites
   `<root>/predictions/<model run_key>/predictions.csv` (path, top-1 class and probability, top 3,
   reason when a photo could not be scored);
4. **terminate_cluster** (teardown) always stops the cluster;
5. **summarise_scoring** logs what was scored and where the predictions are.

Runs whenever `image_classification` publishes a new model (the `image_classifier_model:<root>` Asset),
and polls the inbox on `IMAGE_PIPELINE_SCORING_SCHEDULE` (default hourly; `none` for model events only).
A photo is never scored twice by the same model; a new model scores the whole inbox again.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from image_pipeline.compute.backends import compute_steps
from image_pipeline.compute.emr.requests import load_emr_settings
from image_pipeline.compute.steps import SCORE, SCORING_STEP_NAMES
from image_pipeline.wiring.assets import scoring_schedule
from image_pipeline.wiring.params import scoring_params
from image_pipeline.wiring.settings import load_settings

SETTINGS = load_settings()
EMR = load_emr_settings() if SETTINGS.compute == "emr" else None


@dag(
    schedule=scoring_schedule(SETTINGS.root_uri, SETTINGS.scoring_schedule),
    doc_md=__doc__,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one scoring run at a time: each photo is scored once per model
    params=scoring_params(SETTINGS, EMR),
    tags=["images", "spark", "scoring", SETTINGS.compute],
    default_args={"retries": SETTINGS.retries, "retry_delay": pendulum.duration(seconds=SETTINGS.retry_delay_seconds)},
)
def image_scoring():
    @task
    def plan_scoring(**context) -> dict:
        """Read the latest successful model, plan the run; skip it when the inbox holds nothing new."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from image_pipeline.planning.run_plan import PlanError
        from image_pipeline.planning.scoring_plan import build_scoring_plan, unscored_photos
        from image_pipeline.publishing.latest_model import NoModelError, read_latest

        dag_run = context["dag_run"]
        modified_before = context.get("data_interval_end") or dag_run.run_after  # asset or manual: run time
        try:
            latest = read_latest(SETTINGS.root_uri, SETTINGS.aws_conn_id)
            plan = build_scoring_plan(dict(context["params"]), dag_run.run_id, modified_before, SETTINGS, latest,
                                      EMR)
        except (NoModelError, PlanError) as exc:
            raise AirflowFailException(str(exc)) from exc
        print(f"model: run {plan.model_run_key} ({plan.backbone}, {len(plan.labels)} classes, "
              f"accuracy {latest['multiclass_accuracy']:.3f}) from {plan.models_uri}")
        listed, unscored = unscored_photos(plan.layout.inbox_uri, plan.layout.predictions_uri, modified_before,
                                           SETTINGS.aws_conn_id)
        print(f"inbox {plan.layout.inbox_uri}: {listed} photo(s) modified before {plan.modified_before}, "
              f"{unscored} without a prediction from this model")
        if unscored == 0:
            raise AirflowSkipException(f"nothing new to score in {plan.layout.inbox_uri}: no cluster started")
        plan = plan.as_dict()
        print(f"scoring plan: {plan}")
        return plan

    @task(retries=0)
    def summarise_scoring(plan: dict, cluster: dict) -> dict:
        """Log what the scoring step did (from its summary) and where the predictions are."""
        import json

        from image_pipeline.compute.contract import cluster_summary_line
        from image_pipeline.planning.layout import join
        from image_pipeline.planning.objects import object_path

        summary = json.loads(object_path(join(plan["steps_uri"], f"{SCORE}.json"), SETTINGS.aws_conn_id)
                             .read_text())
        print(f"scored {summary['scored_now']} new photo(s) with run {plan['model_run_key']}'s model, "
              f"{summary.get('uncertain_now', 0)} of them uncertain (answer threshold "
              f"{summary.get('threshold_source', 'none')}); "
              f"{summary['not_scored_now']} could not be scored (reasons in predictions.csv); "
              f"{summary['skipped_scored_earlier']} scored earlier")
        print(f"predictions: {summary['predictions_csv']} ({summary['predictions_total']} rows)")
        summary["cluster"] = cluster
        print(cluster_summary_line(cluster))
        return summary

    plan = plan_scoring()
    last_step, terminate = compute_steps(plan, SCORING_STEP_NAMES, SETTINGS, EMR, "image_scoring")
    last_step >> terminate
    last_step >> summarise_scoring(plan, terminate)


image_scoring()
