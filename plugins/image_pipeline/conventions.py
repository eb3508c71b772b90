"""The constants the Airflow side shares with the Spark jobs, from the jobs' own module.

``spark_jobs/image_jobs/conventions.py`` is the one home of pair modes, split ratios, image
extensions, metrics columns, the model format and the minimum-images rule. Where the jobs' library
is importable (tests, the prediction command) it is imported; where only ``dags/`` and ``plugins/``
are on the path (Airflow's DAG processor) the same file is loaded by its path, under this module's
own name, so the package never edits ``sys.path`` and ``image_jobs`` is never half-imported.
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
