"""Prediction with a trained run's multiclass model: photo bytes -> the top classes with probabilities.

The model is the run's ``multiclass/model.json`` (this module writes it too: ``model_document``): scaler
mean/std, PCA components (k x feature_dim, or null when the run chose no reduction), multinomial
logistic regression coefficients, labels, backbone and weights URI, as plain arrays, and the answer
threshold. Photos go through exactly the extraction job's code path (``featurize.featurize_contents``:
same decoding, same resize policy, same backbone and weights), then

    standardise -> PCA (if any) -> softmax(coef . x + intercept) -> top k -> uncertain if top 1 < threshold

A model.json without a threshold (format /1, trained before thresholds) answers every photo:
threshold 0 (``MulticlassModel.threshold_note`` says so).

Runs anywhere numpy, PIL and Keras run: the CLI on a laptop, a Python worker on the cluster. It
never imports Spark or Airflow. A photo that cannot be decoded gets a reason, never an exception.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from image_jobs.conventions import IMAGENET_WEIGHTS, MODEL_FORMAT, MODEL_FORMATS_READ
from image_jobs.decode import DEFAULT_MAX_PIXELS
from image_jobs.feature_identity import FeatureIdentity, FeatureIdentityError

DEFAULT_TOP = 3


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class MulticlassModel:
    """The portable multiclass pipeline of one run, validated, as numpy arrays."""

    source: str
    run_key: str | None
    backbone: str
    weights_uri: str | None
    labels: tuple[str, ...]
    mean: np.ndarray  # (feature_dim,)
    std: np.ndarray  # (feature_dim,)
    components: np.ndarray | None  # (k, feature_dim); None: no reduction
    coef: np.ndarray  # (n_classes, k or feature_dim); a binary model's single row is expanded to two
    intercept: np.ndarray  # (n_classes,)
    threshold: float = 0.0  # photos whose top probability is under it are uncertain
    threshold_info: dict | None = None  # the model's answer_threshold (None: the model has none)
    identity: FeatureIdentity | None = None  # what made its training features (None: trained before identities)

    @property
    def threshold_note(self) -> str:
        """Where the threshold comes from, in a sentence for the user."""
        info = self.threshold_info
        if info is None:
            return "0: this model has none (trained before answer thresholds), every photo is answered"
        return (f"{self.threshold:.3f}, the model's ({100 * info['precision']:.1f}% precision at "
                f"{100 * info['coverage']:.1f}% coverage on held-out photos; target "
                f"{100 * info['target_precision']:.0f}%{'' if info['target_met'] else ', not reached'})")

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def weights(self) -> str:
        """The weights argument of ``featurize.load_model``: the run's weights URI, else Keras' cache."""
        return self.weights_uri or IMAGENET_WEIGHTS

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (n, n_classes) of feature rows (n, feature_dim), rows summing to 1.

        Standardisation as in training: a feature with zero variance becomes 0.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"features of shape {x.shape}, the model of {self.source} expects (n, {self.feature_dim})")
        safe_std = np.where(self.std > 0, self.std, 1.0)
        z = np.where(self.std > 0, (x - self.mean) / safe_std, 0.0)
        reduced = z if self.components is None else z @ self.components.T
        logits = reduced @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)  # numerically stable softmax
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def top(self, probabilities: np.ndarray, k: int = DEFAULT_TOP) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes of each row, best first (ties: the label listed first)."""
        k = max(1, min(k, len(self.labels)))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(row[j])) for j in idx] for row, idx in zip(probabilities, order, strict=True)]


def model_document(*, run_key: str, weights_uri: str | None, identity: FeatureIdentity, labels: list[str],
                   reduction, setting, coef: np.ndarray, intercept: np.ndarray, threshold: dict) -> dict:
    """model.json's content (format MODEL_FORMAT, the one ``model_from_dict`` reads): the chosen multiclass
    pipeline as plain arrays, what a prediction needs without Spark.

    ``reduction``: the run's ``statistics.Reduction``; ``setting``: the chosen ``selection.Setting``.
    ``z = (x - scaler_mean) / scaler_std`` (0 where the std is 0), then ``z @ pca_components.T`` (no PCA when
    the chosen reduction is none: ``pca_components`` is null); the standardised rows' mean is 0, so the PCA
    needs no centring of its own.
    """
    k = setting.components
    return {
        "format": MODEL_FORMAT,
        "run_key": run_key,
        "backbone": identity.backbone,
        "weights_uri": weights_uri,
        "feature_identity": identity.to_dict(),
        "feature_dim": int(reduction.mean.shape[0]),
        "labels": list(labels),
        "scaler_mean": reduction.mean.tolist(),
        "scaler_std": np.where(reduction.constant, 0.0, reduction.scale).tolist(),
        "reduction": setting.reduction,
        "pca_components": reduction.components[:k].tolist() if k else None,  # k x feature_dim
        "explained_variance_ratio": reduction.explained_variance_ratio[:k].tolist() if k else None,
        "classifier": "multinomial_logistic_regression",
        "classifier_c": setting.c,
        "coef": np.asarray(coef).tolist(),
        "intercept": np.asarray(intercept).tolist(),
        "answer_threshold": threshold,
    }


def _array(model: dict, field: str, source: str, ndim: int) -> np.ndarray:
    if field not in model:
        raise ModelError(f"{source}: field {field!r} is missing")
    try:
        value = np.asarray(model[field], dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"{source}: field {field!r} is not a numeric array") from None
    if value.ndim != ndim or 0 in value.shape:
        raise ModelError(f"{source}: field {field!r} must be a non-empty {ndim}-d array, got shape {value.shape}")
    if not np.isfinite(value).all():
        raise ModelError(f"{source}: field {field!r} holds non-finite numbers")
    return value


def model_from_dict(model: object, source: str) -> MulticlassModel:
    """Validate a model.json dict (format, labels, every array's shape) into a MulticlassModel.

    ``source`` names the file in every error message.
    """
    labels, backbone, weights_uri = _identity(model, source)
    mean = _array(model, "scaler_mean", source, 1)
    std = _array(model, "scaler_std", source, 1)
    components = None if model.get("pca_components", 0) is None else _array(model, "pca_components", source, 2)
    dim = mean.shape[0]
    if "feature_dim" in model and model["feature_dim"] != dim:
        raise ModelError(f"{source}: field 'feature_dim' is {model['feature_dim']}, scaler_mean has {dim} values")
    if std.shape != (dim,):
        raise ModelError(f"{source}: field 'scaler_std' has {std.shape[0]} values, scaler_mean {dim}")
    if components is not None and components.shape[1] != dim:
        raise ModelError(f"{source}: field 'pca_components' is {components.shape[0]} x {components.shape[1]}, "
                         f"expected k x {dim} (the feature dimension)")
    coef, intercept = _classifier(model, source, dim if components is None else components.shape[0],
                                  len(labels), "(the feature dimension: no PCA)" if components is None
                                  else "(the PCA components)")
    run_key = model.get("run_key")
    info = answer_threshold(model, source)
    return MulticlassModel(source=source, run_key=run_key if isinstance(run_key, str) else None,
                           backbone=backbone, weights_uri=weights_uri, labels=tuple(labels), mean=mean, std=std,
                           components=components, coef=coef, intercept=intercept,
                           threshold=0.0 if info is None else info["threshold"], threshold_info=info,
                           identity=recorded_identity(model, source, backbone))


def recorded_identity(model: dict, source: str, backbone: str) -> FeatureIdentity | None:
    """The model's ``feature_identity`` (None for a model trained before identities), validated."""
    if model.get("feature_identity") is None:
        return None
    try:
        identity = FeatureIdentity.from_dict(model["feature_identity"], source)
    except FeatureIdentityError as exc:
        raise ModelError(str(exc)) from None
    if identity.backbone != backbone:
        raise ModelError(f"{source}: field 'feature_identity' names backbone {identity.backbone!r}, "
                         f"field 'backbone' {backbone!r}")
    return identity


def _identity(model: object, source: str) -> tuple[list[str], str, str | None]:
    """The validated format, labels, backbone and weights URI of a model.json dict."""
    if not isinstance(model, dict):
        raise ModelError(f"{source}: holds a {type(model).__name__}, not a model object")
    if model.get("format") not in MODEL_FORMATS_READ:
        raise ModelError(f"{source}: field 'format' is {model.get('format')!r}, this reader knows "
                         f"{' and '.join(repr(f) for f in MODEL_FORMATS_READ)}")
    labels = model.get("labels")
    if (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(v, str) and v for v in labels)
            or len(set(labels)) != len(labels)):
        raise ModelError(f"{source}: field 'labels' must be a list of at least 2 distinct class names, got {labels!r}")
    backbone = model.get("backbone")
    if not isinstance(backbone, str) or not backbone:
        raise ModelError(f"{source}: field 'backbone' is missing")
    weights_uri = model.get("weights_uri")
    if weights_uri is not None and (not isinstance(weights_uri, str) or not weights_uri):
        raise ModelError(f"{source}: field 'weights_uri' must be a URI or null, got {weights_uri!r}")
    return labels, backbone, weights_uri


def _classifier(model: dict, source: str, k: int, n: int, inputs: str) -> tuple[np.ndarray, np.ndarray]:
    """The validated ``coef`` (n x k) and ``intercept`` (n) of n classes over k inputs."""
    coef = _array(model, "coef", source, 2)
    intercept = _array(model, "intercept", source, 1)
    if coef.shape[1] != k:
        raise ModelError(f"{source}: field 'coef' has {coef.shape[1]} columns, expected {k} {inputs}")
    if coef.shape[0] == 1 and n == 2:
        # scikit-learn keeps one row for two classes: P(labels[1]) = sigmoid(coef . x + b), which is
        # the softmax of the logits (0, coef . x + b)
        if intercept.shape != (1,):
            raise ModelError(f"{source}: field 'intercept' has {intercept.shape[0]} values, 'coef' 1 row")
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    elif coef.shape[0] != n:
        raise ModelError(f"{source}: field 'coef' has {coef.shape[0]} rows, expected {n} (one per label)")
    if intercept.shape != (n,):
        raise ModelError(f"{source}: field 'intercept' has {intercept.shape[0]} values, expected {n} (one per label)")
    return coef, intercept


def answer_threshold(model: dict, source: str) -> dict | None:
    """The model's validated ``answer_threshold`` (None when the model has none: an older model)."""
    info = model.get("answer_threshold")
    if info is None:
        return None
    if not isinstance(info, dict):
        raise ModelError(f"{source}: field 'answer_threshold' must be an object, got {type(info).__name__}")
    for key in ("threshold", "precision", "coverage", "target_precision"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ModelError(f"{source}: field 'answer_threshold.{key}' must be a number in [0, 1], got {value!r}")
    if not isinstance(info.get("target_met"), bool):
        raise ModelError(f"{source}: field 'answer_threshold.target_met' must be true or false, "
                         f"got {info.get('target_met')!r}")
    return {**info, "threshold": float(info["threshold"])}


def check_threshold(value: float, what: str) -> float:
    """A threshold override, checked: a number in [0, 1]; the error names ``what`` gave it."""
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{what} must be a probability in [0, 1], got {value!r}")
    return float(value)


def load_model_json(text: str, source: str) -> MulticlassModel:
    """Parse and validate the text of a model.json; ModelError names ``source`` and what is wrong."""
    if not text.strip():
        raise ModelError(f"{source}: the file is empty")
    try:
        model = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{source}: not valid JSON ({exc})") from None
    return model_from_dict(model, source)


@dataclass(frozen=True)
class Prediction:
    """One photo's answer: the top classes with probabilities, or the reason it was not scored."""

    top: list[tuple[str, float]] | None
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    uncertain: bool | None = None  # scored, but the top probability is under the threshold (None: not scored)

    @property
    def scored(self) -> bool:
        return self.top is not None


def top_as_json(top: list[tuple[str, float]] | None) -> str | None:
    """The top classes as a JSON list of {"class", "probability"}, best first (None when not scored)."""
    if top is None:
        return None
    return json.dumps([{"class": label, "probability": round(p, 6)} for label, p in top])


class Predictor:
    """A run's model ready to answer: the backbone with the run's weights and resize, and the classifier.

    Build it once (loading the backbone is the expensive part) and call ``predict`` with many photos.
    """

    def __init__(self, model: MulticlassModel, feature_model, policy, batch_size: int = 16,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.model, self.feature_model, self.policy = model, feature_model, policy
        self.batch_size, self.max_pixels = max(1, batch_size), max_pixels

    @classmethod
    def load(cls, model: MulticlassModel, local_weights_path: str | None, batch_size: int = 16,
             max_pixels: int = DEFAULT_MAX_PIXELS, inference=None) -> Predictor:
        """Build the run's backbone (same weights, same resize policy as its extraction) through
        ``featurize.load_model``, which caches it for the life of the process.

        ``local_weights_path`` is where the run's weights file is on this machine (None: Keras'
        cache for ``imagenet``, or random weights for ``random``); ``inference`` (a
        ``featurize.InferenceChoice``; None: tensorflow) runs the forward pass. Raises
        ``WeightsUnavailableError``.
        """
        from image_jobs.backbones import get_backbone
        from image_jobs.featurize import TENSORFLOW, load_model

        try:
            backbone = get_backbone(model.backbone)
        except ValueError as exc:
            raise ModelError(f"{model.source}: {exc}") from None
        if backbone.feature_dim != model.feature_dim:
            raise ModelError(f"{model.source}: backbone {backbone.name} gives {backbone.feature_dim} features, "
                             f"the model expects {model.feature_dim}")
        feature_model, policy = load_model(model.backbone, model.weights, local_weights_path, inference or TENSORFLOW)
        return cls(model, feature_model, policy, batch_size, max_pixels)

    def predict(self, contents: Sequence[bytes | None], k: int = DEFAULT_TOP,
                threshold: float | None = None) -> list[Prediction]:
        """One Prediction per photo's bytes (None: unreadable), in order; decoded and run in batches.

        A photo whose top probability is under ``threshold`` (default: the model's) is ``uncertain``.
        """
        from image_jobs.featurize import featurize_contents

        threshold = self.model.threshold if threshold is None else threshold

        features, widths, heights, reasons = featurize_contents(
            list(contents), self.feature_model, self.policy, self.batch_size, self.max_pixels)
        good = [i for i, f in enumerate(features) if f is not None]
        tops: dict[int, list[tuple[str, float]]] = {}
        if good:
            proba = self.model.probabilities(np.stack([features[i] for i in good]))
            for i, top in zip(good, self.model.top(proba, k), strict=True):
                if all(math.isfinite(p) for _, p in top):
                    tops[i] = top
                else:
                    reasons[i] = "model produced non-finite probabilities"
        return [Prediction(tops.get(i), None if i in tops else (reasons[i] or "not scored"), widths[i], heights[i],
                           tops[i][0][1] < threshold if i in tops else None)
                for i in range(len(features))]
