"""Both DAGs with dag.test() on generated images, on the local backend, sharing one storage root.

image_classification: success, backfill semantics (two scheduled intervals, the second after a new
class folder landed), a failed step that still stops the cluster. image_scoring around it: scoring
before any successful training fails clearly; a training run publishes models/latest.json, emits the
model Asset's event and queues a scoring run; the scoring run scores the inbox on its own cluster; a
second scoring run finds nothing new and starts no cluster.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from bad_images import rejected_files
from dag_runs import leftover_processes, set_mtime, task_states
from image_pipeline.compute.local.cluster import cluster_processes_alive
from image_tools.sample_images import write_sample_images
from project_paths import PROJECT_ROOT

pytestmark = pytest.mark.spark

OLD = datetime(2026, 1, 5, tzinfo=UTC)  # the first three classes were photographed here
NEW = datetime(2026, 2, 10, tzinfo=UTC)  # the fourth class arrived later
RUN_CONF = {"max_per_class": 12, "local_worker_cores": 2, "local_worker_memory_gb": 3, "min_accuracy": 0.3}
SCORE_CONF = {"local_worker_cores": 2, "local_worker_memory_gb": 3, "batch_size": 8}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    images = root / "images"
    write_sample_images(images, n_classes=4, per_class=12, seed=21)
    labels = sorted(p.name for p in images.iterdir())
    for label in labels[:3]:
        set_mtime(images / label, OLD)
    set_mtime(images / labels[3], NEW)
    # the field team's inbox: 2 other photos of each class (true class before "__") and a corrupt one
    for photo in write_sample_images(root / "field", n_classes=4, per_class=2, seed=32):
        target = root / "inbox" / "field_team" / f"{photo.parent.name}__{photo.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, target)
    (root / "inbox" / "field_team" / "blurry.jpg").write_bytes(rejected_files()["truncated.jpg"])
    set_mtime(root / "inbox", OLD)
    return root


@pytest.fixture(scope="module")
def dags(root, converted_weights, java_home, airflow_db):
    """Both DAGs as the DAG processor parses them, configured for this module's storage root."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGE_PIPELINE_ROOT_URI", f"file://{root}")
        mp.setenv("IMAGE_PIPELINE_WEIGHTS_URI", f"file://{converted_weights}")
        mp.setenv("IMAGE_PIPELINE_RETRIES", "0")
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
        assert not bag.import_errors, bag.import_errors
        yield bag.get_dag("image_classification"), bag.get_dag("image_scoring")


@pytest.fixture(scope="module")
def dag(dags):
    return dags[0]


def run_dir(root: Path, dag_run) -> Path:
    from image_pipeline.planning.layout import run_key_for

    return root / "runs" / run_key_for(dag_run.run_id)


def state(dag_run) -> str:
    return str(getattr(dag_run.state, "value", dag_run.state))


@pytest.fixture(scope="module")
def runs(dags, root):
    """Scoring before any model; two scheduled training intervals, before and after the fourth class
    arrived (scoring unpaused, to see its run queued); then scoring twice."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    training, scoring = dags
    before_any_model = scoring.test(run_conf=SCORE_CONF)
    with create_session() as session:  # the first dag.test() wrote both DAGs to the metadata database
        session.query(DagModel).filter(DagModel.dag_id == "image_scoring").update({"is_paused": False})
    first = training.test(logical_date=datetime(2026, 1, 20, tzinfo=UTC), run_conf=RUN_CONF)
    second = training.test(logical_date=datetime(2026, 2, 20, tzinfo=UTC), run_conf=RUN_CONF)
    scored = scoring.test(run_conf=SCORE_CONF)
    predictions_after_first = (next((root / "predictions").iterdir()) / "predictions.csv").read_text()
    scored_again = scoring.test(run_conf=SCORE_CONF)
    return {"before_any_model": before_any_model, "backfill": (first, second), "scored": scored,
            "scored_again": scored_again, "predictions_after_first": predictions_after_first}


@pytest.fixture(scope="module")
def backfill_runs(runs):
    return runs["backfill"]


def test_every_task_succeeds_and_the_report_is_complete(root, backfill_runs):
    _, dag_run = backfill_runs
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    states = task_states(dag_run)
    assert states == {t: "success" for t in ("plan_run", "stage_artifacts", "create_cluster", "extract_features",
                                             "train_models", "evaluate_models", "publish_report",
                                             "terminate_cluster")}
    report = run_dir(root, dag_run) / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert len(summary["classes"]) == 4 and summary["images"] == 48
    metrics = pd.read_csv(report / "metrics.csv")
    assert len(metrics) == 6 * 9  # 4 classes: 6 pairs x 9 default split ratios
    assert (metrics["nb_train"] + metrics["nb_test"] == 24).all()
    assert summary["multiclass"]["accuracy"] >= 0.8
    assert "extract_features" in summary["seconds_per_step"]
    markdown = (report / "report.md").read_text()
    assert "Multiclass accuracy" in markdown and "plots/confusion_matrix.png" in markdown
    assert all((report / "plots" / name).exists() for name in summary["plots"])


def test_no_spark_process_of_the_runs_is_left(root, backfill_runs):
    for dag_run in backfill_runs:
        cluster = run_dir(root, dag_run) / "cluster"
        assert json.loads((cluster / "cluster.json").read_text())["processes"]
        assert cluster_processes_alive(cluster) == []
        assert leftover_processes(str(cluster)) == []


def test_backfilled_intervals_see_different_image_sets(root, backfill_runs):
    first, second = (json.loads((run_dir(root, r) / "report" / "summary.json").read_text()) for r in backfill_runs)
    assert len(first["classes"]) == 3 and first["images"] == 36
    assert len(second["classes"]) == 4 and second["images"] == 48
    assert set(first["classes"]) < set(second["classes"])
    # the later run extracted only the new class: the earlier rows were reused
    extract = json.loads((run_dir(root, backfill_runs[1]) / "steps" / "extract_features.json").read_text())
    assert extract["processed"] == 12 and extract["skipped_done_earlier"] == 36


def test_a_failed_step_fails_the_run_and_still_stops_the_cluster(dag, root, backfill_runs):
    broken = root / "images" / "zz_broken"
    broken.mkdir()
    for i in range(12):
        (broken / f"{i}.jpg").write_bytes(b"not a photo")
    set_mtime(broken, OLD)
    labels = sorted(p.name for p in (root / "images").iterdir())
    try:
        dag_run = dag.test(logical_date=datetime(2026, 3, 1, tzinfo=UTC), run_conf={**RUN_CONF, "labels": labels})
    finally:
        for path in broken.iterdir():
            path.unlink()
        broken.rmdir()
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "failed"
    states = task_states(dag_run)
    assert states["extract_features"] == "success"  # the broken files became rejects
    assert states["train_models"] == "failed"  # a requested class has no usable images
    assert states["evaluate_models"] == "upstream_failed"
    assert states["terminate_cluster"] == "success"
    assert states["publish_report"] == "upstream_failed"
    cluster = run_dir(root, dag_run) / "cluster"
    assert cluster_processes_alive(cluster) == [] and leftover_processes(str(cluster)) == []


# ---- image_scoring around the training runs ------------------------------------------------------

def test_scoring_before_any_successful_training_fails_clearly(runs, root):
    from image_pipeline.planning.layout import run_key_for

    dag_run = runs["before_any_model"]
    assert state(dag_run) == "failed"
    states = task_states(dag_run)
    assert states["plan_scoring"] == "failed"
    assert states["create_cluster"] == "upstream_failed" and states["score_inbox"] == "upstream_failed"
    assert not (root / "scoring" / run_key_for(dag_run.run_id)).exists()  # no cluster was started


def test_training_records_the_latest_model_and_emits_the_asset_event(runs, root):
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from image_pipeline.planning.layout import run_key_for

    dag_run = runs["backfill"][1]
    latest = json.loads((root / "models" / "latest.json").read_text())
    run_key = run_key_for(dag_run.run_id)
    assert latest["run_key"] == run_key and latest["models_uri"] == f"file://{root}/runs/{run_key}/models"
    assert latest["multiclass_accuracy"] >= RUN_CONF["min_accuracy"] and latest["backbone"] == "mobilenet_v2"
    with create_session() as session:
        asset = session.query(AssetModel).filter(AssetModel.name == f"image_classifier_model:file://{root}").one()
        assert asset.uri == f"file://{root}/models/latest.json"
        for trained in runs["backfill"]:  # one event per successful training run
            events = session.query(AssetEvent).filter(AssetEvent.asset_id == asset.id,
                                                      AssetEvent.source_run_id == trained.run_id).all()
            assert len(events) == 1 and events[0].source_dag_id == "image_classification"
            assert events[0].source_task_id == "publish_report"
            assert events[0].extra["run_key"] == run_key_for(trained.run_id) and events[0].extra["replaced"] is True
        queued = session.query(AssetDagRunQueue).filter(AssetDagRunQueue.asset_id == asset.id).all()
        assert [q.target_dag_id for q in queued] == ["image_scoring"]  # the scheduler would start it


def test_scoring_scores_the_inbox_with_the_latest_model(runs, root):
    from image_pipeline.planning.layout import run_key_for

    dag_run = runs["scored"]
    assert state(dag_run) == "success"
    assert task_states(dag_run) == {t: "success" for t in ("plan_scoring", "stage_artifacts", "create_cluster",
                                                           "score_inbox", "terminate_cluster", "summarise_scoring")}
    latest = json.loads((root / "models" / "latest.json").read_text())
    rows = pd.read_csv(root / "predictions" / latest["run_key"] / "predictions.csv")
    assert len(rows) == 9 and rows["path"].is_unique
    bad = rows[rows["path"].str.endswith("blurry.jpg")]
    assert bad["top1_class"].isna().all() and bad["reason"].str.startswith("corrupt or truncated image").all()
    good = rows[rows["reason"].isna()]
    truth = good["path"].map(lambda p: Path(p).name.split("__")[0])
    assert (good["top1_class"] == truth).sum() >= 7  # 8 photos of 4 classes
    cluster = root / "scoring" / run_key_for(dag_run.run_id) / "cluster"
    assert json.loads((cluster / "cluster.json").read_text())["processes"]
    assert cluster_processes_alive(cluster) == [] and leftover_processes(str(cluster)) == []


def test_a_scoring_run_with_nothing_new_starts_no_cluster(runs, root):
    from image_pipeline.planning.layout import run_key_for

    dag_run = runs["scored_again"]
    assert state(dag_run) == "success"
    states = task_states(dag_run)
    assert states["plan_scoring"] == "skipped"
    assert {states[t] for t in ("create_cluster", "score_inbox", "terminate_cluster", "summarise_scoring")} == {
        "skipped"}
    assert not (root / "scoring" / run_key_for(dag_run.run_id)).exists()
    latest = json.loads((root / "models" / "latest.json").read_text())
    assert (root / "predictions" / latest["run_key"] / "predictions.csv").read_text() == \
        runs["predictions_after_first"]
