"""Model selection of the multiclass model and its answer threshold, through the training job.

The data: 5 classes of isotropic Gaussian features in 1024 dimensions, noise 10 times the spread of
the class centres per dimension, 100 photos per class. There the best linear rule is close to the
nearest class centre, which a strongly regularised logistic regression approaches; the fixed
configuration (PCA 128, C=1) fits the noise of 300 training photos instead.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import train_models
from image_jobs.model_selection import SelectionInputError
from sample_features import sample_feature_frame, write_extract_summary, write_sample_features

pytestmark = pytest.mark.spark

LABELS = [f"breed_{i}" for i in range(5)]
FRAME = {"per_class": 100, "dim": 1024, "seed": 1, "noise": 10.0}


@pytest.fixture(scope="module")
def noisy_root(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    write_sample_features(spark, f"file://{root}/features", "synthetic", "r1", sample_feature_frame(LABELS, **FRAME))
    return root


def train(spark, root, run_key, *extra):
    return train_models.run(spark, train_models.parse_args([
        "--features-uri", f"file://{root}/features", "--backbone", "synthetic",
        "--models-uri", f"file://{root}/runs/{run_key}/models", "--run-key", run_key,
        "--modified-before", "2100-01-01T00:00:00Z", "--split-ratios", "0.5", "--test-fraction", "0.25",
        "--extract-summary-uri", write_extract_summary(root, "synthetic"), *extra]))


@pytest.fixture(scope="module")
def selected(spark, noisy_root):
    return train(spark, noisy_root, "selected")


@pytest.fixture(scope="module")
def fixed(spark, noisy_root):
    """The configuration before model selection: standardise, PCA 128, C=1."""
    return train(spark, noisy_root, "fixed", "--reductions", "128", "--c-grid", "1")


def cv_accuracy(summary) -> dict[tuple[str, float], float]:
    return {(r["reduction"], r["c"]): r["cv_accuracy"] for r in summary["multiclass"]["selection"]["table"]}


def test_selection_picks_strong_regularisation_and_beats_the_fixed_configuration(selected, fixed):
    mc, chosen = selected["multiclass"], selected["multiclass"]["selection"]["chosen"]
    print("cv accuracy:", cv_accuracy(selected), "chosen:", chosen, "test accuracy:", mc["accuracy"],
          "fixed:", fixed["multiclass"]["accuracy"])
    assert len(mc["selection"]["table"]) == 3 * 4 and mc["selection"]["folds"] == 5
    assert chosen["c"] <= 0.01  # strong regularisation
    assert cv_accuracy(selected)[("pca128", 1.0)] < chosen["cv_accuracy"] - 0.03
    assert [r["chosen"] for r in mc["selection"]["table"]].count(True) == 1
    assert fixed["multiclass"]["selection"]["chosen"] == {**fixed["multiclass"]["selection"]["chosen"],
                                                          "reduction": "pca128", "c": 1.0}
    assert mc["test_images"] == fixed["multiclass"]["test_images"] == 125  # the same test split
    # the test split is drawn in Spark (by a hash of seed and path); on it the chosen setting wins by 4 points
    assert mc["accuracy"] >= fixed["multiclass"]["accuracy"] + 0.03
    low, high = mc["accuracy_ci95"]
    assert 0 < low < mc["accuracy"] < high < 1 and high - low < 0.2  # 125 test photos: about +/- 7 points
    assert mc["correct"] == round(mc["accuracy"] * 125)


def test_the_same_seed_gives_the_same_choice_the_same_table_and_the_same_model(spark, noisy_root, selected):
    again = train(spark, noisy_root, "again")
    assert again["multiclass"]["selection"]["chosen"] == selected["multiclass"]["selection"]["chosen"]
    columns = ["reduction", "c", "cv_accuracy", "fold_accuracy_std", "chosen"]
    pd.testing.assert_frame_equal(pd.DataFrame(again["multiclass"]["selection"]["table"])[columns],
                                  pd.DataFrame(selected["multiclass"]["selection"]["table"])[columns])
    first, second = (json.loads((noisy_root / "runs" / key / "models" / "multiclass" / "model.json").read_text())
                     for key in ("selected", "again"))
    assert first["answer_threshold"] == second["answer_threshold"]
    # the final fit and the PCA aggregate over Spark's tasks, whose partial sums may meet in another order on
    # another run: the same model to the last few bits, not bit for bit
    for field in ("coef", "intercept", "scaler_mean", "scaler_std"):
        np.testing.assert_allclose(first[field], second[field], rtol=1e-9, atol=1e-12)
    other_seed = train(spark, noisy_root, "seed7", "--seed", "7")
    assert cv_accuracy(other_seed) != cv_accuracy(selected)  # other folds (and another test split)


def test_model_json_holds_the_chosen_model_and_its_threshold(spark, noisy_root, selected):
    model = json.loads((noisy_root / "runs" / "selected" / "models" / "multiclass" / "model.json").read_text())
    chosen, info = selected["multiclass"]["selection"]["chosen"], model["answer_threshold"]
    assert model["format"] == "image-pipeline-multiclass/2" and model["classifier_c"] == chosen["c"]
    assert model["reduction"] == chosen["reduction"]
    assert (model["pca_components"] is None) == (chosen["reduction"] == "none")
    assert info["target_precision"] == 0.95 and 0 <= info["threshold"] < 1 and 0 < info["coverage"] <= 1
    assert info["photos"] == 375 and (info["precision"] >= 0.95) == info["target_met"]
    # the test photos, predicted with model.json's arrays: what is answered matches the summary's figures
    predictions = spark.read.parquet(f"file://{noisy_root}/runs/selected/models/multiclass/test_predictions").toPandas()
    frame = sample_feature_frame(LABELS, **FRAME).set_index("path")
    x = np.stack(frame.loc[predictions["path"], "features"].to_numpy()).astype(np.float64)
    std = np.array(model["scaler_std"])
    z = np.where(std > 0, (x - np.array(model["scaler_mean"])) / np.where(std > 0, std, 1), 0)
    reduced = z if model["pca_components"] is None else z @ np.array(model["pca_components"]).T
    logits = reduced @ np.array(model["coef"]).T + np.array(model["intercept"])
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    assert [model["labels"][i] for i in proba.argmax(1)] == predictions["predicted"].tolist()
    answered = proba.max(1) >= info["threshold"]
    assert predictions["uncertain"].tolist() == (~answered).tolist()
    right = predictions["predicted"] == predictions["label"]
    assert info["test_coverage"] == pytest.approx(answered.mean(), abs=1e-6)
    assert info["test_precision"] == pytest.approx(right[answered].mean(), abs=1e-6)
    assert info["test_precision"] > selected["multiclass"]["accuracy"]  # answering less, right more often


def test_a_small_class_gets_fewer_folds_and_a_single_training_image_is_a_clear_error(spark, tmp_path):
    small = sample_feature_frame(["big", "small"], per_class=12, dim=16, seed=2)
    small = small[(small["label"] == "big") | small["path"].str.endswith(("0000.jpg", "0001.jpg", "0002.jpg",
                                                                          "0003.jpg"))]
    write_sample_features(spark, f"file://{tmp_path}/features", "synthetic", "r1", small)
    summary = train(spark, tmp_path, "fewer")  # small: 4 images, 1 for the test split, 3 to train
    selection = summary["multiclass"]["selection"]
    assert (selection["folds"], selection["folds_requested"]) == (3, 5)
    assert {row["folds"] for row in selection["table"]} == {3}
    with pytest.raises(SelectionInputError, match=r"at least 2 training images per class .*\{'small': 1\}"):
        train(spark, tmp_path, "bad", "--test-fraction", "0.75")  # small: 3 test images, 1 to train
    assert not (tmp_path / "runs" / "bad" / "models" / "multiclass" / "model.json").exists()


@pytest.mark.parametrize("extra,message", [
    (["--reductions", "none,pca-x"], "reduction 'pca-x' is neither 'none' nor a number of PCA components"),
    (["--c-grid", "0.1,0"], "C value '0' must be a positive finite number"),
    (["--cv-folds", "1"], "--cv-folds must be >= 2, got 1"),
    (["--target-precision", "1.5"], r"--target-precision must be in \(0, 1\], got 1.5"),
])
def test_bad_selection_arguments_are_named(extra, message, capsys):
    with pytest.raises(SystemExit):
        train_models.parse_args(["--features-uri", "file:///f", "--backbone", "b", "--models-uri", "file:///m",
                                 "--run-key", "k", "--modified-before", "2100-01-01T00:00:00Z",
                                 "--extract-summary-uri", "file:///s.json", *extra])
    assert re.search(message, capsys.readouterr().err)
