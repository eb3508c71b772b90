"""The scoring run's plan, layout and step: URIs, arguments (same on both backends), the inbox pre-check."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest

from command_lines import option
from emr_bodies import ARTIFACTS, validate
from image_pipeline.compute.emr.requests import emr_steps, job_flow_overrides, load_emr_settings
from image_pipeline.compute.steps import step_by_name, steps_for
from image_pipeline.conventions import photo_key
from image_pipeline.planning.layout import run_key_for
from image_pipeline.planning.run_plan import PlanError
from image_pipeline.planning.scoring_plan import build_scoring_plan, unscored_photos
from image_pipeline.wiring.settings import load_settings

WHEN = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
PARAMS = {"batch_size": 16, "local_workers": 1, "local_worker_cores": 2, "local_worker_memory_gb": 3}


def latest(root: str) -> dict:
    return {"run_key": "scheduled__2026-02-22T00_00_00_00_00", "models_uri": f"{root}/runs/train/models",
            "model_uri": f"{root}/runs/train/models/multiclass/model.json", "backbone": "mobilenet_v2",
            "weights_uri": f"{root}/weights/mobilenet_v2_imagenet.keras", "labels": ["beagle", "pug"],
            "multiclass_accuracy": 0.9, "modified_before": "2026-02-22T00:00:00Z"}


def test_the_plan_places_a_scoring_run_under_scoring_and_its_predictions_under_the_model():
    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": "file:///data"})
    plan = build_scoring_plan(PARAMS, "asset_triggered__2026-03-01T10:00:00+00:00", WHEN, settings,
                              latest("file:///data")).as_dict()
    assert json.loads(json.dumps(plan)) == plan
    assert plan["kind"] == "scoring"
    assert plan["run_key"] == run_key_for("asset_triggered__2026-03-01T10:00:00+00:00")
    assert plan["inbox_uri"] == "file:///data/inbox"
    assert plan["predictions_uri"] == "file:///data/predictions/scheduled__2026-02-22T00_00_00_00_00"
    assert plan["cluster_uri"] == f"file:///data/scoring/{plan['run_key']}/cluster"
    assert plan["steps_uri"] == f"file:///data/scoring/{plan['run_key']}/steps"
    assert plan["models_uri"] == "file:///data/runs/train/models" and plan["modified_before"] == "2026-03-01T10:00:00Z"
    (step,) = steps_for(plan)
    assert step == step_by_name(plan, "score_inbox")
    assert step.entry_script == "score_inbox.py"
    assert list(step.args) == [
        "--inbox-uri=file:///data/inbox", f"--predictions-uri={plan['predictions_uri']}",
        "--model-uri=file:///data/runs/train/models", f"--run-key={plan['run_key']}",
        "--modified-before=2026-03-01T10:00:00Z", "--batch-size=16",
        "--weights-uri=file:///data/weights/mobilenet_v2_imagenet.keras",
        f"--summary-uri={plan['steps_uri']}/score_inbox.json", "--read-concurrency=32",
        "--runtime=openvino", "--precision=fp32"]
    with pytest.raises(ValueError, match="unknown step 'train_models'; steps are score_inbox"):
        step_by_name(plan, "train_models")


def test_emr_runs_the_same_step_with_the_staged_weights_and_a_valid_request():
    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": "s3://bucket/prefix", "IMAGE_PIPELINE_COMPUTE": "emr"})
    emr = load_emr_settings({})
    plan = build_scoring_plan({**PARAMS, "emr_core_instance_count": 1}, "manual__2026-03-01T10:00:00+00:00", WHEN,
                              settings, latest("s3://bucket/prefix"), emr).as_dict()
    staged = {**ARTIFACTS, "weights_uri": "s3://bucket/prefix/artifacts/weights-1/mnv2.keras"}
    (step,) = emr_steps(plan, staged)
    validate("AddJobFlowSteps", {"JobFlowId": "j-1", "Steps": [step]})
    args = step["HadoopJarStep"]["Args"]
    assert args[:2] == ["spark-submit", "--deploy-mode"] and args[7] == "s3://bucket/prefix/artifacts/abc/score_inbox.py"
    local_args = list(steps_for(plan, staged["weights_uri"])[0].args)
    assert args[8:] == local_args and "--weights-uri=s3://bucket/prefix/artifacts/weights-1/mnv2.keras" in local_args
    body = job_flow_overrides(plan, plan["emr"], staged, "image_scoring")
    validate("RunJobFlow", body)
    core = next(f for f in body["Instances"]["InstanceFleets"] if f["InstanceFleetType"] == "CORE")
    assert core["TargetOnDemandCapacity"] == 1
    assert {t["Key"]: t["Value"] for t in body["Tags"]}["dag_id"] == "image_scoring"


def test_bad_params_and_remote_uris_on_the_local_backend_are_named():
    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": "file:///data"})
    with pytest.raises(PlanError, match="param 'batch_size' must be between 1 and 1024"):
        build_scoring_plan({**PARAMS, "batch_size": 0}, "manual__x", WHEN, settings, latest("file:///data"))
    with pytest.raises(PlanError, match=r"not local: \['models_uri'\]"):
        build_scoring_plan(PARAMS, "manual__x", WHEN, settings, latest("s3://bucket/prefix"))
    with pytest.raises(PlanError, match="param 'runtime' must be one of tensorflow, openvino, got 'onnx'"):
        build_scoring_plan({**PARAMS, "runtime": "onnx"}, "manual__x", WHEN, settings, latest("file:///data"))
    with pytest.raises(PlanError, match="latest model .* trained on random weights"):
        build_scoring_plan({**PARAMS, "runtime": "openvino"}, "manual__x", WHEN, settings,
                           {**latest("file:///data"), "weights_uri": "random"})


def test_scoring_on_openvino_passes_runtime_and_precision_to_the_step():
    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": "file:///data"})
    plan = build_scoring_plan({**PARAMS, "runtime": "openvino", "precision": "auto"}, "manual__x", WHEN, settings,
                              latest("file:///data")).as_dict()
    (step,) = steps_for(plan)
    assert step.args[-2:] == ("--runtime=openvino", "--precision=auto")


def test_photo_keys_match_across_spark_and_object_storage_paths():
    when = datetime(2026, 3, 1, 9, 59, 58, 250000, tzinfo=UTC)
    assert photo_key("file:/data/inbox/a.jpg", "10", when) == photo_key("/data/inbox/a.jpg", 10,
                                                                         when.replace(microsecond=0))
    assert photo_key("s3://bucket/inbox/a.jpg", 5, when) == ("bucket/inbox/a.jpg", 5, int(when.timestamp()))


def test_the_inbox_pre_check_counts_photos_without_a_prediction(tmp_path):
    inbox, predictions = tmp_path / "inbox", tmp_path / "predictions" / "run"
    assert unscored_photos(f"file://{inbox}", f"file://{predictions}", WHEN) == (0, 0)  # no inbox yet
    (inbox / "team").mkdir(parents=True)
    for name in ("a.jpg", "b.PNG", "late.jpg", "notes.txt"):
        (inbox / "team" / name).write_bytes(b"x" * 10)
    old = WHEN.timestamp() - 3600
    for name in ("a.jpg", "b.PNG", "notes.txt"):
        os.utime(inbox / "team" / name, (old, old))
    os.utime(inbox / "team" / "late.jpg", (WHEN.timestamp() + 60, WHEN.timestamp() + 60))
    assert unscored_photos(f"file://{inbox}", f"file://{predictions}", WHEN) == (2, 2)
    predictions.mkdir(parents=True)
    stamp = datetime.fromtimestamp(old, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    (predictions / "predictions.csv").write_text(
        "path,top1_class,top1_probability,top3,reason,length,modification_time,scored_by_run\n"
        f"file:{inbox}/team/a.jpg,pug,0.9,[],,10,{stamp},s1\n")
    assert unscored_photos(f"file://{inbox}", f"file://{predictions}", WHEN) == (2, 1)
    (predictions / "predictions.csv").write_text(
        (predictions / "predictions.csv").read_text() + f"file:{inbox}/team/b.PNG,,,,corrupt,10,{stamp},s1\n")
    assert unscored_photos(f"file://{inbox}", f"file://{predictions}", WHEN) == (2, 0)
    (inbox / "team" / "a.jpg").write_bytes(b"y" * 12)  # replaced: new size and time
    os.utime(inbox / "team" / "a.jpg", (old + 5, old + 5))
    assert unscored_photos(f"file://{inbox}", f"file://{predictions}", WHEN) == (2, 1)


def test_the_inbox_pre_check_skips_what_the_scoring_job_skips(tmp_path):
    """Hidden names (macOS's ``._`` twins, ``_tmp/`` folders) are never scored: an inbox holding only them has
    nothing to score, so no cluster starts for it."""
    inbox, predictions = tmp_path / "inbox", tmp_path / "predictions" / "run"
    for relative in ("._IMG_1.jpg", "team/._IMG_2.jpg", "_tmp/IMG_3.jpg", "team/.cache/IMG_4.jpg"):
        (inbox / relative).parent.mkdir(parents=True, exist_ok=True)
        (inbox / relative).write_bytes(b"x" * 10)
        os.utime(inbox / relative, (WHEN.timestamp() - 60, WHEN.timestamp() - 60))
    assert unscored_photos(f"file://{inbox}", f"file://{predictions}", WHEN) == (0, 0)
    (inbox / "team" / "IMG_5.jpg").write_bytes(b"x" * 10)
    os.utime(inbox / "team" / "IMG_5.jpg", (WHEN.timestamp() - 60, WHEN.timestamp() - 60))
    assert unscored_photos(f"file://{inbox}", f"file://{predictions}", WHEN) == (1, 1)


def test_an_answer_threshold_param_reaches_the_step_and_a_bad_one_is_named():
    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": "file:///data"})
    plan = build_scoring_plan({**PARAMS, "answer_threshold": 0.7}, "manual__x", WHEN, settings,
                              latest("file:///data")).as_dict()
    (step,) = steps_for(plan)
    assert option(step.args, "--threshold") == "0.7"
    default = build_scoring_plan({**PARAMS, "answer_threshold": None}, "manual__x", WHEN, settings,
                                 latest("file:///data")).as_dict()
    assert default["answer_threshold"] is None and "--threshold" not in steps_for(default)[0].args
    with pytest.raises(PlanError, match=r"param 'answer_threshold' must be in \[0.0, 1.0\], got 1.5"):
        build_scoring_plan({**PARAMS, "answer_threshold": 1.5}, "manual__x", WHEN, settings, latest("file:///data"))


def test_scoring_reads_the_published_model_and_checks_its_digest():
    """A latest.json of a model published under its digest: the step reads that copy and checks the digest;
    one from before (no digest) reads the run's models folder as it always did."""
    import score_inbox

    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": "file:///data"})
    digest = "ab" * 32
    record = {**latest("file:///data"), "model_sha256": digest,
              "model_uri": f"file:///data/models/published/sha256-{digest}/model.json"}
    plan = build_scoring_plan(PARAMS, "manual__x", WHEN, settings, record).as_dict()
    (step,) = steps_for(plan)
    args = score_inbox.parse_args(list(step.args))
    assert (args.model_json_uri, args.model_sha256, args.model_uri) == (record["model_uri"], digest, None)
    (old,) = steps_for(build_scoring_plan(PARAMS, "manual__x", WHEN, settings, latest("file:///data")).as_dict())
    args = score_inbox.parse_args(list(old.args))
    assert (args.model_uri, args.model_json_uri, args.model_sha256) == ("file:///data/runs/train/models", None, None)
    with pytest.raises(SystemExit):
        score_inbox.parse_args(["--inbox-uri", "i", "--predictions-uri", "p", "--run-key", "k",
                                "--modified-before", "2026-01-01T00:00:00Z"])  # no model at all
