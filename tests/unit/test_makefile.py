"""The Makefile's own help, and what ``make test`` runs with and without a subset (``make -n``: nothing runs)."""

from __future__ import annotations

import os
import re
import subprocess

from project_paths import PROJECT_ROOT


def make(*args: str) -> str:
    # a make of its own: not the variables of a make this suite may run under (MAKEFLAGS passes them down)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS")}
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_help_lists_every_target_with_what_it_does():
    targets = re.findall(r"^([a-z0-9][a-z0-9-]*):(?!=)", (PROJECT_ROOT / "Makefile").read_text(), re.M)
    described = dict(re.findall(r"^  (\S+) +(\S.*)$", make("-s", "help"), re.M))
    assert len(targets) > 20 and sorted(described) == sorted(targets)
    assert described["test"].startswith("The whole suite (what CI runs)")
    assert described["run"].startswith("The main job")


def test_a_subset_runs_only_that_subset():
    whole, subset = make("-n", "test"), make("-n", "test", "PYTEST_ARGS=tests/unit -k latest")
    assert "pytest tests/spark" in whole  # the Spark 3.5 pass
    assert whole.index("image_tools.locks --check") < whole.index("pytest")  # stale locks fail CI first
    assert "pytest tests/unit -k latest" in subset and "pytest tests/spark" not in subset
    quick = make("-n", "test-quick")
    assert "pytest tests/unit" in quick and "wheelhouse" not in quick and "apt-get" not in quick


def test_each_environment_installs_its_locks_and_is_rebuilt_when_one_changes():
    """make's own database: each virtual environment's stamp depends on every file its recipe installs."""
    from image_tools.locks import LOCKS

    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    database = subprocess.run(["make", "-pq", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=120, env=env).stdout
    needs = {stamp: set(files.split()) for stamp, files in
             re.findall(r"^(\.venv[\w-]*/\.installed): (.*)$", database, re.M)}
    assert sorted(needs) == [".venv-mwaa/.installed", ".venv-spark35/.installed", ".venv/.installed"]
    locks = {lock.path for lock in LOCKS}
    for stamp, prerequisites in needs.items():
        installed = set(re.findall(r" -r ([\w./-]+\.txt)", make("-n", "-B", stamp)))
        assert installed and installed <= prerequisites, (stamp, installed, prerequisites)
        assert installed - {"requirements/nodeps.txt"} <= locks, stamp  # generated, checked locks only
    assert "requirements/local.txt" in needs[".venv/.installed"]
