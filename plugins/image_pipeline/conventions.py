"""The constants the Airflow side shares with the Spark jobs, from the jobs' own module.

``image_jobs/conventions.py`` (under ``image_pipeline.shipped.SPARK_JOBS_DIR``: the project's ``spark_jobs/``
in a checkout, the copy inside this package in the MWAA bundle) is the one home of the backbones, the named
weights, pair modes, split ratios, image extensions, the hidden-file rule, the photo key, metrics columns, the
model format and the minimum-images rule. This module always loads
that file by its path, under its own name ``image_pipeline._job_conventions``: it never imports the
``image_jobs`` package and never edits ``sys.path``, so Airflow's DAG processor (only ``dags/`` and
``plugins/`` on its path) parses the DAGs without ``image_jobs`` in ``sys.modules`` and without anything
heavy (the file imports only the standard library). Where ``image_jobs`` is imported too (tests, the
prediction command), its ``image_jobs.conventions`` is a second module from the same file, with the same
values.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from image_pipeline.shipped import SPARK_JOBS_DIR

CONVENTIONS_FILE = SPARK_JOBS_DIR / "image_jobs" / "conventions.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_pipeline._job_conventions", CONVENTIONS_FILE)
    if spec is None or spec.loader is None or not CONVENTIONS_FILE.exists():
        raise ImportError(f"the Spark jobs' conventions module is missing: {CONVENTIONS_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_conventions = _load()
BACKBONE_NAMES: tuple[str, ...] = _conventions.BACKBONE_NAMES
BACKBONE_NOTES: dict[str, str] = _conventions.BACKBONE_NOTES
IMAGENET_WEIGHTS: str = _conventions.IMAGENET_WEIGHTS
RANDOM_WEIGHTS: str = _conventions.RANDOM_WEIGHTS
runtime_lacks_weights = _conventions.runtime_lacks_weights
is_weights_file = _conventions.is_weights_file
PAIR_MODES: tuple[str, ...] = _conventions.PAIR_MODES
RUNTIMES: tuple[str, ...] = _conventions.RUNTIMES
DEFAULT_RUNTIME: str = _conventions.DEFAULT_RUNTIME
default_runtime = _conventions.default_runtime
PRECISIONS: tuple[str, ...] = _conventions.PRECISIONS
DEFAULT_SPLIT_RATIOS: tuple[float, ...] = _conventions.DEFAULT_SPLIT_RATIOS
IMAGE_SUFFIXES: tuple[str, ...] = _conventions.IMAGE_SUFFIXES
STUDY_COLUMNS: tuple[str, ...] = _conventions.STUDY_COLUMNS
min_images_per_class = _conventions.min_images_per_class
ir_folder_glob = _conventions.ir_folder_glob
PREPARED_WEIGHTS: dict[str, str] = _conventions.PREPARED_WEIGHTS
hidden_to_spark = _conventions.hidden_to_spark
PHOTO_KEY_CSV: tuple[str, ...] = _conventions.PHOTO_KEY_CSV
photo_key = _conventions.photo_key
MAX_CLASSES: int = _conventions.MAX_CLASSES
DEFAULT_READ_CONCURRENCY: int = _conventions.DEFAULT_READ_CONCURRENCY
csv_cell_value = _conventions.csv_cell_value
model_sha256 = _conventions.model_sha256
model_changed = _conventions.model_changed
