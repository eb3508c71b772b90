"""Where the code under test lives: the checkout, and the DAG files and plugins a test session runs (the
checkout's, or a deployment laid out elsewhere: the MWAA bundle unpacked like MWAA does, tests/mwaa/test_mwaa.py)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEPLOYED = os.environ.get("IMAGE_PIPELINE_TEST_DEPLOYMENT")
DAGS_DIR = Path(DEPLOYED) / "dags" if DEPLOYED else PROJECT_ROOT / "dags"
PLUGINS_DIR = Path(DEPLOYED) / "plugins" if DEPLOYED else PROJECT_ROOT / "plugins"
