"""Where the files the Airflow side sends to the cluster are: the Spark jobs' sources and the EMR bootstrap.

In a checkout (locally, in Docker) they are the project's ``spark_jobs/`` and ``bootstrap/``: this package's
folder holds only this file. In the MWAA bundle (``make mwaa-bundle``) they travel inside this package, as
``image_pipeline/shipped/spark_jobs/`` and ``image_pipeline/shipped/bootstrap/`` in ``plugins.zip``, and are
found there first: staging finds them wherever the package is installed, with no other folder next to it.

``import_job_library()`` makes the jobs' library ``image_jobs`` importable from ``SPARK_JOBS_DIR`` for the
Airflow-side code that runs it on this machine (the prediction command), without editing ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from image_pipeline.wiring.settings import PROJECT_ROOT

SHIPPED_DIR = Path(__file__).resolve().parent
JOB_LIBRARY = "image_jobs"


def _found(name: str) -> Path:
    bundled = SHIPPED_DIR / name
    return bundled if bundled.is_dir() else PROJECT_ROOT / name


SPARK_JOBS_DIR = _found("spark_jobs")
BOOTSTRAP_DIR = _found("bootstrap")


def import_job_library() -> ModuleType:
    """The ``image_jobs`` package: the one imported already or importable from ``sys.path`` (tests put
    ``spark_jobs/`` there), else registered from ``SPARK_JOBS_DIR`` by its location, so that
    ``import image_jobs.<module>`` works afterwards. ``sys.path`` is never changed."""
    if JOB_LIBRARY in sys.modules:
        return sys.modules[JOB_LIBRARY]
    if importlib.util.find_spec(JOB_LIBRARY) is not None:
        return importlib.import_module(JOB_LIBRARY)
    package = SPARK_JOBS_DIR / JOB_LIBRARY
    init = package / "__init__.py"
    spec = importlib.util.spec_from_file_location(JOB_LIBRARY, init, submodule_search_locations=[str(package)])
    if spec is None or spec.loader is None or not init.is_file():
        raise ImportError(f"the Spark jobs' library is missing: {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[JOB_LIBRARY] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[JOB_LIBRARY]
        raise
    return module
