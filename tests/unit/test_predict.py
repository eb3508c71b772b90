"""The prediction core: the model.json math against scikit-learn, validation errors, photos in batches."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from bad_images import jpeg_bytes, rejected_files
from image_jobs.decode import ResizePolicy
from image_jobs.predictor import MODEL_FORMAT, ModelError, Predictor, load_model_json, model_from_dict, top_as_json

SOURCE = "file:///runs/r1/models/multiclass/model.json"


def fitted(n_classes: int, dim: int = 12, k: int = 4, seed: int = 0):
    """A model.json dict fitted the way train_models fits it, the reduced features and the classifier."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), 30)
    x = centres[y] + rng.normal(0, 1.5, (len(y), dim))
    mean, std = x.mean(0), x.std(0, ddof=1)  # Spark's StandardScaler: sample standard deviation
    z = (x - mean) / std
    components = PCA(n_components=k, random_state=0).fit(z).components_
    reduced = z @ components.T  # Spark's PCA projects without centring again
    classifier = LogisticRegression(max_iter=2000).fit(reduced, y)
    model = {
        "format": MODEL_FORMAT, "run_key": "r1", "backbone": "mobilenet_v2", "weights_uri": None,
        "feature_dim": dim, "labels": [f"class_{i}" for i in range(n_classes)],
        "scaler_mean": mean.tolist(), "scaler_std": std.tolist(), "pca_components": components.tolist(),
        "classifier": "multinomial_logistic_regression",
        "coef": classifier.coef_.tolist(), "intercept": classifier.intercept_.tolist(),
    }
    return model, x, reduced, classifier


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_probabilities_equal_scikit_learn_on_the_same_pipeline(n_classes):
    model_dict, x, reduced, classifier = fitted(n_classes)
    model = model_from_dict(model_dict, SOURCE)
    proba = model.probabilities(x)
    np.testing.assert_allclose(proba, classifier.predict_proba(reduced), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    top = model.top(proba, 3)
    assert [row[0][0] for row in top] == [model.labels[i] for i in classifier.predict(reduced)]
    assert all(len(row) == min(3, n_classes) for row in top)
    assert all(row[i][1] >= row[i + 1][1] for row in top for i in range(len(row) - 1))


def test_a_binary_model_keeps_scikit_learns_single_row_of_coefficients():
    model_dict, x, reduced, classifier = fitted(2)
    assert np.asarray(model_dict["coef"]).shape == (1, 4)
    model = model_from_dict(model_dict, SOURCE)
    assert model.coef.shape == (2, 4)
    np.testing.assert_allclose(model.probabilities(x)[:, 1], classifier.predict_proba(reduced)[:, 1], rtol=1e-9)


def test_a_constant_feature_is_standardised_to_zero_like_spark():
    model_dict, x, _, _ = fitted(3)
    model_dict["scaler_std"][5] = 0.0
    model = model_from_dict(model_dict, SOURCE)
    shifted = x.copy()
    shifted[:, 5] += 1e6
    np.testing.assert_allclose(model.probabilities(shifted), model.probabilities(x))


def test_top_k_is_capped_at_the_number_of_classes_and_serialises_best_first():
    model = model_from_dict(fitted(3)[0], SOURCE)
    top = model.top(np.array([[0.2, 0.5, 0.3]]), 10)[0]
    assert top == [("class_1", 0.5), ("class_2", 0.3), ("class_0", 0.2)]
    assert json.loads(top_as_json(top)) == [{"class": "class_1", "probability": 0.5},
                                            {"class": "class_2", "probability": 0.3},
                                            {"class": "class_0", "probability": 0.2}]
    assert top_as_json(None) is None


def _broken(change):
    model = copy.deepcopy(fitted(3)[0])
    change(model)
    return model


@pytest.mark.parametrize("model,message", [
    (_broken(lambda m: m.update(format="something-else/2")), "field 'format'"),
    (_broken(lambda m: m.update(labels=["a"])), "field 'labels'"),
    (_broken(lambda m: m.update(labels=["a", "a", "b"])), "field 'labels'"),
    (_broken(lambda m: m.pop("backbone")), "field 'backbone'"),
    (_broken(lambda m: m.pop("pca_components")), "field 'pca_components' is missing"),
    (_broken(lambda m: m.update(scaler_std=m["scaler_std"][:-1])), "field 'scaler_std'"),
    (_broken(lambda m: m.update(feature_dim=99)), "field 'feature_dim'"),
    (_broken(lambda m: m.update(pca_components=[row[:-1] for row in m["pca_components"]])),
     "field 'pca_components' is 4 x 11"),
    (_broken(lambda m: m.update(coef=m["coef"][:2])), "field 'coef' has 2 rows, expected 3"),
    (_broken(lambda m: m.update(coef=[row[:3] for row in m["coef"]])), "field 'coef' has 3 columns"),
    (_broken(lambda m: m.update(intercept=m["intercept"][:2])), "field 'intercept'"),
    (_broken(lambda m: m["scaler_mean"].__setitem__(0, float("nan"))), "field 'scaler_mean' holds non-finite"),
    (_broken(lambda m: m.update(coef="not numbers")), "field 'coef'"),
    ([1, 2, 3], "holds a list"),
])
def test_malformed_models_name_the_file_and_the_field(model, message):
    with pytest.raises(ModelError, match=message) as err:
        model_from_dict(model, SOURCE)
    assert str(err.value).startswith(SOURCE)


@pytest.mark.parametrize("text,message", [("", "empty"), ("{not json", "not valid JSON")])
def test_unparseable_model_files_name_the_file(text, message):
    with pytest.raises(ModelError, match=message):
        load_model_json(text, SOURCE)


class MeanColour:
    """A deterministic three-feature 'backbone': each image's mean red, green and blue."""

    def __init__(self):
        self.batch_sizes = []

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(batch))
        return batch.mean(axis=(1, 2))


def colour_model() -> dict:
    """A model that answers the dominant colour channel of a photo."""
    return {"format": MODEL_FORMAT, "run_key": "colours", "backbone": "mobilenet_v2", "weights_uri": None,
            "labels": ["red", "green", "blue"], "scaler_mean": [0.0] * 3, "scaler_std": [1.0] * 3,
            "pca_components": np.eye(3).tolist(), "coef": (0.1 * np.eye(3)).tolist(), "intercept": [0.0] * 3}


def test_predictor_scores_good_photos_in_batches_and_gives_bad_ones_a_reason():
    png = io.BytesIO()
    Image.new("RGB", (90, 60), (20, 30, 220)).save(png, format="PNG")
    bad = rejected_files()
    contents = [jpeg_bytes((80, 60), (230, 20, 20)), bad["text_named.jpg"], jpeg_bytes((50, 70), (10, 240, 10)),
                png.getvalue(), bad["truncated.jpg"], None, jpeg_bytes((64, 64), (250, 40, 30))]
    backbone = MeanColour()
    predictor = Predictor(model_from_dict(colour_model(), "colours.json"), backbone, ResizePolicy(32, 1.0),
                          batch_size=2)
    predictions = predictor.predict(contents, k=2)
    assert [p.top[0][0] if p.scored else None for p in predictions] == [
        "red", None, "green", "blue", None, None, "red"]
    assert [len(p.top) for p in predictions if p.scored] == [2, 2, 2, 2]
    assert predictions[1].reason == "not an image (unrecognised format)"
    assert predictions[4].reason.startswith("corrupt or truncated image")
    assert predictions[5].reason == "empty file (0 bytes)"
    assert (predictions[0].width, predictions[0].height) == (80, 60)
    assert backbone.batch_sizes == [2, 2]  # 4 good photos, batches of 2: bad photos take no slot
    assert predictions[0].top[0][1] > 0.9


def test_a_model_without_pca_scores_the_standardised_features():
    model_dict, x, _, _ = fitted(3)
    mean, std = np.array(model_dict["scaler_mean"]), np.array(model_dict["scaler_std"])
    z = (x - mean) / std
    classifier = LogisticRegression(C=0.1, max_iter=2000).fit(z, np.repeat(np.arange(3), 30))
    model = model_from_dict({**model_dict, "format": MODEL_FORMAT, "pca_components": None, "reduction": "none",
                             "coef": classifier.coef_.tolist(), "intercept": classifier.intercept_.tolist()}, SOURCE)
    assert model.components is None
    np.testing.assert_allclose(model.probabilities(x), classifier.predict_proba(z), rtol=1e-9, atol=1e-12)
    with pytest.raises(ModelError, match=r"field 'coef' has 4 columns, expected 12 \(the feature dimension: no PCA\)"):
        model_from_dict({**model_dict, "pca_components": None}, SOURCE)


THRESHOLD = {"threshold": 0.6, "target_precision": 0.95, "target_met": True, "precision": 0.951, "coverage": 0.8}


def test_the_answer_threshold_is_read_and_an_older_model_has_threshold_0():
    old = model_from_dict({**fitted(3)[0], "format": "image-pipeline-multiclass/1"}, SOURCE)
    assert old.threshold == 0.0 and old.threshold_info is None
    assert old.threshold_note.startswith("0: this model has none (trained before answer thresholds)")
    new = model_from_dict({**fitted(3)[0], "answer_threshold": THRESHOLD}, SOURCE)
    assert new.threshold == 0.6
    assert new.threshold_note == "0.600, the model's (95.1% precision at 80.0% coverage on held-out photos; target 95%)"


@pytest.mark.parametrize("threshold,message", [
    ("high", "field 'answer_threshold' must be an object"),
    ({**THRESHOLD, "threshold": 1.5}, r"field 'answer_threshold.threshold' must be a number in \[0, 1\], got 1.5"),
    ({**THRESHOLD, "coverage": None}, "field 'answer_threshold.coverage'"),
    ({**THRESHOLD, "target_met": "yes"}, "field 'answer_threshold.target_met' must be true or false"),
])
def test_a_malformed_threshold_names_the_field(threshold, message):
    with pytest.raises(ModelError, match=message):
        model_from_dict({**fitted(3)[0], "answer_threshold": threshold}, SOURCE)


def test_photos_under_the_threshold_are_uncertain_and_keep_their_classes():
    model = model_from_dict({**colour_model(), "answer_threshold": {**THRESHOLD, "threshold": 0.5}}, "colours.json")
    predictor = Predictor(model, MeanColour(), ResizePolicy(32, 1.0))
    sure, mixed = jpeg_bytes((64, 64), (250, 10, 10)), jpeg_bytes((64, 64), (104, 102, 100))
    first, second, bad = predictor.predict([sure, mixed, b""], k=3)
    assert first.top[0][1] >= 0.5 and first.uncertain is False
    assert second.top[0][1] < 0.5 and second.uncertain is True and len(second.top) == 3
    assert bad.uncertain is None and not bad.scored
    assert [p.uncertain for p in predictor.predict([sure, mixed], threshold=0.0)] == [False, False]
    assert [p.uncertain for p in predictor.predict([sure, mixed], threshold=1.0)] == [True, True]


def test_predictions_csv_writes_the_uncertain_mark_and_leaves_it_empty_for_older_batches():
    import pandas as pd

    from image_jobs.inbox import CSV_COLUMNS
    from predictions_reference import predictions_csv

    when = pd.Timestamp("2026-03-01T10:00:00.123456Z")
    old = {"path": "file:/inbox/a.jpg", "length": 10, "modificationTime": when, "top1_class": "pug",
           "top1_probability": 0.9, "top3": "[]", "reason": None, "scored_by_run": "s1"}
    rows = pd.DataFrame([old, {**old, "path": "file:/inbox/b.jpg", "top1_probability": 0.4},
                         {**old, "path": "file:/inbox/c.jpg", "top1_class": None, "top1_probability": None,
                          "reason": "empty file (0 bytes)"}])
    before = pd.read_csv(io.StringIO(predictions_csv(rows)))  # batches written before the columns existed
    assert list(before.columns) == CSV_COLUMNS and before[["uncertain", "threshold"]].isna().all().all()
    rows = rows.assign(uncertain=[False, True, None], threshold=[0.5, 0.5, None])
    text = predictions_csv(rows)
    # the columns after scored_by_run: uncertain, threshold, model_sha256 (empty: no digest in these rows)
    assert [line.split(",")[-3:] for line in text.splitlines()[1:]] == [["false", "0.5", ""], ["true", "0.5", ""],
                                                                         ["", "", ""]]
    assert text.splitlines()[1].split(",")[6] == "2026-03-01T10:00:00.123Z"
