"""Benchmark: how long Amazon MWAA's install of ``requirements/mwaa.txt`` takes, against its 9-minute limit.

    make bench-mwaa-install
    (= <a Python 3.12> bench/mwaa_requirements_install.py --python <that Python 3.12>)

MWAA installs the environment's ``requirements.txt`` into its image when the environment starts (and at each
update), with its constraints, and stops that install when it takes more than 9 minutes
(``USER_REQUIREMENTS_MAX_INSTALL_TIME`` in ``images/airflow/3.3.1/python/mwaa/utils/user_requirements.py`` of
aws/amazon-mwaa-docker-images). Here:

1. a fresh Python 3.12 virtual environment in a temporary folder gets MWAA's image as the tests rebuild it
   (``requirements/mwaa-image.txt``: Airflow 3.3.1) under MWAA's constraints: not timed, MWAA's image has it;
2. then, timed, with an empty pip cache of its own (``PIP_CACHE_DIR`` in the temporary folder: every
   download is cold), what MWAA runs at the environment's start: ``pip install -r requirements/mwaa.txt
   -c mwaa/airflow-3.3.1-constraints.txt -c mwaa/mwaa-3.3.1-essential-constraints.txt``.

Prints the seconds of step 2, the packages it added (names and versions) and its share of the 540 s limit.
The downloads come from whatever index this machine's pip uses: a PyPI mirror nearby is faster than MWAA's
workers reaching PyPI (or a private index) through their VPC, so read the figure as a lower bound.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "requirements" / "mwaa-image.txt"
REQUIREMENTS = ROOT / "requirements" / "mwaa.txt"
CONSTRAINTS = (ROOT / "mwaa" / "airflow-3.3.1-constraints.txt", ROOT / "mwaa" / "mwaa-3.3.1-essential-constraints.txt")
LIMIT_SECONDS = 9 * 60  # MWAA's USER_REQUIREMENTS_MAX_INSTALL_TIME


def find_python312() -> str | None:
    """A Python 3.12 from PATH or pyenv (as the Makefile's PYTHON312)."""
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [shutil.which("python3.12"), *sorted(glob.glob(f"{pyenv}/versions/3.12*/bin/python3.12"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                               capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def installed(python: Path) -> dict[str, str]:
    """Normalized name -> version of every distribution in the environment of ``python``."""
    script = ("import importlib.metadata as md, json; print(json.dumps({d.metadata['Name'].lower().replace('_', '-'):"
              " d.version for d in md.distributions()}))")
    return json.loads(subprocess.run([python, "-c", script], check=True, capture_output=True, text=True).stdout)


def pip_install(python: Path, requirements: Path, cache_dir: Path) -> float:
    """``pip install -r requirements -c <MWAA's constraints>`` with its own pip cache; returns the seconds."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-r", str(requirements)]
    for constraints in CONSTRAINTS:
        command += ["-c", str(constraints)]
    env = {**os.environ, "PIP_CACHE_DIR": str(cache_dir)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pip install -r {requirements.name} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=None, help="a Python 3.12 (default: from PATH or pyenv)")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS,
                        help="the requirements file MWAA installs (default requirements/mwaa.txt)")
    args = parser.parse_args(argv)
    python312 = args.python or find_python312()
    if not python312:
        print("no Python 3.12 on this machine (PATH or pyenv): MWAA's image runs 3.12", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mwaa-install-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python312, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        image_seconds = pip_install(python, IMAGE, Path(tmp) / "image-cache")
        before = installed(python)
        seconds = pip_install(python, args.requirements, Path(tmp) / "cold-cache")
        after = installed(python)
    added = {name: after[name] for name in sorted(set(after) - set(before))}
    changed = {name: (before[name], after[name]) for name in sorted(set(before) & set(after))
               if before[name] != after[name]}
    print(f"MWAA's image (Python {version}, {IMAGE.relative_to(ROOT)}): {len(before)} packages, "
          f"installed in {image_seconds:.0f} s (not timed: MWAA's image has them)")
    print(f"pip install -r {args.requirements.name} under MWAA's constraints, cold pip cache: {seconds:.1f} s")
    print(f"packages added: {len(added)}: " + ", ".join(f"{n}=={v}" for n, v in added.items()))
    if changed:
        print("packages moved off MWAA's image's versions: "
              + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in changed.items()))
    print(f"share of MWAA's {LIMIT_SECONDS} s limit: {seconds / LIMIT_SECONDS:.1%} ({seconds:.1f} / {LIMIT_SECONDS} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
