"""The prediction command: model resolution, clear errors, table and JSON output, exit codes.

The model here has the real backbone and weights and a synthetic classifier over its 1280 features;
whether predictions are right for a trained run is tested in tests/spark/test_predictions.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import airflow.sdk  # noqa: F401  Airflow binds its logging to the streams of its first import: not capsys's
import numpy as np
import pytest

from bad_images import rejected_files
from image_pipeline import predict_photos as cli
from image_tools.sample_images import write_sample_images
from project_paths import PROJECT_ROOT

LABELS = ["beagle", "pug", "Siamese", "Sphynx"]


def write_model(models: Path, weights: str | None, **changes) -> Path:
    rng = np.random.default_rng(3)
    # format /1: a model trained before answer thresholds, which the command must keep reading
    model = {"format": "image-pipeline-multiclass/1", "run_key": "run_1", "backbone": "mobilenet_v2",
             "weights_uri": weights,
             "feature_dim": 1280, "labels": LABELS, "scaler_mean": rng.uniform(0, 1, 1280).tolist(),
             "scaler_std": rng.uniform(0.5, 1.5, 1280).tolist(),
             "pca_components": (rng.normal(0, 1, (8, 1280)) / 36).tolist(),
             "coef": rng.normal(0, 1, (4, 8)).tolist(), "intercept": [0.1, 0.0, -0.1, 0.2], **changes}
    path = models / "multiclass" / "model.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, converted_weights) -> Path:
    """A storage root with one run's model, a latest.json pointing at it, photos and bad files."""
    root = tmp_path_factory.mktemp("predict-cli")
    models = root / "runs" / "run_1" / "models"
    write_model(models, f"file://{converted_weights}")
    (root / "models").mkdir()
    (root / "models" / "latest.json").write_text(json.dumps({
        "run_key": "run_1", "models_uri": f"file://{models}", "model_uri": f"file://{models}/multiclass/model.json",
        "backbone": "mobilenet_v2", "multiclass_accuracy": 0.9, "modified_before": "2026-01-01T00:00:00Z"}))
    write_sample_images(root / "photos", n_classes=2, per_class=2, seed=5)
    (root / "bad").mkdir()
    (root / "bad" / "text.jpg").write_bytes(rejected_files()["text_named.jpg"])
    return root


def photos(store: Path) -> list[str]:
    return sorted(str(p) for p in (store / "photos").rglob("*.*"))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_output_has_the_top_classes_of_every_photo(store, capsys):
    models = f"file://{store}/runs/run_1/models"
    code, out, err = run_cli(capsys, "--model", models, "--json", *photos(store))
    assert code == 0, err
    results = json.loads(out)
    assert [r["photo"] for r in results] == photos(store)
    model = store / "runs" / "run_1" / "models" / "multiclass" / "model.json"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    for r in results:
        assert set(r) == {"photo", "top", "reason", "uncertain", "threshold", "model_sha256"} and r["reason"] is None
        assert r["model_sha256"] == digest  # every answer names the model.json that gave it
        assert r["uncertain"] is False and r["threshold"] == 0.0  # no threshold in the model: every photo answered
        assert len(r["top"]) == 3 and {t["class"] for t in r["top"]} <= set(LABELS)
        probabilities = [t["probability"] for t in r["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert "model: run run_1 (mobilenet_v2, 4 classes)" in err
    assert "answer threshold: 0: this model has none (trained before answer thresholds)" in err


def test_photos_under_the_models_threshold_are_not_sure_in_the_table(store, tmp_path, capsys, converted_weights):
    models = f"file://{store}/runs/run_1/models"
    _, out, _ = run_cli(capsys, "--model", models, "--json", *photos(store))
    tops = [r["top"][0]["probability"] for r in json.loads(out)]
    cut = (sorted(tops)[0] + sorted(tops)[-1]) / 2
    threshold = {"threshold": cut, "target_precision": 0.95, "target_met": True, "precision": 0.96, "coverage": 0.5}
    write_model(tmp_path / "models", f"file://{converted_weights}", format="image-pipeline-multiclass/2",
                answer_threshold=threshold)
    code, out, err = run_cli(capsys, "--model", str(tmp_path / "models"), *photos(store))
    assert code == 0 and f"answer threshold: {cut:.3f}, the model's (96.0% precision at 50.0% coverage" in err
    for line, top in zip(out.splitlines()[1:], tops, strict=True):
        assert ("not sure: " in line) == (top < cut) and line.count("%") == 3  # the top classes stay listed
    code, out, err = run_cli(capsys, "--model", str(tmp_path / "models"), "--json", "--threshold", "0", *photos(store))
    assert [r["uncertain"] for r in json.loads(out)] == [False] * len(tops)
    assert "answer threshold: 0 from --threshold (the model's: " in err


def test_a_threshold_outside_0_1_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", "latest", "--threshold", "-0.1", "photo.jpg"])
    assert "--threshold must be a probability in [0, 1], got -0.1" in capsys.readouterr().err


def test_a_bad_photo_gets_its_reason_in_the_table_and_exit_code_1(store, capsys):
    good = photos(store)[0]
    missing = str(store / "photos" / "no_such_photo.jpg")
    code, out, _ = run_cli(capsys, "--model", str(store / "runs" / "run_1" / "models"), "--top", "2",
                           good, str(store / "bad" / "text.jpg"), missing, str(store / "photos"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["photo", "class", "1", "class", "2"]
    assert len(lines) == 5 and lines[1].startswith(good) and lines[1].count("%") == 2
    assert "not scored: not an image (unrecognised format)" in lines[2]
    assert lines[3].startswith(missing) and "not scored: file not found" in lines[3]
    assert "not scored: is a folder, not a photo" in lines[4]
    code, out, _ = run_cli(capsys, "--model", str(store / "runs" / "run_1" / "models"), "--json", "--top", "2",
                           good, str(store / "bad" / "text.jpg"))
    good_row, bad_row = json.loads(out)
    assert code == 1 and bad_row["top"] is None and bad_row["reason"] == "not an image (unrecognised format)"
    assert f"{good_row['top'][0]['class']} {100 * good_row['top'][0]['probability']:.1f}%" in lines[1]


@pytest.mark.parametrize("spec", ["latest", "root", "root/models/latest.json", "run", "model.json"])
def test_every_way_of_naming_the_model_reaches_the_same_one(store, capsys, spec):
    given = {"latest": "latest", "root": f"file://{store}", "root/models/latest.json": str(store / "models" /
             "latest.json"), "run": str(store / "runs" / "run_1"),
             "model.json": f"file://{store}/runs/run_1/models/multiclass/model.json"}[spec]
    code, out, err = run_cli(capsys, "--model", given, "--root-uri", f"file://{store}", "--json", photos(store)[0])
    assert code == 0, err
    assert f"from file://{store}/runs/run_1/models/multiclass/model.json" in err
    assert ("via" in err) == (spec in ("latest", "root", "root/models/latest.json"))
    assert len(json.loads(out)[0]["top"]) == 3


def test_unknown_model_uri_is_one_clear_error_line_and_exit_code_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "plugins"), os.environ.get(
        "PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "image_pipeline.predict_photos", "--model", f"file://{tmp_path}/nothing",
                          "photo.jpg"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: no model at file://{tmp_path}/nothing: file://{tmp_path}/nothing/multiclass/model.json does not "
        "exist (give the models URI of a run, <root>/runs/<run_key>/models, a storage root with models/latest.json, "
        "or 'latest')"]
    assert out.stdout == ""


@pytest.mark.parametrize("change,message", [
    ({"format": "other/9"}, "model.json: field 'format' is 'other/9'"),
    ({"coef": [[1.0] * 8] * 3}, "model.json: field 'coef' has 3 rows, expected 4"),
    ({"weights_uri": "file:///no/such/weights.keras"}, "the run's weights file:///no/such/weights.keras do not exist"),
    ({"backbone": "alexnet"}, "unknown backbone 'alexnet'"),
])
def test_unusable_models_exit_2_naming_the_problem(tmp_path, capsys, converted_weights, change, message):
    write_model(tmp_path / "models", f"file://{converted_weights}", **change)
    code, out, err = run_cli(capsys, "--model", str(tmp_path / "models"), "photo.jpg")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_latest_without_any_successful_run_says_so(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--model", "latest", "--root-uri", f"file://{tmp_path}", "photo.jpg")
    assert code == 2
    assert f"no successful training run has published a model yet: file://{tmp_path}/models/latest.json" in err


def test_openvino_answers_like_tensorflow_without_importing_it(store, converted_weights, capsys):
    """--runtime openvino in a fresh process (the IR exported beforehand, as make weights does): the same
    classes and probabilities as tensorflow; on local files neither TensorFlow nor Airflow, Spark or pandas
    is imported (what keeps the command's cold start under two seconds: ``make bench-predict``)."""
    from image_jobs.openvino_runtime import export_ir

    export_ir("mobilenet_v2", converted_weights)
    models = f"file://{store}/runs/run_1/models"
    code, out, err = run_cli(capsys, "--model", models, "--json", "--runtime", "tensorflow", *photos(store))
    assert code == 0, err
    script = ("import json, sys\n"
              "from image_pipeline import predict_photos as cli\n"
              f"code = cli.main(['--model', {models!r}, '--json', '--runtime', 'openvino', *{photos(store)!r}])\n"
              "heavy = ['tensorflow', 'keras', 'airflow', 'pyspark', 'pandas']\n"
              "print(json.dumps({'code': code, 'imported': [m for m in heavy if m in sys.modules]}),\n"
              "      file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(PROJECT_ROOT / p) for p in ("plugins", "spark_jobs"))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"code": 0, "imported": []}
    expected, got = json.loads(out), json.loads(done.stdout)
    assert [r["photo"] for r in got] == [r["photo"] for r in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert [t["class"] for t in mine["top"]] == [t["class"] for t in theirs["top"]]
        np.testing.assert_allclose([t["probability"] for t in mine["top"]],
                                   [t["probability"] for t in theirs["top"]], atol=1e-4)


def test_openvino_with_random_weights_is_refused_naming_the_choice(tmp_path, capsys):
    write_model(tmp_path / "models", "random")
    code, _, err = run_cli(capsys, "--model", f"file://{tmp_path}/models", "--runtime", "openvino", "x.jpg")
    assert code == 2
    assert "runtime 'openvino' runs exported weights" in err
    # without --runtime, a random-weights model (nothing to export) runs on tensorflow, not refused
    photo = write_sample_images(tmp_path / "photos", n_classes=1, per_class=1, seed=5)[0]
    code, out, err = run_cli(capsys, "--model", f"file://{tmp_path}/models", "--json", str(photo))
    assert code == 0, err
    assert json.loads(out)[0]["top"] and "OpenVINO" not in err
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", "latest", "--runtime", "tensorflow", "--precision", "bf16", "x.jpg"])
    assert "--precision bf16: precision 'bf16' needs runtime 'openvino'" in capsys.readouterr().err


def test_the_command_loads_the_job_library_from_spark_jobs_dir_without_touching_sys_path(tmp_path):
    """Only plugins/ on the path (no spark_jobs/, as where the package is deployed): running the command's
    module registers image_jobs from image_pipeline.shipped.SPARK_JOBS_DIR and leaves sys.path as it was."""
    script = ("import importlib.util, json, runpy, sys\n"
              "findable = importlib.util.find_spec('image_jobs') is not None\n"
              "before = list(sys.path)\n"
              f"sys.argv = ['predict_photos', '--model', 'file://{tmp_path}/nothing', 'photo.jpg']\n"
              "try:\n"
              "    runpy.run_module('image_pipeline.predict_photos', run_name='__main__')\n"
              "except SystemExit as exit:\n"
              "    code = exit.code\n"
              "import image_jobs, image_jobs.cli, image_jobs.predictor\n"
              "from image_pipeline.shipped import SPARK_JOBS_DIR\n"
              "print(json.dumps({'code': code, 'findable_before': findable, 'path_unchanged': sys.path == before,\n"
              "                  'spark_jobs_dir': str(SPARK_JOBS_DIR), 'files': [m.__file__ for m in\n"
              "                  (image_jobs, image_jobs.cli, image_jobs.predictor)]}))\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "plugins")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["code"] == 2 and found["findable_before"] is False and found["path_unchanged"] is True
    jobs = PROJECT_ROOT / "spark_jobs"
    assert found["spark_jobs_dir"] == str(jobs)  # a checkout: the project's spark_jobs/
    assert found["files"] == [str(jobs / "image_jobs" / name) for name in ("__init__.py", "cli.py", "predictor.py")]


def test_features_of_another_identity_than_the_models_are_refused(tmp_path, capsys, converted_weights):
    """A model records the identity of its training features: other weights bytes (the file at its weights_uri
    was replaced) or another precision class are refused naming both; the same identity answers."""
    from image_jobs.feature_identity import weights_digest

    ours = {"backbone": "mobilenet_v2", "weights_digest": weights_digest(converted_weights), "precision_class": "fp32"}
    write_sample_images(tmp_path / "photos", n_classes=1, per_class=1, seed=6)
    photo = str(next((tmp_path / "photos").rglob("*.*")))
    write_model(tmp_path / "same", f"file://{converted_weights}", feature_identity=ours)
    code, _, err = run_cli(capsys, "--model", str(tmp_path / "same"), "--runtime", "tensorflow", photo)
    assert code == 0, err
    write_model(tmp_path / "other", f"file://{converted_weights}",
                feature_identity={**ours, "weights_digest": "sha256:" + "0" * 64})
    code, out, err = run_cli(capsys, "--model", str(tmp_path / "other"), "--runtime", "tensorflow", photo)
    assert code == 2 and out == ""
    assert "was trained on features of mobilenet_v2, weights sha256:0000000" in err
    assert "score with the weights the model was trained with" in err
    write_model(tmp_path / "bf16", f"file://{converted_weights}", feature_identity={**ours, "precision_class": "bf16"})
    code, _, err = run_cli(capsys, "--model", str(tmp_path / "bf16"), "--runtime", "tensorflow", photo)
    assert code == 2 and "score with precision bf16" in err


def test_a_published_model_whose_bytes_changed_is_refused(tmp_path, capsys, converted_weights):
    """latest.json records the gated model's digest: the command checks the model.json it reads against it."""
    models = tmp_path / "runs" / "run_1" / "models"
    write_model(models, f"file://{converted_weights}")
    model = models / "multiclass" / "model.json"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "latest.json").write_text(json.dumps({
        "run_key": "run_1", "models_uri": f"file://{models}", "model_uri": f"file://{model}", "model_sha256": digest,
        "backbone": "mobilenet_v2", "multiclass_accuracy": 0.9, "modified_before": "2026-01-01T00:00:00Z"}))
    write_sample_images(tmp_path / "photos", n_classes=1, per_class=1, seed=5)
    photo = next(str(p) for p in (tmp_path / "photos").rglob("*.*"))
    code, _, err = run_cli(capsys, "--model", "latest", "--root-uri", f"file://{tmp_path}", photo)
    assert code == 0 and f"(sha256 {digest})" in err
    model.write_text(model.read_text().replace('"run_1"', '"run_2"'))
    code, _, err = run_cli(capsys, "--model", "latest", "--root-uri", f"file://{tmp_path}", photo)
    assert code == 2 and f"not the {digest} it was published with" in err
