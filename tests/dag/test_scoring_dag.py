"""image_scoring: parses offline, the Asset wiring between the two DAGs, and both DAGs end to end.

End to end on generated photos, on the local backend: scoring before any successful training fails
clearly; a training run publishes models/latest.json, emits the Asset's event and queues a scoring
run; the scoring run scores the inbox on its own cluster; a second run finds nothing new and starts
no cluster.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from test_dag_end_to_end import leftover_processes, task_states
from test_dag_integrity import HEAVY, parse_in_subprocess

from bad_images import rejected_files
from conftest import PROJECT_ROOT
from image_pipeline.local_cluster import cluster_processes_alive
from image_pipeline.sample_images import write_sample_images

SCORING_FILE = PROJECT_ROOT / "dags" / "image_scoring.py"
TRAINING_FILE = PROJECT_ROOT / "dags" / "image_classification.py"
ROOT = "file:///srv/images-store"


@pytest.fixture(scope="module")
def scoring_parse():
    return parse_in_subprocess("local", SCORING_FILE, IMAGE_PIPELINE_ROOT_URI=ROOT)


def test_scoring_dag_parses_fast_offline_without_heavy_imports(scoring_parse):
    print(f"image_scoring parse time: {scoring_parse['seconds']:.2f} s")
    assert set(scoring_parse["heavy_modules"]) & set(HEAVY) == set()
    assert scoring_parse["dag_id"] == "image_scoring"
    assert "latest successful model" in scoring_parse["doc_md"]
    assert scoring_parse["max_active_runs"] == 1 and scoring_parse["catchup"] is False
    assert set(scoring_parse["params"]) == {"batch_size", "local_workers", "local_worker_cores",
                                            "local_worker_memory_gb"}


def test_scoring_task_graph_on_both_backends(scoring_parse):
    tasks = scoring_parse["tasks"]
    assert set(tasks) == {"plan_scoring", "stage_artifacts", "create_cluster", "score_inbox", "terminate_cluster",
                          "summarise_scoring"}
    assert tasks["create_cluster"]["is_setup"] and tasks["terminate_cluster"]["is_teardown"]
    assert tasks["terminate_cluster"]["trigger_rule"] == "all_done_setup_success"
    assert tasks["score_inbox"]["upstream"] == ["create_cluster", "plan_scoring", "stage_artifacts"]
    assert tasks["score_inbox"]["operator"] == "LocalSparkStepOperator"
    assert {"score_inbox", "create_cluster"} <= set(tasks["terminate_cluster"]["upstream"])
    assert {"terminate_cluster", "score_inbox"} <= set(tasks["summarise_scoring"]["upstream"])
    emr = parse_in_subprocess("emr", SCORING_FILE, IMAGE_PIPELINE_ROOT_URI="s3://bucket/prefix")["tasks"]
    assert set(emr) == {"plan_scoring", "stage_artifacts", "emr_requests", "create_cluster", "add_steps",
                        "score_inbox", "terminate_cluster", "summarise_scoring"}
    assert emr["score_inbox"]["operator"] == "EmrStepWithLogsSensor" and "add_steps" in emr["score_inbox"]["upstream"]
    assert emr["add_steps"]["retries"] == 0 and emr["terminate_cluster"]["is_teardown"]


def test_the_model_asset_links_training_to_scoring(scoring_parse):
    asset = {"name": f"image_classifier_model:{ROOT}", "uri": f"{ROOT}/models/latest.json"}
    training = parse_in_subprocess("local", TRAINING_FILE, IMAGE_PIPELINE_ROOT_URI=ROOT)
    assert training["tasks"]["publish_report"]["outlets"] == [asset]
    assert all(t["outlets"] == [] for name, t in training["tasks"].items() if name != "publish_report")
    assert scoring_parse["timetable"] == "AssetOrTimeSchedule"
    assert scoring_parse["schedule_assets"] == [asset] and scoring_parse["schedule_cron"] == "0 * * * *"
    events_only = parse_in_subprocess("local", SCORING_FILE, IMAGE_PIPELINE_ROOT_URI=ROOT,
                                      IMAGE_PIPELINE_SCORING_SCHEDULE="none")
    assert events_only["timetable"] == "AssetTriggeredTimetable" and events_only["schedule_assets"] == [asset]
    every_15 = parse_in_subprocess("local", SCORING_FILE, IMAGE_PIPELINE_ROOT_URI=ROOT,
                                   IMAGE_PIPELINE_SCORING_SCHEDULE="*/15 * * * *")
    assert every_15["schedule_cron"] == "*/15 * * * *"


# ---- end to end, local backend -------------------------------------------------------------------

PHOTOGRAPHED = datetime(2026, 1, 5, tzinfo=UTC)
TRAIN_CONF = {"max_per_class": 12, "split_ratios": [0.5], "pca_components": 16, "local_worker_cores": 2,
              "local_worker_memory_gb": 3, "min_accuracy": 0.5}
SCORE_CONF = {"local_worker_cores": 2, "local_worker_memory_gb": 3, "batch_size": 8}


def set_mtime(folder: Path, when: datetime) -> None:
    for path in folder.rglob("*"):
        os.utime(path, (when.timestamp(), when.timestamp()))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """3 classes x 12 training photos; an inbox of 6 other photos of those classes and a corrupt one."""
    root = tmp_path_factory.mktemp("scoring")
    write_sample_images(root / "images", n_classes=3, per_class=12, seed=31)
    for photo in write_sample_images(root / "field", n_classes=3, per_class=2, seed=32):
        target = root / "inbox" / "field_team" / f"{photo.parent.name}__{photo.name}"  # the true class before "__"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, target)
    (root / "inbox" / "field_team" / "blurry.jpg").write_bytes(rejected_files()["truncated.jpg"])
    set_mtime(root / "images", PHOTOGRAPHED)
    set_mtime(root / "inbox", PHOTOGRAPHED)
    return root


@pytest.fixture(scope="module")
def dags(store, converted_weights, java_home, airflow_db):
    """Both DAGs as the DAG processor parses them, configured for this module's storage root."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGE_PIPELINE_ROOT_URI", f"file://{store}")
        mp.setenv("IMAGE_PIPELINE_WEIGHTS_URI", f"file://{converted_weights}")
        mp.setenv("IMAGE_PIPELINE_RETRIES", "0")
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
        assert not bag.import_errors, bag.import_errors
        yield bag.get_dag("image_classification"), bag.get_dag("image_scoring")


def state(dag_run) -> str:
    return str(getattr(dag_run.state, "value", dag_run.state))


@pytest.fixture(scope="module")
def runs(dags, store):
    """Scoring before any model; training (scoring unpaused, to see its run queued); scoring twice."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    training, scoring = dags
    before_any_model = scoring.test(run_conf=SCORE_CONF)
    with create_session() as session:  # the first dag.test() wrote both DAGs to the metadata database
        session.query(DagModel).filter(DagModel.dag_id == "image_scoring").update({"is_paused": False})
    trained = training.test(logical_date=datetime(2026, 1, 20, tzinfo=UTC), run_conf=TRAIN_CONF)
    first = scoring.test(run_conf=SCORE_CONF)
    predictions_after_first = (next((store / "predictions").iterdir()) / "predictions.csv").read_text()
    second = scoring.test(run_conf=SCORE_CONF)
    return {"before_any_model": before_any_model, "trained": trained, "first": first, "second": second,
            "predictions_after_first": predictions_after_first}


def test_scoring_before_any_successful_training_fails_clearly(runs, store):
    dag_run = runs["before_any_model"]
    assert state(dag_run) == "failed"
    states = task_states(dag_run)
    assert states["plan_scoring"] == "failed"
    assert states["create_cluster"] == "upstream_failed" and states["score_inbox"] == "upstream_failed"
    from image_pipeline.layout import run_key_for

    assert not (store / "scoring" / run_key_for(dag_run.run_id)).exists()  # no cluster was started


def test_training_records_the_latest_model_and_emits_the_asset_event(runs, store):
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from image_pipeline.layout import run_key_for

    dag_run = runs["trained"]
    assert state(dag_run) == "success", task_states(dag_run)
    latest = json.loads((store / "models" / "latest.json").read_text())
    run_key = run_key_for(dag_run.run_id)
    assert latest["run_key"] == run_key and latest["models_uri"] == f"file://{store}/runs/{run_key}/models"
    assert latest["multiclass_accuracy"] >= TRAIN_CONF["min_accuracy"] and latest["backbone"] == "mobilenet_v2"
    with create_session() as session:
        asset = session.query(AssetModel).filter(AssetModel.name == f"image_classifier_model:file://{store}").one()
        assert asset.uri == f"file://{store}/models/latest.json"
        events = session.query(AssetEvent).filter(AssetEvent.asset_id == asset.id,
                                                  AssetEvent.source_run_id == dag_run.run_id).all()
        assert len(events) == 1 and events[0].source_dag_id == "image_classification"
        assert events[0].source_task_id == "publish_report"
        assert events[0].extra["run_key"] == run_key and events[0].extra["replaced"] is True
        queued = session.query(AssetDagRunQueue).filter(AssetDagRunQueue.asset_id == asset.id).all()
        assert [q.target_dag_id for q in queued] == ["image_scoring"]  # the scheduler would start it


def test_scoring_scores_the_inbox_with_the_latest_model(runs, store):
    dag_run = runs["first"]
    assert state(dag_run) == "success"
    assert task_states(dag_run) == {t: "success" for t in ("plan_scoring", "stage_artifacts", "create_cluster",
                                                           "score_inbox", "terminate_cluster", "summarise_scoring")}
    latest = json.loads((store / "models" / "latest.json").read_text())
    rows = pd.read_csv(store / "predictions" / latest["run_key"] / "predictions.csv")
    assert len(rows) == 7 and rows["path"].is_unique
    bad = rows[rows["path"].str.endswith("blurry.jpg")]
    assert bad["top1_class"].isna().all() and bad["reason"].str.startswith("corrupt or truncated image").all()
    good = rows[rows["reason"].isna()]
    truth = good["path"].map(lambda p: Path(p).name.split("__")[0])
    assert (good["top1_class"] == truth).sum() >= 5  # 6 photos of 3 classes; measured: 6/6
    from image_pipeline.layout import run_key_for

    cluster = store / "scoring" / run_key_for(dag_run.run_id) / "cluster"
    assert json.loads((cluster / "cluster.json").read_text())["processes"]
    assert cluster_processes_alive(cluster) == [] and leftover_processes(str(cluster)) == []


def test_a_run_with_nothing_new_starts_no_cluster(runs, store):
    dag_run = runs["second"]
    assert state(dag_run) == "success"
    states = task_states(dag_run)
    assert states["plan_scoring"] == "skipped"
    assert {states[t] for t in ("create_cluster", "score_inbox", "terminate_cluster", "summarise_scoring")} == {
        "skipped"}
    from image_pipeline.layout import run_key_for

    assert not (store / "scoring" / run_key_for(dag_run.run_id)).exists()
    latest = json.loads((store / "models" / "latest.json").read_text())
    assert (store / "predictions" / latest["run_key"] / "predictions.csv").read_text() == \
        runs["predictions_after_first"]
