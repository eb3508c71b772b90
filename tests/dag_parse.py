"""A DAG file parsed in a fresh interpreter (tests/dag/parse_probe.py) with its connection, variable and
metadata database lookups made to fail, and the modules that parsing must never import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from project_paths import PROJECT_ROOT

DAG_FILE = PROJECT_ROOT / "dags" / "image_classification.py"
HEAVY = ["tensorflow", "keras", "pyspark", "sklearn", "pandas", "matplotlib", "numpy"]


def parse_in_subprocess(compute: str, dag_file=DAG_FILE, **extra_env: str) -> dict:
    """What parse_probe.py found parsing ``dag_file`` on the ``compute`` backend, with ``extra_env`` set."""
    probe = PROJECT_ROOT / "tests" / "dag" / "parse_probe.py"
    env = {**os.environ, "IMAGE_PIPELINE_COMPUTE": compute,
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////nonexistent/folder/airflow.db", **extra_env}
    out = subprocess.run([sys.executable, str(probe), str(dag_file), str(PROJECT_ROOT / "plugins")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
