import numpy as np
import pytest

from image_jobs.backbones import BACKBONES, WeightsUnavailableError, build_feature_model, get_backbone


def test_registry_has_the_study_backbone_and_the_default():
    assert BACKBONES["mobilenet_v2"].feature_dim == 1280
    assert BACKBONES["vgg16"].feature_dim == 4096
    assert BACKBONES["efficientnet_lite2"].feature_dim == 1280
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'.*mobilenet_v2.*vgg16"):
        get_backbone("resnet9")


def test_missing_imagenet_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as err:
        build_feature_model(get_backbone("vgg16"), "imagenet")
    message = str(err.value)
    assert "--weights-uri" in message and "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in message
    with pytest.raises(WeightsUnavailableError, match="make weights"):
        build_feature_model(get_backbone("mobilenet_v2"), "imagenet")
    with pytest.raises(WeightsUnavailableError, match="make weights.*data/weights/efficientnet_lite2_imagenet.keras"):
        build_feature_model(get_backbone("efficientnet_lite2"), "imagenet")


def test_missing_weights_file_is_an_error_not_random_weights(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not readable"):
        build_feature_model(get_backbone("mobilenet_v2"), str(tmp_path / "absent.keras"))


@pytest.mark.parametrize("name", ["mobilenet_v2", "vgg16", "efficientnet_lite2"])
def test_random_weights_only_when_asked_and_dimensions_match(name):
    model = build_feature_model(get_backbone(name), "random")
    size = BACKBONES[name].keras_resize.size
    x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    assert np.asarray(model.predict_on_batch(x)).shape == (1, BACKBONES[name].feature_dim)


def test_keras_h5_weights_load_into_the_application_architecture(tmp_path):
    import keras

    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=None)
    path = tmp_path / "mnv2.weights.h5"
    base.save_weights(path)
    model = build_feature_model(get_backbone("mobilenet_v2"), str(path))
    x = np.random.default_rng(1).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    expected = base.predict_on_batch(x / 127.5 - 1.0)
    np.testing.assert_allclose(model.predict_on_batch(x), expected, rtol=1e-4, atol=1e-5)


def test_forward_pass_matches_keras_and_is_traced_once_for_every_batch_size():
    from image_jobs.featurize import ForwardPass

    model = build_feature_model(get_backbone("mobilenet_v2"), "random")
    forward = ForwardPass(model)
    rng = np.random.default_rng(2)
    for size in (4, 3, 1):  # a task's full batches, then its partial last one
        x = rng.uniform(0, 255, (size, 224, 224, 3)).astype(np.float32)
        np.testing.assert_allclose(forward.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-4, atol=1e-5)
    assert forward._forward.experimental_get_tracing_count() == 1
