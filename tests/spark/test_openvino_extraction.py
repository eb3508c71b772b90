"""The extraction job with --runtime openvino: TensorFlow's features from Python workers without TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import extract_features
from image_jobs.ir_digests import read_digests
from image_tools.sample_images import write_sample_images
from image_tools.weights import find_package_file

pytestmark = pytest.mark.spark

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """The foolbox wheel's 20 real ImageNet photos, one class folder per ImageNet class, and generated ones."""
    folder = tmp_path_factory.mktemp("openvino") / "images"
    for photo in sorted(find_package_file("foolbox", "data").glob("imagenet_*.jpg")):
        (folder / f"imagenet_{photo.stem.split('_')[2]}").mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / f"imagenet_{photo.stem.split('_')[2]}" / photo.name)
    write_sample_images(folder, n_classes=2, per_class=6, seed=21)
    return folder


def features_by_path(spark, root: Path) -> dict[str, np.ndarray]:
    from image_jobs import storage

    rows = storage.read_committed(spark, f"file://{root}/features/backbone=mobilenet_v2").collect()
    return {r["path"]: np.array(r["features"], np.float32) for r in rows}


@pytest.fixture(scope="module")
def openvino_run(spark, images, converted_weights, tmp_path_factory):
    """The job on openvino in a session of its own (tests/openvino_job_probe.py), and what its workers imported."""
    from image_pipeline.compute.jobs_archive import build_jobs_zip

    root = tmp_path_factory.mktemp("openvino-run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(PROJECT_ROOT / p) for p in ("spark_jobs", "plugins", "tools", "tests"))}
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tests" / "openvino_job_probe.py"), str(build_jobs_zip(root / "dist")),
         str(images), str(root), str(converted_weights)],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return root, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_openvino_job_gives_tensorflows_features(spark, images, converted_weights, openvino_run, tmp_path):
    root, result, _ = openvino_run
    assert result["summary"]["features_written"] == 32 and result["summary"]["rejected"] == 0
    assert result["summary"]["runtime"] == "openvino" and result["summary"]["precision"] == "fp32"
    tensorflow_args = extract_features.parse_args([
        "--images-uri", f"file://{images}", "--features-uri", f"file://{tmp_path}/features",
        "--rejects-uri", f"file://{tmp_path}/rejects", "--backbone", "mobilenet_v2",
        "--weights-uri", f"file://{converted_weights}", "--run-key", "tensorflow",
        "--modified-before", "2100-01-01T00:00:00Z", "--batch-size", "8", "--runtime", "tensorflow"])
    assert extract_features.run(spark, tensorflow_args)["features_written"] == 32
    expected, got = features_by_path(spark, tmp_path), features_by_path(spark, root)
    assert sorted(got) == sorted(expected) and len(got) == 32
    worst = max(float(np.abs(got[p] - expected[p]).max() / np.abs(expected[p]).max()) for p in expected)
    print(f"openvino fp32 job vs tensorflow job: worst relative difference {worst:.2e} over 32 images")
    assert worst <= 1e-4


def test_openvino_workers_import_no_tensorflow(openvino_run):
    _, result, log = openvino_run
    workers = result["workers"]
    assert len(workers) == 2
    # the workers that ran the featurizing tasks (openvino loaded) hold no TensorFlow, no Keras
    assert all(w["openvino"] for w in workers), workers
    assert not any(w["tensorflow"] or w["keras"] for w in workers), workers
    assert "forward pass: runtime openvino, precision fp32, IR " in log  # the driver
    # each Python worker: what the CPU offered, what was chosen
    assert "on CPU: the CPU offers ['" in log and "precision fp32 asked for, fp32 chosen; 1 thread(s)" in log


def test_a_staged_ir_beside_object_store_weights_is_shipped_not_exported(spark, converted_weights, tmp_path,
                                                                        monkeypatch, caplog):
    """Weights the driver only holds a copy of (s3:// on EMR, fetched by addFile): the IR staged beside the
    original is found through Hadoop's filesystem and shipped from there; without one, the driver exports."""
    from image_jobs import openvino_runtime

    stored, driver = tmp_path / "artifacts" / "weights-1", tmp_path / "driver"
    for folder in (stored, driver):
        folder.mkdir(parents=True)
        shutil.copy(converted_weights, folder / "mnv2.keras")
    staged_xml = openvino_runtime.export_ir("mobilenet_v2", stored / "mnv2.keras")
    monkeypatch.setattr(openvino_runtime, "driver_weights_file", lambda backbone, weights: driver / "mnv2.keras")
    weights_uri = f"file://{stored}/mnv2.keras"
    assert openvino_runtime.stored_ir_exists(spark, openvino_runtime.stored_ir_uri(weights_uri, staged_xml))
    # what is shipped is recorded, not added: Spark refuses other bytes under a file name this shared
    # session shipped already, and two exports of the same weights name their IRs alike
    shipped = []
    monkeypatch.setattr(spark.sparkContext, "addFile", shipped.append)
    with caplog.at_level("INFO", logger="image_jobs.openvino_runtime"):
        choice = openvino_runtime.ship_ir(spark, "mobilenet_v2", weights_uri, "fp32")
    assert choice.ir_uri == f"file://{staged_xml}"
    assert shipped == [f"file://{staged_xml}", f"file://{staged_xml.with_suffix('.bin')}"]
    # the stored digests travel with the choice: every worker checks its copies against them
    assert dict(choice.ir_digests) == read_digests(staged_xml) and len(choice.ir_digests) == 2
    assert list(driver.iterdir()) == [driver / "mnv2.keras"]  # nothing exported on the driver
    assert f"OpenVINO IR found beside the weights: file://{staged_xml}" in caplog.text

    # a stored file that disagrees with the stored digests (staged from another export): not used, exported
    original = staged_xml.read_bytes()
    staged_xml.write_bytes(original.replace(b"</net>", b"</net>\n"))
    shipped.clear()
    with caplog.at_level("INFO", logger="image_jobs.openvino_runtime"):
        choice = openvino_runtime.ship_ir(spark, "mobilenet_v2", weights_uri, "fp32")
    assert f"the stored OpenVINO IR file file:{staged_xml} does not match its digest" in caplog.text
    exported = openvino_runtime.ir_path("mobilenet_v2", driver / "mnv2.keras")
    assert choice.ir_uri == str(exported) and shipped == [str(exported), str(exported.with_suffix(".bin"))]
    shutil.rmtree(exported.parent)
    staged_xml.write_bytes(original)
    digests = staged_xml.with_suffix(".sha256")
    digests.rename(digests.with_suffix(".away"))  # an IR that cannot be checked is not used
    assert not openvino_runtime.stored_ir_exists(spark, openvino_runtime.stored_ir_uri(weights_uri, staged_xml))
    digests.with_suffix(".away").rename(digests)
    staged_xml.with_suffix(".bin").unlink()  # an incomplete IR is not used
    assert not openvino_runtime.stored_ir_exists(spark, openvino_runtime.stored_ir_uri(weights_uri, staged_xml))
    shipped.clear()
    with caplog.at_level("INFO", logger="image_jobs.openvino_runtime"):
        choice = openvino_runtime.ship_ir(spark, "mobilenet_v2", weights_uri, "fp32")
    exported = openvino_runtime.ir_path("mobilenet_v2", driver / "mnv2.keras")
    assert choice.ir_uri == str(exported) and exported.with_suffix(".bin").is_file()
    assert dict(choice.ir_digests) == read_digests(exported)
    assert shipped == [str(exported), str(exported.with_suffix(".bin"))]
    assert "no usable OpenVINO IR beside the weights" in caplog.text
