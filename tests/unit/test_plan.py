import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bad_images import HOSTILE_LABELS
from command_lines import option
from image_pipeline.compute.steps import build_steps
from image_pipeline.planning.layout import run_key_for, run_layout
from image_pipeline.planning.listing import discover_labels, hidden_to_spark, scan_images
from image_pipeline.planning.run_plan import PlanError, build_run_plan, min_images_per_class
from image_pipeline.wiring.params import DEFAULT_SPLIT_RATIOS, LOCAL_PARAMS, PARAM_SPECS, TRAINING_PARAMS, dag_params
from image_pipeline.wiring.settings import load_settings

SETTINGS = load_settings({"IMAGE_PIPELINE_ROOT_URI": "file:///data/root"})
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LABELS = ["beagle", "pug", "Siamese"]


def params(**overrides):
    base = {"images_uri": "", "labels": [], "backbone": "mobilenet_v2", "weights_uri": "", "pair_mode": "all_pairs",
            "focus_class": "", "split_ratios": list(DEFAULT_SPLIT_RATIOS), "max_per_class": 200, "iterations": 100,
            "pca_components": 128, "test_fraction": 0.2, "min_accuracy": 0.5, "batch_size": 32, "seed": 0,
            "local_workers": 1, "local_worker_cores": 2, "local_worker_memory_gb": 4}
    base.update(overrides)
    return base


def test_run_key_is_path_safe():
    key = run_key_for("manual__2026-11-21T10:00:00.123+00:00")
    assert re.fullmatch(r"manual__2026-11-21T10_00_00\.123_00_00-[0-9a-f]{10}", key)
    assert ":" not in run_key_for("scheduled__2026-01-01T00:00:00+00:00") and "+" not in key
    assert run_key_for("backfill__a/b c").startswith("backfill__a_b_c-")
    assert run_key_for("nightly_1") == "nightly_1"  # nothing folded: the id itself
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,200}", run_key_for(i)) for i in ("x" * 500, "é" * 300, "a b"))


def test_run_ids_that_fold_or_cut_alike_get_different_keys():
    """The REST API accepts custom run ids: two that fold to one key would share a run folder, and one's
    teardown would stop the other's cluster."""
    pairs = [("manual__2026-11-21T10:00:00+00:00", "manual__2026-11-21T10_00_00_00_00"),
             ("team a", "team_a"), ("run:1", "run+1"), ("x" * 200 + "a", "x" * 200 + "b"), ("x" * 200, "x" * 201)]
    for first, second in pairs:
        assert run_key_for(first) != run_key_for(second), (first, second)
    assert run_key_for("run:1") == run_key_for("run:1")  # the same id, the same key on every call


def test_layout_builds_every_uri_under_the_root():
    layout = run_layout("s3://bucket/prefix/", "r1")
    assert layout.images_uri == "s3://bucket/prefix/images"
    assert layout.models_uri == "s3://bucket/prefix/runs/r1/models"
    assert layout.report_uri == "s3://bucket/prefix/runs/r1/report"
    assert layout.features_uri == "s3://bucket/prefix/features"


def test_plan_resolves_everything_and_is_json_serialisable():
    import json

    plan = build_run_plan(params(), "scheduled__2026-03-01T00:00:00+00:00", WHEN, SETTINGS, LABELS)
    assert plan.labels == sorted(LABELS)
    assert plan.layout.run_key == run_key_for("scheduled__2026-03-01T00:00:00+00:00")
    assert plan.layout.run_key.startswith("scheduled__2026-03-01T00_00_00_00_00-")
    assert plan.modified_before == "2026-03-01T12:00:00Z"
    assert plan.weights_uri == "file:///data/root/weights/mobilenet_v2_imagenet.keras"
    assert plan.layout.report_uri == f"file:///data/root/runs/{plan.layout.run_key}/report"
    assert json.loads(json.dumps(plan.as_dict()))["labels"] == sorted(LABELS)


def test_steps_get_the_same_arguments_from_the_plan():
    plan = build_run_plan(params(labels=["pug", "beagle"], pair_mode="one_vs_each", focus_class="pug"), "r", WHEN,
                          SETTINGS, LABELS).as_dict()
    extract, train, evaluate = build_steps(plan)
    assert extract.entry_script == "extract_features.py"
    assert option(extract.args, "--labels-uri") == plan["labels_uri"]
    assert plan["labels_uri"] == f"{plan['steps_uri']}/labels.json" and plan["labels"] == ["beagle", "pug"]
    assert option(train.args, "--focus-class") == "pug"
    assert option(train.args, "--split-ratios") == "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    assert option(train.args, "--target-precision") == "0.95"  # no such param: the default
    strict = build_run_plan(params(target_precision=0.99), "r", WHEN, SETTINGS, LABELS).as_dict()
    assert option(build_steps(strict)[1].args, "--target-precision") == "0.99"
    with pytest.raises(PlanError, match=r"param 'target_precision' must be in \[0.5, 1.0\], got 0.2"):
        build_run_plan(params(target_precision=0.2), "r", WHEN, SETTINGS, LABELS)
    assert option(evaluate.args, "--report-uri") == plan["report_uri"]
    assert all(option(step.args, "--modified-before") == plan["modified_before"] for step in (extract, train, evaluate))


@pytest.mark.parametrize("overrides,message", [
    ({"backbone": "resnet9"}, "'backbone'"),
    ({"pair_mode": "some"}, "'pair_mode'"),
    ({"labels": ["beagle", "zebra"]}, "zebra"),
    ({"labels": ["beagle"]}, "at least 2 classes"),
    ({"labels": ["../etc"]}, "'labels'"),
    ({"labels": "beagle"}, "at least 2"),
    ({"pair_mode": "one_vs_rest"}, "'focus_class' is required"),
    ({"pair_mode": "one_vs_each", "focus_class": "zebra"}, "'focus_class'"),
    ({"split_ratios": [0.5, 1.0]}, "'split_ratios'"),
    ({"split_ratios": [0.0]}, "'split_ratios'"),
    ({"split_ratios": []}, "'split_ratios'"),
    ({"split_ratios": ["a"]}, "'split_ratios'"),
    ({"max_per_class": "many"}, "'max_per_class' must be an integer"),
    ({"max_per_class": 1}, "'max_per_class' must be between"),
    ({"iterations": 2.5}, "'iterations'"),
    ({"test_fraction": 1.0}, "'test_fraction'"),
    ({"min_accuracy": 1.5}, "'min_accuracy'"),
    ({"batch_size": True}, "'batch_size'"),
    ({"local_workers": 0}, "'local_workers'"),
    ({"runtime": "onnx"}, "param 'runtime' must be one of tensorflow, openvino, got 'onnx'"),
    ({"runtime": "openvino", "precision": "fp16"}, "param 'precision' must be one of fp32, bf16, auto"),
    ({"runtime": "tensorflow", "precision": "bf16"}, "'precision' 'bf16' needs param 'runtime' openvino"),
    ({"runtime": "openvino", "weights_uri": "random"}, "'runtime' openvino runs exported weights"),
])
def test_bad_params_are_named(overrides, message):
    with pytest.raises(PlanError, match=message):
        build_run_plan(params(**overrides), "r", WHEN, SETTINGS, LABELS)


def test_the_extraction_step_gets_the_runtime_and_precision():
    extract = build_steps(build_run_plan(params(), "r", WHEN, SETTINGS, LABELS).as_dict())[0]
    assert extract.args[-2:] == ("--runtime=openvino", "--precision=fp32")  # the default
    plan = build_run_plan(params(runtime="openvino", precision="bf16"), "r", WHEN, SETTINGS, LABELS).as_dict()
    assert (plan["runtime"], plan["precision"]) == ("openvino", "bf16")
    extract, train, evaluate = build_steps(plan)
    assert extract.args[-2:] == ("--runtime=openvino", "--precision=bf16")
    assert not [a for a in (*train.args, *evaluate.args) if a.startswith("--runtime")]
    import extract_features

    parsed = extract_features.parse_args(list(extract.args))  # the job accepts exactly what the plan sends
    assert (parsed.runtime, parsed.precision) == ("openvino", "bf16")


def test_read_concurrency_and_the_feature_identity_source_reach_the_jobs():
    """The extraction gets the param's read concurrency (a plan from before the param passes none: the job's
    default), and the training job reads its feature identity from the extraction's summary."""
    import extract_features
    import train_models

    plan = build_run_plan(params(read_concurrency=48), "r", WHEN, SETTINGS, LABELS).as_dict()
    extract, train, _ = build_steps(plan)
    assert extract_features.parse_args(list(extract.args)).read_concurrency == 48
    summary = option(extract.args, "--summary-uri")
    assert train_models.parse_args(list(train.args)).extract_summary_uri == summary
    assert build_run_plan(params(), "r", WHEN, SETTINGS, LABELS).read_concurrency == 32  # the declared default
    old = {key: value for key, value in plan.items() if key != "read_concurrency"}
    assert "--read-concurrency" not in build_steps(old)[0].args
    assert extract_features.parse_args(list(build_steps(old)[0].args)).read_concurrency == 32
    with pytest.raises(PlanError, match="param 'read_concurrency' must be between 1 and 256, got 0"):
        build_run_plan(params(read_concurrency=0), "r", WHEN, SETTINGS, LABELS)


def test_the_jobs_default_runtime_is_openvino_and_tensorflow_for_random_weights():
    import extract_features

    base = ["--images-uri", "file:///i", "--features-uri", "file:///f", "--rejects-uri", "file:///r",
            "--backbone", "mobilenet_v2", "--run-key", "k", "--modified-before", "2026-01-01T00:00:00Z",
            "--batch-size", "8"]
    assert extract_features.parse_args([*base, "--weights-uri", "file:///w.keras"]).runtime == "openvino"
    assert extract_features.parse_args([*base, "--random-weights"]).runtime == "tensorflow"
    assert extract_features.parse_args([*base, "--random-weights", "--runtime", "openvino"]).runtime == "openvino"
    with pytest.raises(SystemExit):  # bf16 is openvino's: refused with tensorflow, the random weights' default
        extract_features.parse_args([*base, "--random-weights", "--precision", "bf16"])


def test_local_backend_refuses_remote_uris():
    with pytest.raises(PlanError, match="file://"):
        build_run_plan(params(images_uri="s3://bucket/images"), "r", WHEN, SETTINGS, LABELS)


def test_discover_labels(tmp_path):
    import os

    for name in ("beagle", "pug", ".hidden", "empty", "notes"):
        (tmp_path / name).mkdir()
    for name in ("beagle/a.jpg", "pug/sub/b.PNG", ".hidden/c.jpg", "notes/readme.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "loose.jpg").write_bytes(b"x")
    assert discover_labels(f"file://{tmp_path}") == ["beagle", "pug"]
    old = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    os.utime(tmp_path / "beagle" / "a.jpg", (old, old))
    assert discover_labels(f"file://{tmp_path}", modified_before=datetime(2026, 2, 1, tzinfo=UTC)) == ["beagle"]
    with pytest.raises(PlanError, match="'images_uri'.*does not exist"):
        discover_labels(f"file://{tmp_path}/absent")


def test_hostile_folder_names_are_discovered_literally_and_hidden_ones_left_out(tmp_path):
    images = tmp_path / "images"
    for label in [*HOSTILE_LABELS, "a=b", "_a=b"]:
        (images / label).mkdir(parents=True)
        (images / label / "photo 1.jpg").write_bytes(b"x")
    (images / "beagle" / "nested" / "deeper").mkdir(parents=True)
    for name in ("beagle/a.jpg", "beagle/nested/deeper/b.png", "beagle/_old/c.jpg", "beagle/.thumbs/d.jpg",
                 "..x/e.jpg", "_drafts/f.jpg", ".git/g.jpg", "loose.jpg"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(b"x")
    (images / "empty").mkdir()
    scan = scan_images(f"file://{images}")
    # '_a=b' is not hidden to Spark ('_' names with '=' are partition folders), so it is a class too
    assert scan.counts == {**{label: 1 for label in HOSTILE_LABELS}, "a=b": 1, "_a=b": 1, "beagle": 2}
    assert discover_labels(f"file://{images}") == sorted(scan.counts)
    assert scan.loose == ["loose.jpg"]
    assert sorted(scan.hidden) == sorted([".git/g.jpg", "..x/e.jpg", "_drafts/f.jpg", "beagle/.thumbs/d.jpg",
                                          "beagle/_old/c.jpg"])
    warnings = " ".join(scan.warnings())
    assert "1 image file(s) directly under the images URI" in warnings and "loose.jpg" in warnings
    assert "5 image file(s) under names starting with '.' or '_' are skipped" in warnings


@pytest.mark.parametrize("focus", ["-x", "--pair-mode"])
def test_a_class_named_like_an_option_reaches_the_jobs_as_a_value(focus):
    import train_models

    labels = ["beagle", "-x", "--pair-mode"]
    plan = build_run_plan(params(pair_mode="one_vs_each", focus_class=focus), "-r", WHEN, SETTINGS,
                          {label: 20 for label in labels}).as_dict()
    train = build_steps(plan)[1]
    args = train_models.parse_args(list(train.args))
    assert (args.focus_class, args.pair_mode, args.run_key) == (focus, "one_vs_each", plan["run_key"])


def test_hidden_to_spark_follows_sparks_rule():
    assert [hidden_to_spark(n) for n in (".x", "..x", "_x", "x._COPYING_", "_metadata")] == [True] * 4 + [False]
    assert not any(hidden_to_spark(n) for n in ("a..b", "x_", "_a=b", "chat noir é", "$(touch pwned)"))


def test_hostile_labels_are_accepted_exactly_and_reach_the_steps_in_the_labels_file(tmp_path):
    import json

    from image_pipeline.planning.run_plan import write_labels

    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": f"file://{tmp_path}"})
    plan = build_run_plan(params(labels=list(HOSTILE_LABELS), pair_mode="one_vs_each", focus_class="$(touch pwned)"),
                          "r", WHEN, settings, {label: 20 for label in HOSTILE_LABELS}).as_dict()
    assert plan["labels"] == sorted(HOSTILE_LABELS)
    written = write_labels(plan)
    assert json.loads(Path(written.removeprefix("file://")).read_text()) == sorted(HOSTILE_LABELS)
    for step in build_steps(plan)[:2]:
        assert all(isinstance(arg, str) for arg in step.args)  # one argv entry each, nothing to split or quote
        assert option(step.args, "--labels-uri") == written
    old = {key: value for key, value in plan.items() if key != "labels_uri"}  # a plan from before the file
    assert json.loads(option(build_steps(old)[0].args, "--labels-json")) == sorted(
        HOSTILE_LABELS)
    train = build_steps(plan)[1]
    assert option(train.args, "--focus-class") == "$(touch pwned)"


@pytest.mark.parametrize("labels,message", [
    (["beagle", ".."], r"cannot be class folders .*\['\.\.'\]"),
    (["beagle", "$(touch /tmp/pwned)"], r"cannot be class folders .*touch /tmp/pwned"),
    (["beagle", "..x"], r"hidden .*\['\.\.x'\]; rename"),
    (["beagle", "_drafts"], r"hidden .*\['_drafts'\]"),
])
def test_labels_that_cannot_be_classes_are_refused_by_name(labels, message):
    with pytest.raises(PlanError, match="param 'labels' has .*" + message):
        build_run_plan(params(labels=labels), "r", WHEN, SETTINGS, ["beagle", "pug"])


def test_a_single_class_fails_the_plan():
    with pytest.raises(PlanError, match=r"param 'labels': need at least 2 classes, the run would have \['beagle'\]"):
        build_run_plan(params(), "r", WHEN, SETTINGS, {"beagle": 40})


def test_a_class_too_small_to_split_fails_the_plan_naming_it():
    counts = {"beagle": 40, "pug": 1, "Siamese": 40}
    with pytest.raises(PlanError, match=r"param 'labels': too few images in 'pug' \(\{'pug': 1\}\).*at least 10"):
        build_run_plan(params(), "r", WHEN, SETTINGS, counts)
    # leaving it out, or splits a tiny class can serve, make the run possible
    assert build_run_plan(params(labels=["beagle", "Siamese"]), "r", WHEN, SETTINGS, counts).labels == [
        "Siamese", "beagle"]
    with pytest.raises(PlanError, match="too few images in 'pug'.*at least 2"):
        build_run_plan(params(split_ratios=[0.5], test_fraction=0.5), "r", WHEN, SETTINGS, counts)
    counts["pug"] = 2
    assert build_run_plan(params(split_ratios=[0.5], test_fraction=0.5), "r", WHEN, SETTINGS, counts).labels == [
        "Siamese", "beagle", "pug"]


def test_min_images_per_class_matches_the_training_check():
    from image_jobs.training import min_images_for_fraction

    for ratios, fraction in [([0.1, 0.5], 0.2), ([0.5], 0.5), ([0.3, 0.7], 0.25), ([0.05], 0.2)]:
        assert min_images_per_class(ratios, fraction) == max(min_images_for_fraction(r) for r in [*ratios, fraction])


def test_settings():
    assert load_settings({}).compute == "local" and load_settings({}).schedule == "@weekly"
    assert load_settings({"IMAGE_PIPELINE_SCHEDULE": "none"}).schedule is None
    with pytest.raises(ValueError, match="IMAGE_PIPELINE_COMPUTE"):
        load_settings({"IMAGE_PIPELINE_COMPUTE": "mainframe"})


@pytest.mark.parametrize("name", [n for n in (*TRAINING_PARAMS, *LOCAL_PARAMS) if PARAM_SPECS[n].low is not None])
def test_each_bound_is_declared_once_for_the_form_and_the_plan(name):
    """The trigger form's schema and the plan's check come from the same PARAM_SPECS entry: the form offers
    exactly the values the plan accepts, and the plan names the param one step outside them."""
    rule = PARAM_SPECS[name]
    schema = dag_params(SETTINGS)[name].schema
    assert schema["type"] == rule.kind
    assert (schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")) == ((rule.low, rule.high) if rule.open
                                                                                else (None, None))
    assert (schema.get("minimum"), schema.get("maximum")) == ((None, None) if rule.open else (rule.low, rule.high))
    step = 1 if rule.kind == "integer" else 0.01
    edges = [rule.low + step, rule.high - step] if rule.open else [rule.low, rule.high]
    for value in edges:
        build_run_plan(params(**{name: value}), "r", WHEN, SETTINGS, LABELS)  # accepted at the form's edges
    for value in ([rule.low, rule.high] if rule.open else [rule.low - step, rule.high + step]):
        with pytest.raises(PlanError, match=f"param '{name}'"):
            build_run_plan(params(**{name: value}), "r", WHEN, SETTINGS, LABELS)


def test_plans_say_their_kind_and_carry_their_layout():
    from image_pipeline.compute.steps import STEP_NAMES, steps_for

    plan = build_run_plan(params(), "r", WHEN, SETTINGS, LABELS)
    flat = plan.as_dict()
    assert flat["kind"] == "training" and "layout" not in flat
    assert {k: flat[k] for k in plan.layout.as_dict()} == plan.layout.as_dict()  # the layout's URIs, as they are
    assert [s.name for s in steps_for(flat)] == list(STEP_NAMES)
    assert [s.entry_script for s in steps_for(flat)] == [f"{name}.py" for name in STEP_NAMES]
    with pytest.raises(ValueError, match="plan kind None is not one of training, scoring"):
        steps_for({k: v for k, v in flat.items() if k != "kind"})


def test_each_prepared_backbone_defaults_to_the_weights_make_weights_writes():
    mobilenet = build_run_plan(params(), "r", WHEN, SETTINGS, LABELS).as_dict()
    lite = build_run_plan(params(backbone="efficientnet_lite2"), "r", WHEN, SETTINGS, LABELS).as_dict()
    assert mobilenet["weights_uri"] == SETTINGS.default_weights_uri
    assert lite["weights_uri"] == f"{SETTINGS.root_uri}/weights/efficientnet_lite2_imagenet.keras"
    given = build_run_plan(params(backbone="efficientnet_lite2", weights_uri="file:///w/mine.keras"), "r", WHEN,
                           SETTINGS, LABELS).as_dict()
    assert given["weights_uri"] == "file:///w/mine.keras"


def test_a_thousand_classes_plan_and_more_are_refused_naming_the_param():
    from image_pipeline.conventions import MAX_CLASSES

    classes = {f"class_{i:04d}": 20 for i in range(MAX_CLASSES)}
    plan = build_run_plan(params(), "r", WHEN, SETTINGS, classes).as_dict()
    assert len(plan["labels"]) == MAX_CLASSES == 1000
    with pytest.raises(PlanError, match=r"param 'labels': the run would have 1001 classes, more than the maximum of "
                                        r"1000 \(every class folder found\): choose the classes"):
        build_run_plan(params(), "r", WHEN, SETTINGS, {**classes, "one_more": 20})


def test_the_plans_scan_counts_every_file_and_names_a_bounded_few(tmp_path):
    """The scan walks folder by folder and keeps counts, naming at most 100 files of each kind it leaves out:
    a collection with thousands of loose or hidden files costs the plan task no more than a few."""
    from image_pipeline.planning.listing import EXAMPLES

    for folder, n in (("beagle", 300), ("pug/sub", 200), ("_drafts", 150), ("", 250)):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (tmp_path / folder / f"{i}.jpg").write_bytes(b"x")
    scan = scan_images(f"file://{tmp_path}")
    assert scan.counts == {"beagle": 300, "pug": 200}
    assert (scan.n_loose, scan.n_hidden) == (250, 150)
    assert len(scan.loose) == len(scan.hidden) == EXAMPLES == 100
    assert scan.warnings()[0].startswith("250 image file(s) directly under the images URI")
