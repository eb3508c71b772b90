"""The most classes a run may have (``conventions.MAX_CLASSES``) on the local backend.

The run's plan is built and its class list written to the labels file as ``plan_run`` does. Then
``train_models`` and ``evaluate_models`` run as the DAG runs them: the local backend's step operator
submits the plan's steps to a standalone cluster of their own. The features are synthetic (8-d), written
where the extraction would have written them, with one class on disk beyond the labels file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from image_pipeline.compute.local.cluster import start_cluster, stop_cluster
from sample_features import SAMPLE_IDENTITY, sample_feature_frame, write_sample_features

pytestmark = pytest.mark.spark


def thousand_class_plan(root: Path, labels: list[str]) -> dict:
    from image_pipeline.planning.run_plan import build_run_plan, write_labels
    from image_pipeline.wiring.params import dag_params
    from image_pipeline.wiring.settings import load_settings

    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": f"file://{root}"})
    params = {name: param.value for name, param in dag_params(settings).items()}
    params.update(pair_mode="one_vs_rest", focus_class=labels[0], split_ratios=[0.5], pca_components=4,
                  test_fraction=0.5, min_accuracy=0.0, iterations=20, weights_uri="random", runtime="tensorflow")
    plan = build_run_plan(params, "manual__thousand", datetime.now(UTC), settings, labels).as_dict()
    write_labels(plan)
    return plan


def test_a_thousand_classes_train_and_report_on_the_local_backend(spark, tmp_path, java_home):
    from image_jobs.conventions import MAX_CLASSES
    from image_pipeline.compute.local.operators import LocalSparkStepOperator
    from image_pipeline.compute.staging import stage_local

    labels = [f"class_{i:04d}" for i in range(MAX_CLASSES)]
    plan = thousand_class_plan(tmp_path, labels)
    frame = sample_feature_frame([*labels, "not_in_the_file"], per_class=6, dim=8, seed=9, noise=0.3)
    write_sample_features(spark, plan["features_uri"], plan["backbone"], plan["run_key"], frame)
    steps = Path(plan["steps_uri"].removeprefix("file://"))
    steps.mkdir(parents=True, exist_ok=True)
    (steps / "extract_features.json").write_text(json.dumps(  # what the extraction records, as far as read
        {"feature_identity": {"backbone": plan["backbone"], **SAMPLE_IDENTITY}, "seconds": 1.0}))
    artifacts = stage_local(f"file://{tmp_path}/artifacts")
    cluster = start_cluster(tmp_path / "cluster", workers=1, cores=2, memory_gb=3, python=sys.executable,
                            java_home=java_home)
    try:
        for step in ("train_models", "evaluate_models"):
            operator = LocalSparkStepOperator(task_id=step, step=step, plan=plan, cluster=asdict(cluster),
                                              artifacts=artifacts, python=sys.executable)
            assert operator.execute({})["exit_code"] == 0, step
    finally:
        stop_cluster(tmp_path / "cluster")
    models, report = (Path(plan[key].removeprefix("file://")) for key in ("models_uri", "report_uri"))
    training = json.loads((models / "training_summary.json").read_text())
    assert training["classes"] == labels and set(training["image_counts"].values()) == {6}  # the file's, not disk's
    assert training["multiclass"]["test_images"] == 3 * MAX_CLASSES
    summary = json.loads((report / "summary.json").read_text())
    assert summary["classes"] == labels
    confusion = pd.read_csv(report / "confusion_matrix.csv", index_col=0)
    assert confusion.shape == (MAX_CLASSES, MAX_CLASSES) and confusion.to_numpy().sum() == 3 * MAX_CLASSES
