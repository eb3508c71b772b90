"""publish_report's reading and checking of a report, on file:// (s3:// is in tests/dag/test_s3_storage.py)."""

from __future__ import annotations

import json

import pytest

from image_pipeline.report import QualityGateError, ReportError, publish

SUMMARY = {"run_key": "r", "backbone": "mobilenet_v2", "classes": ["a", "b"], "image_counts": {"a": 10, "b": 12},
           "multiclass": {"accuracy": 0.8, "macro_f1": 0.79}, "rejects": {"count": 2},
           "hardest_pairs": [{"class_1": "a", "class_2": "b", "mean_pct": 81.0, "min_pct": 75.0}],
           "seconds_per_step": {"extract_features": 10.0}, "plots": ["confusion_matrix.png"]}
METRICS = ("class_1,class_2,split,iteration,num_model,predict_pct,nb_train,nb_test,nb_correct\n"
           "a,b,0.5,100,1,81.0,10,10,8\n")


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
