"""Where the files the Airflow side sends to the cluster are: the Spark jobs' sources and the EMR bootstrap.

In a checkout (locally, in Docker) they are the project's ``spark_jobs/`` and ``bootstrap/``. In the MWAA
bundle (``make mwaa-bundle``) they travel inside this package, as ``image_pipeline/shipped/spark_jobs/`` and
``image_pipeline/shipped/bootstrap/`` in ``plugins.zip``, and are found there first: staging finds them
wherever the package is installed, with no other folder next to it.
"""

from __future__ import annotations

from pathlib import Path

from image_pipeline.wiring.settings import PROJECT_ROOT

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


def _found(name: str) -> Path:
    bundled = SHIPPED_DIR / name
    return bundled if bundled.is_dir() else PROJECT_ROOT / name


SPARK_JOBS_DIR = _found("spark_jobs")
BOOTSTRAP_DIR = _found("bootstrap")
