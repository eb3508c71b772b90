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
    assert "pytest tests/unit -k latest" in subset and "pytest tests/spark" not in subset
    quick = make("-n", "test-quick")
    assert "pytest tests/unit" in quick and "wheelhouse" not in quick and "apt-get" not in quick
