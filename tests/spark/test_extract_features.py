"""The extraction job on generated images: rows, dimensions, labels, incremental runs, rejects, retries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

import extract_features
from bad_images import HOSTILE_LABELS, accepted_unusual_files, giant_png, huge_png, rejected_files, write_files
from image_jobs.backbones import WeightsUnavailableError
from image_jobs.featurize import REJECT_COLUMNS
from image_jobs.photo_store import StoreError
from image_tools.sample_images import write_sample_images

pytestmark = pytest.mark.spark

FAR_FUTURE = "2100-01-01T00:00:00Z"


def job_args(root: Path, run_key: str, weights: str | None, *extra: str, backbone: str = "mobilenet_v2",
             modified_before: str = FAR_FUTURE):
    argv = [
        "--images-uri", f"file://{root}/images", "--features-uri", f"file://{root}/features",
        "--rejects-uri", f"file://{root}/rejects", "--backbone", backbone, "--run-key", run_key,
        "--modified-before", modified_before, "--batch-size", "8", *extra,
    ]
    argv += ["--weights-uri", weights] if weights else ["--random-weights"]
    return extract_features.parse_args(argv)


def read_features(spark, root: Path, backbone: str = "mobilenet_v2"):
    """The feature store as every reader sees it: each run's newest committed attempt."""
    from image_jobs import storage

    return storage.read_committed(spark, f"file://{root}/features/backbone={backbone}", merge_schema=True)


def read_rejects(spark, root: Path, backbone: str = "mobilenet_v2"):
    from image_jobs import storage

    return storage.read_committed(spark, f"file://{root}/rejects/backbone={backbone}", merge_schema=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 classes x 8 generated photos, unusual-but-valid files, bad files, a file outside any class,
    one photo in each hostile-named class folder, an empty class folder and two hidden folders."""
    root = tmp_path_factory.mktemp("extract")
    images = root / "images"
    write_sample_images(images, n_classes=3, per_class=8, seed=11)
    write_files(images / "Abyssinian" / "odd", accepted_unusual_files())  # nested sub-folder keeps its class
    write_files(images / "beagle", rejected_files())
    write_files(images / "beagle", {"huge.png": huge_png(9000, 7000)})  # 63 MP > the 50 MP guard
    write_files(images / "beagle", {"giant.png": giant_png(20000, 20000)})  # 400 MP in ~390 KB
    photo = (images / "american_bulldog" / "american_bulldog_0001.jpg").read_bytes()
    for label in HOSTILE_LABELS:
        write_files(images / label, {"photo 1.jpg": photo})
    (images / "empty_class").mkdir()
    for hidden in ("..x", "_drafts"):  # Spark's file sources skip names starting with '.' or '_'
        write_files(images / hidden, {"photo.jpg": photo})
    write_files(images, {"loose_top_level.jpg": (images / "Abyssinian" / "Abyssinian_0001.jpg").read_bytes()})
    write_files(images / "beagle", {"notes.txt": b"not an image extension: ignored"})
    return root


@pytest.fixture(scope="module")
def first_run(spark, dataset, converted_weights):
    return extract_features.run(spark, job_args(dataset, "run1", f"file://{converted_weights}"))


def test_first_run_writes_one_row_per_good_image(spark, dataset, first_run):
    rows = read_features(spark, dataset).collect()
    good = 3 * 8 + len(accepted_unusual_files()) + len(HOSTILE_LABELS)
    assert len(rows) == good == first_run["features_written"]
    assert {r["run"] for r in rows} == {"run1"}
    assert {len(r["features"]) for r in rows} == {1280}
    assert len({r["path"] for r in rows}) == good
    labels = {r["label"] for r in rows}
    # beagle/ holds only bad files in this dataset, so it has no feature rows; the empty folder and
    # the hidden ones (..x, _drafts) are not classes
    assert labels == {"Abyssinian", "american_bulldog", "american_pit_bull_terrier", *HOSTILE_LABELS}
    nested = [r for r in rows if "/odd/" in r["path"]]
    assert len(nested) == len(accepted_unusual_files()) and {r["label"] for r in nested} == {"Abyssinian"}
    generated = [r for r in rows if "/odd/" not in r["path"]]
    assert all(160 <= r["width"] < 480 and 160 <= r["height"] < 480 and r["length"] > 0 for r in generated)
    assert all(sum(r["features"]) > 0 for r in rows)


def test_hostile_class_names_are_read_literally(spark, dataset, first_run):
    images = dataset / "images"
    rows = read_features(spark, dataset).filter(F.col("label").isin(HOSTILE_LABELS)).collect()
    # no percent-encoding, no glob expansion, no unquoting: path and label are the folder's own name
    assert sorted((r["label"], r["path"]) for r in rows) == sorted(
        (label, f"file:{images}/{label}/photo 1.jpg") for label in HOSTILE_LABELS)


def test_bad_files_are_recorded_with_reasons_and_good_ones_kept(spark, dataset, first_run):
    rejects = {Path(r["path"]).name: r for r in read_rejects(spark, dataset).collect()}
    expected = set(rejected_files()) | {"huge.png", "giant.png", "loose_top_level.jpg"}
    assert set(rejects) == expected
    assert first_run["rejected"] == len(expected)
    assert first_run["rejected_by_reason"] == {
        "corrupt or truncated image": 1, "empty file": 1, "not an image": 2, "not inside a class folder": 1,
        "too many pixels": 2, "too small to classify": 1}
    assert "over the limit" in rejects["huge.png"]["reason"]
    assert rejects["giant.png"]["reason"] == (
        "too many pixels: image is 20000x20000 = 400000000 pixels, over the limit of 50000000")
    assert rejects["one_pixel.png"]["reason"] == "too small to classify: image is 1x1"
    assert "class folder" in rejects["loose_top_level.jpg"]["reason"]
    assert rejects["loose_top_level.jpg"]["label"] is None
    assert "empty" in rejects["zero_bytes.jpg"]["reason"]
    assert all(r["reason"] for r in rejects.values())


def test_features_separate_the_classes(spark, dataset, first_run):
    import numpy as np

    rows = [r for r in read_features(spark, dataset).collect()
            if "/odd/" not in r["path"] and r["label"] not in HOSTILE_LABELS]
    x = np.array([r["features"] for r in rows], dtype=np.float32)
    y = np.array([r["label"] for r in rows])
    centroids = {label: x[y == label].mean(0) for label in set(y)}
    nearest = [min(centroids, key=lambda c: np.linalg.norm(v - centroids[c])) for v in x]
    assert np.mean(np.array(nearest) == y) >= 0.9


def test_second_run_adds_nothing(spark, dataset, first_run, converted_weights):
    summary = extract_features.run(spark, job_args(dataset, "run2", f"file://{converted_weights}"))
    assert summary["processed"] == 0 and summary["features_written"] == 0 and summary["rejected"] == 0
    assert summary["skipped_done_earlier"] == first_run["images_seen"]
    assert read_features(spark, dataset).count() == first_run["features_written"]


def test_new_class_folder_adds_exactly_its_rows_and_retry_overwrites(spark, dataset, first_run, converted_weights):
    extra = dataset / "extra"
    write_sample_images(extra, n_classes=5, per_class=6, seed=12)
    shutil.copytree(extra / "basset_hound", dataset / "images" / "basset_hound")
    before = read_features(spark, dataset).count()
    args = job_args(dataset, "run3", f"file://{converted_weights}")
    summary = extract_features.run(spark, args)
    assert summary["features_written"] == 6
    again = extract_features.run(spark, args)  # a retry of the same run overwrites its own partition
    assert again["features_written"] == 6
    features = read_features(spark, dataset)
    assert features.count() == before + 6
    assert features.select("path").distinct().count() == before + 6
    assert {r["label"] for r in features.filter("run = 'run3'").collect()} == {"basset_hound"}
    # no photo rejected: the run still commits its (empty) rejects folder, with the rejects' columns
    assert summary["rejected"] == 0 and summary["rejected_by_reason"] == {}
    run3_rejects = spark.read.parquet(summary["rejects_uri"])
    assert run3_rejects.count() == 0 and set(REJECT_COLUMNS) <= set(run3_rejects.columns)
    assert read_rejects(spark, dataset).filter("run = 'run3'").count() == 0


def test_modified_before_and_label_allow_list(spark, converted_weights, tmp_path):
    images = tmp_path / "images"
    write_sample_images(images, n_classes=2, per_class=4, seed=13)
    old = 1_600_000_000  # 2020-09-13
    old_files = sorted((images / "Abyssinian").iterdir())[:3]
    for path in old_files:
        os.utime(path, (old, old))
    args = job_args(tmp_path, "past", f"file://{converted_weights}", modified_before="2021-01-01T00:00:00+00:00")
    assert extract_features.run(spark, args)["features_written"] == 3
    past = {r["path"].rsplit("/", 1)[-1] for r in read_features(spark, tmp_path).collect()}
    assert past == {p.name for p in old_files}

    args = job_args(tmp_path, "only_bulldog", f"file://{converted_weights}",
                    "--labels-json", '["american_bulldog", "no_such_class"]')
    summary = extract_features.run(spark, args)
    labels = [r["label"] for r in read_features(spark, tmp_path).filter("run = 'only_bulldog'").collect()]
    assert labels == ["american_bulldog"] * 4 and summary["features_written"] == 4


def test_files_deleted_or_rewritten_after_the_listing_become_rejects(spark, converted_weights, tmp_path,
                                                                    monkeypatch):
    """Between the listing and the content pass one file is deleted and one rewritten: the job goes
    on, each gets a reject row saying what happened, the rest are featurized."""
    images = tmp_path / "images"
    write_sample_images(images, n_classes=1, per_class=4, seed=16)
    gone, rewritten, *kept = sorted((images / "Abyssinian").iterdir())
    listed_then_read = extract_features.featurized_rows

    def delete_and_rewrite_then_read(*args, **kwargs):  # runs after the listing, before any byte is read
        gone.unlink()
        rewritten.write_bytes(rewritten.read_bytes() + b"appended")
        os.utime(rewritten, (1_700_000_000, 1_700_000_000))
        return listed_then_read(*args, **kwargs)

    monkeypatch.setattr(extract_features, "featurized_rows", delete_and_rewrite_then_read)
    summary = extract_features.run(spark, job_args(tmp_path, "racy", f"file://{converted_weights}"))
    assert summary["images_seen"] == 4 and summary["features_written"] == 2
    assert summary["rejected_by_reason"] == {"file changed between listing and reading": 1,
                                             "file disappeared between listing and reading": 1}
    features = {Path(r["path"]).name for r in read_features(spark, tmp_path).collect()}
    assert features == {p.name for p in kept}
    rejects = {Path(r["path"]).name: r for r in read_rejects(spark, tmp_path).collect()}
    assert rejects[gone.name]["reason"] == "file disappeared between listing and reading"
    assert rejects[gone.name]["label"] == "Abyssinian" and rejects[gone.name]["length"] > 0
    assert rejects[rewritten.name]["reason"].startswith("file changed between listing and reading")

    # the next run reads the rewritten file (its new version is not done yet) and nothing else
    monkeypatch.setattr(extract_features, "featurized_rows", listed_then_read)
    again = extract_features.run(spark, job_args(tmp_path, "next", f"file://{converted_weights}"))
    assert again["features_written"] == 1 and again["rejected"] == 0
    assert again["skipped_done_earlier"] == 2


def test_vgg16_gives_4096_features(spark, tmp_path):
    write_sample_images(tmp_path / "images", n_classes=1, per_class=3, seed=14)
    summary = extract_features.run(spark, job_args(tmp_path, "v", None, backbone="vgg16"))
    rows = read_features(spark, tmp_path, "vgg16").collect()
    assert summary["features_written"] == 3 and {len(r["features"]) for r in rows} == {4096}


def test_missing_weights_and_images_fail_clearly(spark, tmp_path, monkeypatch):
    write_sample_images(tmp_path / "images", n_classes=1, per_class=1, seed=15)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        extract_features.run(spark, job_args(tmp_path, "w", f"file://{tmp_path}/nope.keras"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    with pytest.raises(WeightsUnavailableError, match="--weights-uri"):
        extract_features.run(spark, extract_features.parse_args([
            "--images-uri", f"file://{tmp_path}/images", "--features-uri", f"file://{tmp_path}/f",
            "--rejects-uri", f"file://{tmp_path}/r", "--backbone", "vgg16", "--run-key", "k",
            "--modified-before", FAR_FUTURE, "--batch-size", "4"]))
    assert not (tmp_path / "f").exists()
    with pytest.raises(StoreError, match="--images-uri .* does not exist"):
        extract_features.run(spark, job_args(tmp_path / "absent", "x", None))


@pytest.mark.parametrize("argv,message", [
    (["--labels-json", "beagle"], "--labels-json"),
    (["--run-key", "a/b"], "path-safe"),
    (["--backbone", "resnet9"], "unknown backbone"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    base = {"--images-uri": "file:///i", "--features-uri": "file:///f", "--rejects-uri": "file:///r",
            "--backbone": "mobilenet_v2", "--run-key": "k", "--modified-before": FAR_FUTURE, "--batch-size": "4"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    with pytest.raises(SystemExit):
        extract_features.parse_args([x for kv in base.items() for x in kv])
    assert message in capsys.readouterr().err
