"""Training and evaluation jobs on synthetic features: accuracy where it should be, columns, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyspark
import pytest
from PIL import Image

import evaluate_models
import train_models
from image_jobs.training import TrainingInputError
from sample_features import SAMPLE_IDENTITY, sample_feature_frame, write_extract_summary, write_sample_features

pytestmark = pytest.mark.spark

LABELS = ["cat_a", "cat_b", "dog_a", "dog_twin"]
SPLITS = "0.2,0.5,0.8"


@pytest.fixture(scope="module")
def features_root(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    # dog_twin draws from dog_a's distribution: no classifier can tell them apart
    frame = sample_feature_frame(LABELS, per_class=40, dim=64, seed=1, noise=2.0, same_as={"dog_twin": "dog_a"})
    write_sample_features(spark, f"file://{root}/features", "synthetic", "r1", frame)
    return root


def train_args(root, run_key, *extra):
    return train_models.parse_args([
        "--features-uri", f"file://{root}/features", "--backbone", "synthetic",
        "--models-uri", f"file://{root}/runs/{run_key}/models", "--run-key", run_key,
        "--modified-before", "2100-01-01T00:00:00Z", "--split-ratios", SPLITS, "--pca-components", "16",
        "--max-per-class", "30", "--extract-summary-uri", write_extract_summary(root, "synthetic"), *extra,
    ])


def evaluate_args(root, run_key):
    return evaluate_models.parse_args([
        "--models-uri", f"file://{root}/runs/{run_key}/models", "--report-uri", f"file://{root}/runs/{run_key}/report",
        "--rejects-uri", f"file://{root}/rejects", "--backbone", "synthetic", "--run-key", run_key,
        "--modified-before", "2100-01-01T00:00:00Z",
    ])


@pytest.fixture(scope="module")
def trained(spark, features_root):
    summary = train_models.run(spark, train_args(features_root, "r1"))
    report = evaluate_models.run(spark, evaluate_args(features_root, "r1"))
    return summary, report


def metrics(root, run_key="r1") -> pd.DataFrame:
    return pd.read_csv(root / "runs" / run_key / "report" / "metrics.csv")


def test_separable_pairs_near_100_and_indistinguishable_near_50(features_root, trained):
    m = metrics(features_root)
    per_pair = m.groupby(["class_1", "class_2"])["predict_pct"].mean()
    assert per_pair[("dog_a", "dog_twin")] < 70
    # 30 images a class, 6 of them to train at split 0.2: the least separable pair's mean over the splits
    # varies with the sample between 90 and 97 (seeds 0-4, whether each pair draws its own sample from all rows
    # or the pairs share a per-class sample, as the sweep now does)
    assert per_pair.drop(("dog_a", "dog_twin")).min() > 90
    _, report = trained
    assert report["hardest_pairs"][0]["class_1"] == "dog_a" and report["hardest_pairs"][0]["class_2"] == "dog_twin"


def test_metrics_columns_types_and_sizes(features_root, trained):
    m = metrics(features_root)
    assert list(m.columns[:9]) == ["class_1", "class_2", "split", "iteration", "num_model", "predict_pct",
                                   "nb_train", "nb_test", "nb_correct"]
    assert {"model_type", "fit_seconds", "best_of_pair"} <= set(m.columns)
    assert len(m) == 6 * 3
    assert (m["nb_train"] + m["nb_test"] == 60).all()  # 30 per class, balanced
    assert (m["iteration"] == 100).all() and set(m["num_model"]) == {1, 2, 3}
    assert np.allclose(m["predict_pct"], 100 * m["nb_correct"] / m["nb_test"], atol=1e-3)
    assert m["best_of_pair"].sum() == 6
    assert m.dtypes["nb_train"].kind == "i" and m.dtypes["predict_pct"].kind == "f"
    assert m.dtypes["best_of_pair"].kind == "b"


def test_best_model_of_each_pair_is_saved(spark, features_root, trained):
    best = spark.read.parquet(f"file://{features_root}/runs/r1/models/pairwise").toPandas()
    assert sorted(best["pair"]) == sorted(f"{a}_VS_{b}" for a, b in metrics(features_root)[["class_1", "class_2"]]
                                           .drop_duplicates().itertuples(index=False))
    assert {len(c) for c in best["coef"]} == {16}
    m = metrics(features_root)
    for row in best.itertuples():
        pair = m[(m.class_1 == row.class_1) & (m.class_2 == row.class_2)]
        assert row.predict_pct == pair["predict_pct"].max()


def test_multiclass_model_is_portable_and_matches_its_predictions(spark, features_root, trained):
    models = features_root / "runs" / "r1" / "models"
    model = json.loads((models / "multiclass" / "model.json").read_text())
    assert model["labels"] == LABELS
    chosen = trained[0]["multiclass"]["selection"]["chosen"]
    assert model["reduction"] == chosen["reduction"] and model["classifier_c"] == chosen["c"]
    assert (model["pca_components"] is None) == (chosen["components"] == 0)
    predictions = spark.read.parquet(f"file://{models}/multiclass/test_predictions").toPandas()
    frame = sample_feature_frame(LABELS, 40, 64, seed=1, noise=2.0, same_as={"dog_twin": "dog_a"}).set_index("path")
    x = np.stack(frame.loc[predictions["path"], "features"].to_numpy())
    std = np.array(model["scaler_std"])
    z = np.where(std > 0, (x - np.array(model["scaler_mean"])) / np.where(std > 0, std, 1), 0)
    reduced = z if model["pca_components"] is None else z @ np.array(model["pca_components"]).T
    logits = reduced @ np.array(model["coef"]).T + np.array(model["intercept"])
    assert [model["labels"][i] for i in logits.argmax(1)] == predictions["predicted"].tolist()
    _, report = trained
    assert 0.6 < report["multiclass"]["accuracy"] < 0.95  # the twins halve two classes' accuracy


def test_report_files(features_root, trained):
    report = features_root / "runs" / "r1" / "report"
    per_class = pd.read_csv(report / "multiclass.csv")
    assert list(per_class.columns) == ["class", "precision", "recall", "f1", "support"]
    assert per_class["support"].sum() == 4 * 8
    confusion = pd.read_csv(report / "confusion_matrix.csv", index_col=0)
    assert confusion.to_numpy().sum() == 32 and list(confusion.columns) == LABELS
    summary = json.loads((report / "summary.json").read_text())
    for key in ("run_key", "backbone", "feature_dim", "pca_components", "pca_explained_variance_total", "classes",
                "image_counts", "rejects", "multiclass", "hardest_pairs", "seconds_per_step"):
        assert key in summary
    assert summary["image_counts"] == {label: 40 for label in LABELS} and summary["feature_dim"] == 64
    assert 0 < summary["pca_explained_variance_total"] <= 1 and 0 <= summary["multiclass"]["macro_f1"] <= 1
    # one meaning per key: the training summary's number and interval are the report's
    training = json.loads((features_root / "runs" / "r1" / "models" / "training_summary.json").read_text())
    assert summary["pca_explained_variance_total"] == training["pca_explained_variance_total"] == pytest.approx(
        sum(training["pca_explained_variance"]), abs=1e-5)
    assert summary["multiclass"]["accuracy_ci95"] == training["multiclass"]["accuracy_ci95"]
    assert summary["multiclass"]["accuracy"] == pytest.approx(training["multiclass"]["accuracy"])
    plots = sorted(p.name for p in (report / "plots").iterdir())
    assert {"accuracy_vs_split.png", "pairwise_accuracy_heatmap.png", "confusion_matrix.png",
            "pca_explained_variance.png", "accuracy_vs_split_dog_twin.png", "model_selection.png",
            "precision_coverage.png"} <= set(plots)
    for name in plots:
        with Image.open(report / "plots" / name) as img:
            img.verify()
            assert img.format == "PNG" and img.size[0] > 300


def test_deterministic_for_a_seed(spark, features_root, trained):
    train_models.run(spark, train_args(features_root, "r2"))
    evaluate_models.run(spark, evaluate_args(features_root, "r2"))
    first, second = metrics(features_root, "r1"), metrics(features_root, "r2")
    columns = ["class_1", "class_2", "split", "predict_pct", "nb_train", "nb_test", "nb_correct"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


def test_one_vs_rest_and_one_vs_each(spark, features_root):
    train_models.run(spark, train_args(features_root, "rest", "--pair-mode", "one_vs_rest", "--focus-class", "cat_a"))
    evaluate_models.run(spark, evaluate_args(features_root, "rest"))
    m = metrics(features_root, "rest")
    assert set(zip(m.class_1, m.class_2, strict=True)) == {("cat_a", "rest")} and len(m) == 3
    assert (m["nb_train"] + m["nb_test"] == 60).all()
    train_models.run(spark, train_args(features_root, "each", "--pair-mode", "one_vs_each", "--focus-class", "dog_a"))
    evaluate_models.run(spark, evaluate_args(features_root, "each"))
    m = metrics(features_root, "each")
    assert set(zip(m.class_1, m.class_2, strict=True)) == {("dog_a", "cat_a"), ("dog_a", "cat_b"),
                                                           ("dog_a", "dog_twin")}


@pytest.mark.parametrize("extra,message", [
    (["--labels-json", '["cat_a"]'], "at least 2 classes"),
    (["--labels-json", '["cat_a", "zebra"]'], "zebra"),
    (["--max-per-class", "30", "--split-ratios", "0.01,0.5"], "too few images"),
    (["--pair-mode", "one_vs_rest", "--focus-class", "zebra"], "zebra"),
])
def test_bad_parameters_fail_clearly(spark, features_root, extra, message):
    with pytest.raises(TrainingInputError, match=message):
        train_models.run(spark, train_args(features_root, "bad", *extra))


def test_no_features_for_backbone_is_a_clear_error(spark, tmp_path):
    args = train_models.parse_args(["--features-uri", f"file://{tmp_path}/none", "--backbone", "vgg16",
                                    "--models-uri", f"file://{tmp_path}/m", "--run-key", "k",
                                    "--modified-before", "2100-01-01T00:00:00Z",
                                    "--extract-summary-uri", write_extract_summary(tmp_path, "vgg16")])
    with pytest.raises(TrainingInputError, match="no features of vgg16, weights sha256:5a5a"):
        train_models.run(spark, args)
    args.extract_summary_uri = f"file://{tmp_path}/absent.json"
    with pytest.raises(TrainingInputError, match="absent.json does not exist: run extract_features first"):
        train_models.run(spark, args)


def test_training_reads_only_its_feature_identity(spark, tmp_path):
    """Beside the run's rows, the store holds rows of other weights (a random-weights run), of bf16 and rows
    written before identities existed, for the same photos and more: only the run's identity is read, and
    the model records it."""
    frame = sample_feature_frame(["cat_a", "dog_a"], per_class=12, dim=16, seed=3)
    features = f"file://{tmp_path}/features"
    write_sample_features(spark, features, "synthetic", "ours", frame)
    extra = sample_feature_frame(["cat_a", "dog_a", "fox"], per_class=20, dim=16, seed=4)
    write_sample_features(spark, features, "synthetic", "random_run", extra,
                          {"weights_digest": "random", "precision_class": "fp32"})
    write_sample_features(spark, features, "synthetic", "bf16_run", extra,
                          {"weights_digest": SAMPLE_IDENTITY["weights_digest"], "precision_class": "bf16"})
    spark.createDataFrame(extra.assign(modificationTime=pd.Timestamp("2021-01-01")), (
        "path string, label string, features array<float>, length long, modificationTime timestamp, "
        "width int, height int")).write.parquet(f"{features}/backbone=synthetic/run=legacy")
    summary = train_models.run(spark, train_models.parse_args([
        "--features-uri", features, "--backbone", "synthetic", "--models-uri", f"file://{tmp_path}/models",
        "--run-key", "ours", "--modified-before", "2100-01-01T00:00:00Z", "--split-ratios", "0.5",
        "--pca-components", "4", "--extract-summary-uri", write_extract_summary(tmp_path, "synthetic")]))
    assert summary["image_counts"] == {"cat_a": 12, "dog_a": 12}
    assert summary["feature_identity"] == {"backbone": "synthetic", **SAMPLE_IDENTITY}
    model = json.loads((tmp_path / "models" / "multiclass" / "model.json").read_text())
    assert model["feature_identity"] == summary["feature_identity"]


def test_report_says_what_was_chosen_and_why(features_root, trained):
    report = features_root / "runs" / "r1" / "report"
    table = pd.read_csv(report / "model_selection.csv")
    assert list(table.columns) == ["reduction", "components", "c", "cv_accuracy", "fold_accuracy_std", "folds",
                                   "max_iterations", "fit_seconds", "chosen"]
    # 128 training photos: PCA sizes are capped at the 64 components fitted, so none and pca64, 4 C each
    assert sorted(set(table["reduction"])) == ["none", "pca64"] and len(table) == 8
    assert table["chosen"].sum() == 1 and (table["folds"] == 5).all()
    best = table.loc[table["chosen"]].iloc[0]
    assert best["cv_accuracy"] == table["cv_accuracy"].max()
    summary = json.loads((report / "summary.json").read_text())["multiclass"]
    assert summary["selection"]["chosen"] == {"reduction": best["reduction"], "components": int(best["components"]),
                                              "c": best["c"], "cv_accuracy": best["cv_accuracy"]}
    assert "highest cross-validated accuracy" in summary["selection"]["rule"]
    low, high = summary["accuracy_ci95"]
    assert low < summary["accuracy"] < high and summary["accuracy_ci95_method"] == "Wilson score interval"
    curve = pd.read_csv(report / "precision_coverage.csv")
    threshold = summary["answer_threshold"]
    chosen_row = curve.loc[curve["chosen"]].iloc[0]
    assert chosen_row["threshold"] == threshold["threshold"]
    assert chosen_row["held_out_coverage"] == threshold["coverage"]
    assert chosen_row["test_precision"] == threshold["test_precision"]
    assert curve["held_out_coverage"].is_monotonic_decreasing and curve.iloc[0]["held_out_coverage"] == 1.0


def test_a_labels_file_that_is_no_list_of_names_fails_naming_it(spark, features_root, tmp_path):
    labels_file = tmp_path / "labels.json"
    labels_file.write_text('{"cat_a": 1}')
    args = train_args(features_root, "from_file")
    args.labels_uri = f"file://{labels_file}"
    with pytest.raises(ValueError, match=f"--labels-uri file://{labels_file} does not hold a JSON list"):
        train_models.run(spark, args)


@pytest.mark.skipif(int(pyspark.__version__.split(".")[0]) >= 4, reason="on Spark 4 the same run goes through the "
                    "local backend: dag/test_a_thousand_classes.py; here it runs on Spark 3.5, what EMR runs")
def test_a_thousand_classes_train_and_report_from_the_labels_file(spark, tmp_path):
    """The most classes a run may have (conventions.MAX_CLASSES), their list in the labels file as the DAG's
    steps get it (--labels-uri): the file's classes are the run's, not every class with features (one more
    is there), and training and the report handle all of them (one_vs_rest keeps the sweep small)."""
    from image_jobs.conventions import MAX_CLASSES

    labels = [f"class_{i:04d}" for i in range(MAX_CLASSES)]
    frame = sample_feature_frame([*labels, "not_in_the_file"], per_class=6, dim=8, seed=9, noise=0.3)
    write_sample_features(spark, f"file://{tmp_path}/features", "synthetic", "k", frame)
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    summary = train_models.run(spark, train_models.parse_args([
        "--features-uri", f"file://{tmp_path}/features", "--backbone", "synthetic", "--models-uri",
        f"file://{tmp_path}/runs/k/models", "--run-key", "k", "--modified-before", "2100-01-01T00:00:00Z",
        "--labels-uri", f"file://{tmp_path}/labels.json", "--pair-mode", "one_vs_rest", "--focus-class",
        "class_0000", "--split-ratios", "0.5", "--pca-components", "4", "--reductions", "4", "--c-grid", "1.0",
        "--cv-folds", "2", "--test-fraction", "0.5", "--extract-summary-uri",
        write_extract_summary(tmp_path, "synthetic")]))
    assert summary["classes"] == labels and summary["multiclass"]["test_images"] == 3 * MAX_CLASSES
    assert set(summary["image_counts"]) == set(labels) and set(summary["image_counts"].values()) == {6}
    report = evaluate_models.run(spark, evaluate_models.parse_args([
        "--models-uri", f"file://{tmp_path}/runs/k/models", "--report-uri", f"file://{tmp_path}/runs/k/report",
        "--rejects-uri", f"file://{tmp_path}/rejects", "--backbone", "synthetic", "--run-key", "k",
        "--modified-before", "2100-01-01T00:00:00Z"]))
    assert report["classes"] == labels
    confusion = pd.read_csv(tmp_path / "runs" / "k" / "report" / "confusion_matrix.csv", index_col=0)
    assert confusion.shape == (MAX_CLASSES, MAX_CLASSES) and confusion.to_numpy().sum() == 3 * MAX_CLASSES
