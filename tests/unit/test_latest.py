"""The latest successful model: written only after the quality gate, never by an older backfill, readable."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from image_pipeline.publishing.latest_model import NoModelError, latest_uri, publish_run, read_latest
from image_pipeline.publishing.run_report import QualityGateError
from image_pipeline.wiring.assets import MODEL_ASSET_NAME, model_asset
from sample_report import METRICS, SUMMARY

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_run(root: Path, run_key: str, accuracy: float, modified_before: str, min_accuracy: float = 0.5) -> dict:
    """A finished run's report and model under ``root``, and its plan."""
    run = root / "runs" / run_key
    (run / "report").mkdir(parents=True)
    (run / "report" / "summary.json").write_text(json.dumps(
        {**SUMMARY, "run_key": run_key, "multiclass": {"accuracy": accuracy, "macro_f1": accuracy}}))
    (run / "report" / "metrics.csv").write_text(METRICS)
    (run / "models" / "multiclass").mkdir(parents=True)
    (run / "models" / "multiclass" / "model.json").write_text(json.dumps(
        {"format": "image-pipeline-multiclass/1", "backbone": "mobilenet_v2", "labels": ["a", "b"],
         "weights_uri": f"file://{root}/weights/w.keras"}))
    return {"run_id": f"scheduled__{run_key}", "run_key": run_key, "root_uri": f"file://{root}",
            "models_uri": f"file://{run}/models", "report_uri": f"file://{run}/report",
            "min_accuracy": min_accuracy, "modified_before": modified_before}


def test_a_run_that_passes_its_gate_becomes_the_latest(tmp_path):
    plan = make_run(tmp_path, "r1", 0.8, "2026-02-01T00:00:00Z")
    headline = publish_run(plan, now=NOW)
    assert headline["latest"]["replaced"] is True and headline["latest"]["previous_run_key"] is None
    record = json.loads((tmp_path / "models" / "latest.json").read_text())
    trained = tmp_path / "runs" / "r1" / "models" / "multiclass" / "model.json"
    digest = hashlib.sha256(trained.read_bytes()).hexdigest()
    assert record == {
        "run_key": "r1", "run_id": "scheduled__r1", "models_uri": plan["models_uri"],
        "model_uri": f"file://{tmp_path}/models/published/sha256-{digest}/model.json", "model_sha256": digest,
        "trained_model_uri": f"{plan['models_uri']}/multiclass/model.json", "report_uri": plan["report_uri"],
        "backbone": "mobilenet_v2", "weights_uri": f"file://{tmp_path}/weights/w.keras", "labels": ["a", "b"],
        "multiclass_accuracy": 0.8, "min_accuracy": 0.5, "modified_before": "2026-02-01T00:00:00Z",
        "published_at": "2026-03-01T12:00:00Z"}
    assert read_latest(f"file://{tmp_path}") == record
    # no temporary file left; the lock file of the compare-and-swap stays (empty)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".latest.json.lock", "latest.json", "published"]
    assert (tmp_path / "models" / "published" / f"sha256-{digest}" / "model.json").read_bytes() == trained.read_bytes()


def test_a_gate_failure_leaves_the_previous_latest_untouched(tmp_path):
    publish_run(make_run(tmp_path, "r1", 0.8, "2026-02-01T00:00:00Z"), now=NOW)
    before = (tmp_path / "models" / "latest.json").read_bytes()
    worse = make_run(tmp_path, "r2", 0.6, "2026-03-01T00:00:00Z", min_accuracy=0.7)
    with pytest.raises(QualityGateError, match="below min_accuracy 0.7"):
        publish_run(worse, now=NOW)
    assert (tmp_path / "models" / "latest.json").read_bytes() == before
    assert (tmp_path / "runs" / "r2" / "report" / "report.md").exists()  # the report is still published


def test_a_newer_run_replaces_the_latest_and_an_older_backfill_does_not(tmp_path):
    publish_run(make_run(tmp_path, "feb", 0.8, "2026-02-01T00:00:00Z"), now=NOW)
    headline = publish_run(make_run(tmp_path, "mar", 0.9, "2026-03-01T00:00:00Z"), now=NOW)
    assert headline["latest"]["replaced"] and headline["latest"]["previous_run_key"] == "feb"
    assert read_latest(f"file://{tmp_path}")["run_key"] == "mar"
    backfill = publish_run(make_run(tmp_path, "jan", 0.95, "2026-01-01T00:00:00Z"), now=NOW)
    assert backfill["latest"]["replaced"] is False and backfill["latest"]["record"]["run_key"] == "mar"
    assert read_latest(f"file://{tmp_path}")["run_key"] == "mar"


def test_no_latest_yet_is_a_clear_error(tmp_path):
    with pytest.raises(NoModelError, match=f"no successful training run has published a model yet: "
                                           f"file://{tmp_path}/models/latest.json does not exist"):
        read_latest(f"file://{tmp_path}")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "latest.json").write_text('{"run_key": "r"}')
    with pytest.raises(NoModelError, match=r"latest.json lacks \['models_uri'"):
        read_latest(f"file://{tmp_path}")


def test_a_run_without_its_model_publishes_no_latest(tmp_path):
    plan = make_run(tmp_path, "r1", 0.8, "2026-02-01T00:00:00Z")
    (tmp_path / "runs" / "r1" / "models" / "multiclass" / "model.json").unlink()
    with pytest.raises(NoModelError, match="model.json does not exist"):
        publish_run(plan, now=NOW)
    assert not (tmp_path / "models" / "latest.json").exists()


@pytest.mark.parametrize("root", ["file:///data/store", "s3://bucket/image-classification"])
def test_the_model_asset_is_the_latest_json_of_the_root(root):
    asset = model_asset(root)
    assert asset.name == f"{MODEL_ASSET_NAME}:{root}" == f"image_classifier_model:{root}"
    assert model_asset(f"{root}/other").name != asset.name  # one asset per storage root
    assert asset.uri == latest_uri(root) == f"{root}/models/latest.json"
    assert model_asset(root) == asset  # both DAGs build the same asset from the same settings


@pytest.mark.parametrize("first", [None, "2026-01-01T00:00:00Z"])
def test_two_publishes_that_race_leave_the_newer_data_recorded(tmp_path, monkeypatch, first):
    """A backfill and a scheduled run publish at once (max_active_runs=2): whichever writes last, the record
    ends on the run with the more recent data, on an empty store and over an earlier record."""
    from publish_race import race_two_publishes

    if first:
        publish_run(make_run(tmp_path, "r0", 0.8, first), now=NOW)
    older = make_run(tmp_path, "older", 0.8, "2026-02-01T00:00:00Z")
    newer = make_run(tmp_path, "newer", 0.8, "2026-03-01T00:00:00Z")
    older_outcome, newer_outcome = race_two_publishes(older, newer, None, monkeypatch)
    assert read_latest(f"file://{tmp_path}")["run_key"] == "newer"
    assert newer_outcome["replaced"] is True and older_outcome["replaced"] is True  # older first, then newer
    assert newer_outcome["previous_run_key"] == "older"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".latest.json.lock", "latest.json", "published"]


def test_the_gated_model_cannot_change_after_its_gate(tmp_path, capsys):
    """Clearing and re-running the run's train_models rewrites its own model.json: the published copy, named by
    its digest, is what readers get; a published copy whose bytes changed is refused, naming both digests."""
    from image_pipeline.publishing.latest_model import verify_model

    plan = make_run(tmp_path, "r1", 0.8, "2026-02-01T00:00:00Z")
    publish_run(plan, now=NOW)
    record = read_latest(f"file://{tmp_path}")
    published = Path(record["model_uri"].removeprefix("file://"))
    gated = published.read_bytes()
    trained = tmp_path / "runs" / "r1" / "models" / "multiclass" / "model.json"
    trained.write_text(trained.read_text().replace('"labels": ["a", "b"]', '"labels": ["x", "y"]'))  # re-trained
    assert published.read_bytes() == gated and verify_model(gated, record["model_uri"], record["model_sha256"])
    published.write_bytes(gated.replace(b'"a"', b'"z"'))  # the copy itself altered
    with pytest.raises(NoModelError, match=f"has SHA-256 [0-9a-f]{{64}}, not the {record['model_sha256']} it was "
                                           "published with"):
        verify_model(published.read_bytes(), record["model_uri"], record["model_sha256"])
    publish_run(plan, now=NOW)  # publishing the run again publishes what it holds now, under its own digest
    again = read_latest(f"file://{tmp_path}")
    assert again["model_sha256"] != record["model_sha256"] and json.loads(
        Path(again["model_uri"].removeprefix("file://")).read_text())["labels"] == ["x", "y"]
