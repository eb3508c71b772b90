"""Registry of pretrained CNN backbones used as feature extractors.

A backbone is built into a Keras model that takes a batch of RGB pixels in [0, 255]
(``size x size x 3``, float32) and returns one feature vector per image: the backbone's own
preprocessing is part of the model, so every caller feeds the same thing.

Weights come from, in this order of preference:
- a weights file (``.keras`` full model, or ``.h5``/``.weights.h5`` weights for the Keras
  application architecture), given by URI and shipped to the executors with ``SparkContext.addFile``;
- Keras' own cache (``~/.keras/models``), i.e. ``weights="imagenet"``;
- random initialisation, only when asked for explicitly (timing runs).
A backbone whose weights cannot be had raises ``WeightsUnavailableError`` saying how to provide them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from image_jobs.conventions import BACKBONE_NAMES, IMAGENET_WEIGHTS, RANDOM_WEIGHTS
from image_jobs.conventions import PREPARED_WEIGHTS as PREPARED_OFFLINE
from image_jobs.decode import ResizePolicy


class WeightsUnavailableError(RuntimeError):
    """The requested weights cannot be loaded; the message says how to provide them."""


@dataclass(frozen=True)
class Backbone:
    """A feature extractor: which Keras application, which layer, how inputs are prepared."""

    name: str
    feature_dim: int
    # resize used with Keras-format weights, and with a torchvision-converted .keras model
    keras_resize: ResizePolicy
    converted_resize: ResizePolicy
    build: Callable[[str | None], object]  # weights ("imagenet", None, or a .h5 path) -> Model
    imagenet_file: str  # file name of the ImageNet weights in Keras' cache

    def imagenet_cache_path(self) -> str:
        """Where Keras keeps this backbone's ImageNet weights (``KERAS_HOME``, default ~/.keras)."""
        home = os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))
        return os.path.join(home, "models", self.imagenet_file)

    def check_imagenet_cached(self) -> None:
        """Raise WeightsUnavailableError, saying how to provide them, if the cached weights are missing."""
        if not os.path.exists(self.imagenet_cache_path()):
            raise WeightsUnavailableError(
                f"ImageNet weights for backbone {self.name!r} are not in Keras' cache "
                f"({self.imagenet_cache_path()}) and this job does not download them. Provide them with "
                f"--weights-uri (a local path, file:// or s3:// URI of {self.imagenet_file}"
                + (" from the Keras applications release" if self.name not in PREPARED_OFFLINE else "")
                + "), or copy that file into the cache"
                + (f"; 'make weights' prepares real ImageNet weights offline for {self.name} "
                   f"(data/weights/{PREPARED_OFFLINE[self.name]})" if self.name in PREPARED_OFFLINE else "")
            )

    def resize_policy(self, weights_uri: str | None) -> ResizePolicy:
        """The resize that matches how the weights were trained."""
        if weights_uri and weights_uri.endswith(".keras"):
            return self.converted_resize
        return self.keras_resize


def _pixels_input(size: int):
    import keras

    return keras.Input((size, size, 3), name="rgb_0_255")


def _build_mobilenet_v2(weights: str | None):
    import keras

    inputs = _pixels_input(224)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_minus1_1")(inputs)
    base = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=None
    )
    if weights is not None:
        _load_application_weights(base, weights, "mobilenet_v2")
    return keras.Model(inputs, base(x), name="mobilenet_v2_features")


def _build_vgg16(weights: str | None):
    import keras

    inputs = _pixels_input(224)
    # Keras' "caffe" preprocessing: RGB -> BGR, minus the ImageNet channel means
    x = keras.layers.Lambda(lambda t: t[..., ::-1], name="rgb_to_bgr")(inputs)
    x = keras.layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0],
                                   name="caffe_mean")(x)
    base = keras.applications.VGG16(input_shape=(224, 224, 3), include_top=True, weights=None)
    if weights is not None:
        _load_application_weights(base, weights, "vgg16")
    fc2 = keras.Model(base.inputs, base.get_layer("fc2").output)
    return keras.Model(inputs, fc2(x), name="vgg16_fc2_features")


def _build_efficientnet_lite2(weights: str | None):
    """EfficientNet-Lite2's features (``avg_pool``, 1280-d) at 260x260: random (None), the converted ImageNet
    model in Keras' cache (``imagenet``), or Keras weights (``.h5``/``.weights.h5``) for its architecture."""
    import keras

    from image_jobs.efficientnet_lite_architecture import build_efficientnet_lite, get_variant

    if weights == IMAGENET_WEIGHTS:
        backbone = BACKBONES["efficientnet_lite2"]
        backbone.check_imagenet_cached()
        full = keras.models.load_model(backbone.imagenet_cache_path(), compile=False)
    else:
        full = build_efficientnet_lite(get_variant("efficientnet_lite2"))
        if weights is not None:
            full.load_weights(weights)
    return keras.Model(full.inputs, full.get_layer("avg_pool").output, name="efficientnet_lite2_features")


def _load_application_weights(model, weights: str, backbone_name: str) -> None:
    """Load weights from a local .h5 path, or from Keras' cache for ``imagenet``."""
    if weights == IMAGENET_WEIGHTS:
        backbone = BACKBONES[backbone_name]
        backbone.check_imagenet_cached()
        weights = backbone.imagenet_cache_path()
    model.load_weights(weights)


# Torchvision-style models converted to .keras (image_tools.weights) expect short side 256 + crop.
_TORCHVISION_RESIZE = ResizePolicy(224, 0.875)
_SQUASH_224 = ResizePolicy(224, 1.0)
# EfficientNet-Lite2's evaluation resize: short side 292, centre crop 260 (the TensorFlow original's)
_LITE2_RESIZE = ResizePolicy(260, 260 / 292)

BACKBONES: dict[str, Backbone] = {
    "efficientnet_lite2": Backbone(
        name="efficientnet_lite2", feature_dim=1280, keras_resize=_LITE2_RESIZE,
        converted_resize=_LITE2_RESIZE, build=_build_efficientnet_lite2,
        imagenet_file="efficientnet_lite2_imagenet.keras",
    ),
    "mobilenet_v2": Backbone(
        name="mobilenet_v2", feature_dim=1280, keras_resize=_SQUASH_224,
        converted_resize=_TORCHVISION_RESIZE, build=_build_mobilenet_v2,
        imagenet_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    "vgg16": Backbone(
        name="vgg16", feature_dim=4096, keras_resize=_SQUASH_224,
        converted_resize=_SQUASH_224, build=_build_vgg16,
        imagenet_file="vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    ),
}
if tuple(sorted(BACKBONES)) != BACKBONE_NAMES:  # the Airflow side offers conventions.BACKBONE_NAMES
    raise ImportError(f"the backbone registry {sorted(BACKBONES)} is not conventions.BACKBONE_NAMES {BACKBONE_NAMES}")

# Layers whose output is the feature vector in a converted full-model .keras file.
FEATURE_LAYER_CANDIDATES = ("avg_pool", "fc2", "global_average_pooling2d")


def get_backbone(name: str) -> Backbone:
    """Look up a backbone by name, with a clear error listing the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}") from None


def build_feature_model(backbone: Backbone, weights: str | None, local_weights_path: str | None = None):
    """Build the feature model of ``backbone``.

    ``weights`` is ``"imagenet"`` (Keras cache), ``"random"`` (explicit random initialisation) or a
    weights URI; for a URI, ``local_weights_path`` is where the file is on this machine.
    """
    import keras

    if weights == RANDOM_WEIGHTS:
        keras.utils.set_random_seed(0)  # random, but the same random on every worker
        return backbone.build(None)
    if weights == IMAGENET_WEIGHTS:
        return backbone.build(IMAGENET_WEIGHTS)
    path = local_weights_path or weights
    if not os.path.exists(path):
        raise WeightsUnavailableError(f"weights file {weights!r} is not readable here (looked at {path})")
    if path.endswith(".keras"):
        full = keras.models.load_model(path, compile=False)
        for layer_name in FEATURE_LAYER_CANDIDATES:
            try:
                out = full.get_layer(layer_name).output
            except ValueError:
                continue
            if out.shape[-1] != backbone.feature_dim:
                raise WeightsUnavailableError(
                    f"{weights}: layer {layer_name} gives {out.shape[-1]} features, "
                    f"backbone {backbone.name} expects {backbone.feature_dim}"
                )
            return keras.Model(full.inputs, out, name=f"{backbone.name}_features")
        raise WeightsUnavailableError(
            f"{weights}: no feature layer among {FEATURE_LAYER_CANDIDATES} in the saved model"
        )
    return backbone.build(path)
