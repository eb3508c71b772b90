"""The whole DAG with dag.test() on generated images: success, failure with teardown, backfill semantics."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from conftest import PROJECT_ROOT
from image_pipeline.local_cluster import cluster_processes_alive
from image_pipeline.sample_images import write_sample_images

pytestmark = pytest.mark.spark

OLD = datetime(2026, 1, 5, tzinfo=UTC)  # the first three classes were photographed here
NEW = datetime(2026, 2, 10, tzinfo=UTC)  # the fourth class arrived later
RUN_CONF = {"max_per_class": 12, "local_worker_cores": 2, "local_worker_memory_gb": 3, "min_accuracy": 0.3}


def set_mtime(folder: Path, when: datetime) -> None:
    for path in folder.rglob("*"):
        os.utime(path, (when.timestamp(), when.timestamp()))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    images = root / "images"
    write_sample_images(images, n_classes=4, per_class=12, seed=21)
    labels = sorted(p.name for p in images.iterdir())
    for label in labels[:3]:
        set_mtime(images / label, OLD)
    set_mtime(images / labels[3], NEW)
    return root


@pytest.fixture(scope="module")
def dag(root, converted_weights, java_home, airflow_db):
    """The DAG as the DAG processor parses it, configured for this module's storage root."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGE_PIPELINE_ROOT_URI", f"file://{root}")
        mp.setenv("IMAGE_PIPELINE_WEIGHTS_URI", f"file://{converted_weights}")
        mp.setenv("IMAGE_PIPELINE_RETRIES", "0")
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "image_classification.py"))
        assert not bag.import_errors, bag.import_errors
        yield bag.get_dag("image_classification")


def task_states(dag_run) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_run.dag_id,
                                                 TaskInstance.run_id == dag_run.run_id).all()
        return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis}


def leftover_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (a run's cluster folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(pid) != os.getpid():
            found.append(cmdline[:200])
    return found


def run_dir(root: Path, dag_run) -> Path:
    from image_pipeline.layout import run_key_for

    return root / "runs" / run_key_for(dag_run.run_id)


@pytest.fixture(scope="module")
def backfill_runs(dag, root):
    """Two scheduled intervals: before and after the fourth class arrived."""
    first = dag.test(logical_date=datetime(2026, 1, 20, tzinfo=UTC), run_conf=RUN_CONF)
    second = dag.test(logical_date=datetime(2026, 2, 20, tzinfo=UTC), run_conf=RUN_CONF)
    return first, second


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
