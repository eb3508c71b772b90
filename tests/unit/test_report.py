"""publish_report's reading and checking of a report, on file:// (s3:// is in tests/dag/test_s3_storage.py)."""

from __future__ import annotations

import json

import pytest

from image_pipeline.publishing.run_report import QualityGateError, ReportError, publish
from sample_report import METRICS, SUMMARY


def write(report, summary=SUMMARY, metrics=METRICS):
    report.mkdir(parents=True, exist_ok=True)
    if summary is not None:
        (report / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    if metrics is not None:
        (report / "metrics.csv").write_text(metrics)


def test_publishes_the_headline_and_report_md(tmp_path):
    write(tmp_path)
    headline = publish(f"file://{tmp_path}", 0.5)
    assert headline["multiclass_accuracy"] == 0.8 and headline["images"] == 22 and headline["rejects"] == 2
    assert headline["quality_gate"] == {"min_accuracy": 0.5, "passed": True}
    markdown = (tmp_path / "report.md").read_text()
    assert "80.0%" in markdown and "| a | b | 81.0 | 75.0 |" in markdown and "plots/confusion_matrix.png" in markdown


def test_report_md_states_the_share_of_the_variance_the_pca_keeps(tmp_path):
    write(tmp_path, {**SUMMARY, "feature_dim": 1280, "pca_components": 128, "pca_explained_variance_total": 0.873})
    publish(f"file://{tmp_path}", 0.5)
    assert "PCA to 128 components keeping 87.3% of the variance" in (tmp_path / "report.md").read_text()


def test_quality_gate_fails_after_writing_the_report(tmp_path):
    write(tmp_path)
    with pytest.raises(QualityGateError, match=r"accuracy 0.800 is below min_accuracy 0.9"):
        publish(f"file://{tmp_path}", 0.9)
    assert (tmp_path / "report.md").exists()


@pytest.mark.parametrize("summary,metrics,message", [
    (None, METRICS, "summary.json is missing"),
    ("", METRICS, "summary.json is empty"),
    ("{not json", METRICS, "summary.json is not valid JSON"),
    ("[1, 2]", METRICS, "summary.json holds a list"),
    ({"run_key": "r"}, METRICS, r"summary.json lacks \['backbone'"),
    ({**SUMMARY, "multiclass": {}}, METRICS, "no numeric multiclass.accuracy"),
    (SUMMARY, None, "metrics.csv is missing"),
    (SUMMARY, "   \n", "metrics.csv is empty"),
    (SUMMARY, "a,b\n1,2\n", "metrics.csv does not start with the columns"),
    (SUMMARY, METRICS.splitlines()[0] + "\n", "metrics.csv holds no model"),
    (SUMMARY, METRICS.replace("81.0", "high"), "metrics.csv line 2"),
])
def test_bad_reports_name_the_file_and_the_problem_and_delete_nothing(tmp_path, summary, metrics, message):
    write(tmp_path, summary, metrics)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "keep.png").write_bytes(b"png")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ReportError, match=message):
        publish(f"file://{tmp_path}", 0.5)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_headline_lines_say_accuracy_pairs_report_and_the_latest_model(tmp_path):
    from image_pipeline.publishing.run_report import headline_lines

    write(tmp_path)
    headline = publish(f"file://{tmp_path}", 0.5)
    replaced = {**headline, "latest": {"replaced": True, "uri": "file:///m/latest.json", "record": {"run_key": "r"}}}
    lines = headline_lines(replaced, "r")
    assert lines[0] == "multiclass accuracy 80.0% on 2 classes, 22 images (2 rejected), 1 pairwise models"
    assert lines[1] == "hardest pairs: a vs b 81.0%"
    assert lines[2] == 'seconds per step: {"extract_features": 10.0}'
    assert lines[3] == f"report: {headline['report_md']}"
    assert lines[4] == "latest successful model is now run r (file:///m/latest.json)"
    kept = {**headline, "latest": {"replaced": False, "uri": "u", "record": {"run_key": "newer"}}}
    assert headline_lines(kept, "r")[4] == ("latest successful model stays run newer: its data is more recent "
                                             "than this run's (u)")


def test_both_backends_summarise_a_terminated_cluster_in_one_shape():
    from image_pipeline.compute.contract import CLUSTER_SUMMARY_KEYS, cluster_summary, cluster_summary_line
    from image_pipeline.compute.emr.requests import cluster_cost

    local = cluster_summary("run-cluster", "local", 0.25, process_ids=[11, 12], console_link="")
    assert tuple(local) == CLUSTER_SUMMARY_KEYS and local["estimated_cost_usd"] == 0.0
    assert cluster_summary_line(local) == ("cluster run-cluster: local, 0.250 h, 0 normalized instance hours, "
                                           "about $0.00")
    from datetime import UTC, datetime
    describe = {"Cluster": {"Id": "j-1", "NormalizedInstanceHours": 16, "Status": {"Timeline": {
        "CreationDateTime": datetime(2026, 1, 1, 10, 0, tzinfo=UTC),
        "EndDateTime": datetime(2026, 1, 1, 10, 30, tzinfo=UTC)}}}}
    instances = [{"InstanceType": "m5.xlarge", "Market": "ON_DEMAND"}] * 3  # no timeline: the cluster's
    cost = cluster_cost(describe, {"m5.xlarge": 0.2}, instances, ebs_gib_month_usd=0.0)
    emr = cluster_summary(backend="emr", console_link="https://console/j-1", **cost)
    assert tuple(emr) == CLUSTER_SUMMARY_KEYS and emr["estimated_cost_usd"] == 0.3 and emr["process_ids"] == []
    assert cluster_summary_line(emr) == ("cluster j-1: emr, 0.500 h on 3 x m5.xlarge on-demand, 16 normalized "
                                         "instance hours, about $0.30 (https://console/j-1)")
    # an instance of a type with no price: the line says the estimate leaves it out
    cost = cluster_cost(describe, {}, instances[:1], ebs_gib_month_usd=0.0)
    assert cluster_summary_line(cluster_summary(backend="emr", **cost)) == (
        "cluster j-1: emr, 0.500 h on 1 x m5.xlarge on-demand, 16 normalized instance hours, about $0.00 WITHOUT "
        "1 x m5.xlarge (no price: the estimate is too low)")


SELECTED = {**SUMMARY, "multiclass": {
    "accuracy": 0.8, "macro_f1": 0.79, "accuracy_ci95": [0.7, 0.87],
    "model": "standardise + logistic regression (C=0.01)",
    "selection": {"folds": 5, "seed": 0, "rule": "highest cross-validated accuracy", "chosen": {
        "reduction": "none", "components": 0, "c": 0.01, "cv_accuracy": 0.82}, "table": [
        {"reduction": "none", "c": 0.01, "cv_accuracy": 0.82, "fold_accuracy_std": 0.02, "chosen": True},
        {"reduction": "pca128", "c": 1.0, "cv_accuracy": 0.74, "fold_accuracy_std": 0.03, "chosen": False}]},
    "answer_threshold": {"threshold": 0.61, "target_precision": 0.95, "target_met": True, "precision": 0.952,
                         "coverage": 0.7, "test_precision": 0.94, "test_coverage": 0.72,
                         "held_out": "out-of-fold predictions", "curve": [
                             {"threshold": 0.0, "chosen": False, "held_out_precision": 0.8, "held_out_coverage": 1.0,
                              "test_precision": 0.8, "test_coverage": 1.0},
                             {"threshold": 0.61, "chosen": True, "held_out_precision": 0.952,
                              "held_out_coverage": 0.7, "test_precision": 0.94, "test_coverage": 0.72}]}}}


def test_report_md_says_which_model_was_chosen_and_its_threshold(tmp_path):
    write(tmp_path, SELECTED)
    publish(f"file://{tmp_path}", 0.5)
    markdown = (tmp_path / "report.md").read_text()
    assert "Chosen: **none, C=0.01** (standardise + logistic regression (C=0.01)), by 5-fold" in markdown
    assert "(95% Wilson interval 70.0% to 87.0%)" in markdown
    assert "| none | 0.01 | 82.0% | 2.0% | **chosen** |" in markdown and "| pca128 | 1 | 74.0% | 3.0% |  |" in markdown
    assert "under **0.610** are answered \"not sure\"" in markdown
    assert "95.2% precision at 70.0% coverage, for a target of 95.0%; on the test split 94.0% precision" in markdown
    assert "| 0.000 | 80.0% | 100.0% | 80.0% | 100.0% |" in markdown
    assert "| **0.610** | 95.2% | 70.0% | 94.0% | 72.0% |" in markdown
    write(tmp_path, SUMMARY)  # a summary from before model selection: no such sections, no error
    publish(f"file://{tmp_path}", 0.5)
    assert "Multiclass model selection" not in (tmp_path / "report.md").read_text()


def test_multiclass_tables_from_counts_equal_scikit_learns_from_rows():
    """The evaluation gets (label, predicted) counts from Spark, never the rows: the per-class table, the
    matrix and accuracy/macro-F1 are scikit-learn's on the rows they count (a class never predicted, a class
    without test photos included)."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from image_jobs import report_tables

    labels = ["beagle", "pug", "Siamese", "Sphynx"]
    rng = np.random.default_rng(0)
    y_true = rng.choice(labels[:3], 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.choice(labels[:2], 500))
    counts = pd.DataFrame({"label": y_true, "predicted": y_pred}).groupby(["label", "predicted"]).size().rename(
        "count").reset_index()
    per_class, matrix, overall = report_tables.multiclass_tables(counts, labels)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(per_class[["precision", "recall", "f1"]].to_numpy(),
                               np.stack([precision, recall, f1], axis=1))
    assert per_class["support"].tolist() == support.tolist()
    assert (matrix.to_numpy() == confusion_matrix(y_true, y_pred, labels=labels)).all()
    assert overall == {"accuracy": float((y_true == y_pred).mean()), "macro_f1": float(np.mean(f1)),
                       "test_images": 500}
