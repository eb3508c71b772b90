"""What made a feature row: the backbone, the weights' content digest and the numeric precision class.

Every feature and reject row carries it (``featurize.IDENTITY_COLUMNS``; the backbone is the stores'
``backbone=`` partition). The incremental selection skips only photos done with the same identity, the
training job reads only its extraction's identity, and a model records the identity of its training
features, so scoring with other weights or another precision is refused (``check_scoring``).

- ``weights_digest``: ``sha256:<hex>`` of the weights file (Keras' cached file for ``imagenet``), or
  ``random`` for random weights (timing runs: their features are never reused by a real run).
- ``precision_class``: ``fp32`` for TensorFlow and for OpenVINO at fp32 (their features agree within the
  runtime-equivalence test's tolerance, ``tests/model/test_inference.py``), ``bf16`` for OpenVINO at
  bf16. ``auto`` is resolved once per job on the driver, and the workers run what it resolved to.

Rows written before features had an identity have none (null columns): they never match an identity, so
the next run extracts those photos again, once, and no model trains on them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from image_jobs.conventions import RANDOM_WEIGHTS

RANDOM_DIGEST = RANDOM_WEIGHTS  # the weights digest of random weights (no file)
PRECISION_CLASSES = ("fp32", "bf16")
_DIGESTS: dict[tuple[str, int, int], str] = {}


class FeatureIdentityError(ValueError):
    """Features, a model or a scoring run of different identities were put together; the message says which."""


@dataclass(frozen=True)
class FeatureIdentity:
    """The identity of a run's features (see the module's docstring)."""

    backbone: str
    weights_digest: str
    precision_class: str

    def columns(self) -> dict[str, str]:
        """The feature and reject rows' identity columns -> this identity's values."""
        return {"weights_digest": self.weights_digest, "precision_class": self.precision_class}

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def describe(self) -> str:
        """One phrase for messages: ``mobilenet_v2, weights sha256:0123abcd…, fp32``."""
        digest = self.weights_digest if self.weights_digest == RANDOM_DIGEST else self.weights_digest[:15] + "…"
        return f"{self.backbone}, weights {digest}, {self.precision_class}"

    @classmethod
    def from_dict(cls, value: object, source: str) -> FeatureIdentity:
        """Validate a recorded identity (a summary's or a model's); FeatureIdentityError names ``source``."""
        fields = ("backbone", "weights_digest", "precision_class")
        if not isinstance(value, dict) or not all(isinstance(value.get(f), str) and value.get(f) for f in fields):
            raise FeatureIdentityError(f"{source}: 'feature_identity' must hold {', '.join(fields)}, got {value!r}")
        if value["precision_class"] not in PRECISION_CLASSES:
            raise FeatureIdentityError(f"{source}: precision class {value['precision_class']!r} is not one of "
                                       f"{', '.join(PRECISION_CLASSES)}")
        return cls(value["backbone"], value["weights_digest"], value["precision_class"])


def weights_digest(weights_file: str | Path) -> str:
    """``sha256:<hex>`` of a weights file's content, computed once per process for a (path, size, time)."""
    stat = os.stat(weights_file)
    key = (str(Path(weights_file).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        from image_jobs.ir_digests import file_sha256

        _DIGESTS[key] = f"sha256:{file_sha256(weights_file)}"
    return _DIGESTS[key]


def precision_class(runtime: str, precision: str) -> str:
    """The precision class of a forward pass: ``precision`` resolved (never ``auto``) on ``runtime``."""
    if precision not in PRECISION_CLASSES:
        raise ValueError(f"precision {precision!r} is not resolved to one of {', '.join(PRECISION_CLASSES)}")
    return "fp32" if runtime == "tensorflow" else precision


def check_scoring(model_identity: FeatureIdentity | None, scoring: FeatureIdentity, source: str) -> str | None:
    """Refuse to score with features of another identity than the model's training features.

    Returns a note for the log when the model records no identity (trained before identities existed:
    it is scored as before, unchecked); raises FeatureIdentityError naming both identities and the fix.
    """
    if model_identity is None:
        return (f"{source} records no feature identity (trained before identities existed): scoring with "
                f"{scoring.describe()} unchecked")
    if model_identity == scoring:
        return None
    if model_identity.weights_digest != scoring.weights_digest or model_identity.backbone != scoring.backbone:
        fix = "score with the weights the model was trained with (the file at its weights_uri changed?)"
    else:
        fix = f"score with precision {model_identity.precision_class}"
    raise FeatureIdentityError(
        f"{source} was trained on features of {model_identity.describe()}; this scoring would make features of "
        f"{scoring.describe()}, which the model cannot read: {fix}")


def job_identity(backbone: str, weights: str, runtime: str, precision: str) -> FeatureIdentity:
    """The identity of the features a job makes, on its driver, once the weights are shipped
    (``SparkContext.addFile``): ``precision`` resolved already (``inference.resolve_precision``)."""
    if weights == RANDOM_WEIGHTS:
        return identity_of(backbone, None, runtime, precision)
    from image_jobs.openvino_runtime import driver_weights_file

    return identity_of(backbone, driver_weights_file(backbone, weights), runtime, precision)


def identity_of(backbone: str, weights_file: str | Path | None, runtime: str, precision: str) -> FeatureIdentity:
    """The identity of features made by ``backbone`` with the weights in ``weights_file`` (None: random
    weights) on ``runtime`` at the resolved ``precision``."""
    digest = RANDOM_DIGEST if weights_file is None else weights_digest(weights_file)
    return FeatureIdentity(backbone, digest, precision_class(runtime, precision))
