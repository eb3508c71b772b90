"""Each environment's lock, generated from ``pyproject.toml``'s extras by uv, and the check that they are current.

``pyproject.toml`` declares every dependency once, in extras by role. A lock is the whole set of versions one
environment installs: ``uv pip compile`` resolves that environment's extras for its Python version and
platform (not this machine's), so every machine generates the same file. The resolver is the ``uv`` pinned
in the ``dev`` extra, installed in ``.venv`` by ``make setup``.

A lock's pins are kept wherever they still satisfy ``pyproject.toml`` (uv reads the existing file as its
preferences, as pip-compile does): a lock changes when ``pyproject.toml`` asks for it or when an upgrade is
asked for, not because PyPI published something. Two locks are bound to others by constraints: the Docker
image's to ``.venv``'s (the image runs the versions the tests ran) and the Spark 3.5 test environment's to
the EMR nodes' (the tests run the nodes' versions). MWAA's locks are resolved under MWAA's own constraints
(``mwaa/``), which stay what MWAA enforces; ``requirements/nodeps.txt`` (data-only wheels by hash) is kept
by hand.

Commands, from the project root:
    PYTHONPATH=tools .venv/bin/python -m image_tools.locks            write every lock (make locks)
    PYTHONPATH=tools .venv/bin/python -m image_tools.locks --check    exit 1 naming each stale lock (make check-locks)
    PYTHONPATH=tools .venv/bin/python -m image_tools.locks -- --upgrade-package certifi   (uv's own arguments)
The check resolves offline from uv's cache first (about a second for all locks) and asks PyPI only when the
cache cannot answer or its answer differs.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WRITE_COMMAND = "make locks"
# Debian 12 (this machine and the Docker image's base) has glibc 2.36; Amazon Linux 2023 (the EMR 7.x
# nodes, MWAA's image) 2.34
LOCAL_PLATFORM = "x86_64-manylinux_2_36"
AWS_PLATFORM = "x86_64-manylinux_2_34"
# the Python the local set was resolved and tested on (soupsieve 4.1 needs 3.11.5 or newer); the nodes'
# set stays resolvable for any 3.11
LOCAL_PYTHON = "3.11.7"
MWAA_CONSTRAINTS = ("mwaa/airflow-3.3.1-constraints.txt", "mwaa/mwaa-3.3.1-essential-constraints.txt")


@dataclass(frozen=True)
class Lock:
    """One environment's lock: where it is, what it is for, and what uv resolves it from."""

    path: str
    purpose: str
    extras: tuple[str, ...]
    python: str
    platform: str
    constraints: tuple[str, ...] = ()
    # only the extras' own requirements (their extras kept), no dependencies: for a file installed under
    # someone else's constraints (MWAA's), which are its lock
    direct_only: bool = False


LOCKS = (
    Lock("requirements/local.txt", ".venv (make setup): the Airflow side, the Spark 4.3 jobs, the tests and tools",
         ("airflow", "jobs", "dev"), LOCAL_PYTHON, LOCAL_PLATFORM),
    Lock("requirements/docker.txt", "The Docker image: the Airflow side and the Spark 4.3 jobs at .venv's "
         "versions, no test tools", ("airflow", "jobs"), LOCAL_PYTHON, LOCAL_PLATFORM, ("requirements/local.txt",)),
    Lock("bootstrap/requirements-emr.txt", "The EMR 7.x nodes' Python packages (Spark 3.5.6 is EMR's own); "
         "their wheelhouse holds exactly these", ("emr",), "3.11", AWS_PLATFORM),
    Lock("requirements/spark35.txt", ".venv-spark35: the EMR nodes' packages with EMR's Spark and the tests",
         ("emr", "spark35", "test"), "3.11", LOCAL_PLATFORM, ("bootstrap/requirements-emr.txt",)),
    Lock("requirements/mwaa-image.txt", "What Amazon MWAA's image holds before the project's requirements "
         "(installed first in .venv-mwaa)", ("mwaa-image",), "3.12", AWS_PLATFORM, MWAA_CONSTRAINTS, True),
    Lock("requirements/mwaa.txt", "Amazon MWAA's requirements.txt (make mwaa-bundle): MWAA installs it under "
         "its constraints, which are its lock", ("mwaa",), "3.12", AWS_PLATFORM, MWAA_CONSTRAINTS, True),
    Lock("requirements/mwaa-test.txt", ".venv-mwaa: MWAA's image, the project's MWAA requirements and the tests, "
         "under MWAA's constraints", ("mwaa-image", "mwaa", "test", "test-aws"), "3.12", LOCAL_PLATFORM,
         MWAA_CONSTRAINTS),
)


class LockError(RuntimeError):
    """uv could not resolve a lock (its message says why), or is missing or not the pinned one."""


def uv_executable() -> Path:
    """The uv installed beside this Python (``.venv/bin/uv``, from the ``dev`` extra)."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.is_file():
        raise LockError(f"no uv beside {sys.executable}: `make setup` installs the pinned one into .venv")
    return uv


def pinned_uv_version(root: Path = PROJECT_ROOT) -> str | None:
    """The uv version the ``dev`` extra of ``pyproject.toml`` pins (None when it pins none)."""
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    pins = [r.split("==", 1)[1] for r in extras.get("dev", []) if r.replace(" ", "").startswith("uv==")]
    return pins[0] if pins else None


def uv_version(uv: Path) -> str:
    """``uv --version``'s version number."""
    return subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True).stdout.split()[1]


def compile_command(uv: Path, lock: Lock, output: Path, *, offline: bool, uv_args: list[str]) -> list[str]:
    """``uv pip compile`` of the lock's extras into ``output`` (read first as the pins to keep).

    The lock's Python version and platform are resolved for, not looked for: this Python only builds what has
    no wheel, and uv never downloads an interpreter (it would try for a version this machine lacks)."""
    command = [str(uv), "pip", "compile", "pyproject.toml", "--quiet", "--no-config", "--output-file", str(output),
               "--python-version", lock.python, "--python-platform", lock.platform,
               "--python", sys.executable, "--no-python-downloads",
               "--annotation-style", "line", "--custom-compile-command", WRITE_COMMAND]
    command += [arg for extra in lock.extras for arg in ("--extra", extra)]
    command += [arg for path in lock.constraints for arg in ("--constraint", path)]
    if lock.direct_only:
        command += ["--no-deps", "--no-strip-extras"]
    if offline:
        command.append("--offline")
    return command + uv_args


def generate(lock: Lock, uv: Path, root: Path, *, offline: bool = False, uv_args: list[str] | None = None) -> str:
    """The text uv generates for the lock now, keeping the pins of the lock file as it is."""
    with tempfile.TemporaryDirectory(prefix="lock-") as tmp:
        output = Path(tmp) / Path(lock.path).name
        if (root / lock.path).is_file():
            shutil.copyfile(root / lock.path, output)
        done = subprocess.run(compile_command(uv, lock, output, offline=offline, uv_args=uv_args or []),
                              cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise LockError(f"uv could not resolve {lock.path}: {done.stderr.strip()}")
        return f"# {lock.purpose}\n" + output.read_text()


def stale_diff(lock: Lock, uv: Path, root: Path, uv_args: list[str]) -> str:
    """The differences between the lock file and what uv generates (empty: current). Offline from uv's cache
    first; PyPI is asked only when the cache cannot resolve the lock or its answer differs."""
    current = (root / lock.path).read_text() if (root / lock.path).is_file() else ""
    try:
        if generate(lock, uv, root, offline=True, uv_args=uv_args) == current:
            return ""
    except LockError:
        pass
    expected = generate(lock, uv, root, uv_args=uv_args)
    return "".join(difflib.unified_diff(current.splitlines(keepends=True), expected.splitlines(keepends=True),
                                        f"{lock.path} (committed)", f"{lock.path} (generated)", n=0))


def check(locks: tuple[Lock, ...], uv: Path, root: Path, uv_args: list[str]) -> list[str]:
    """The paths of the locks that are not what uv generates from ``pyproject.toml``; prints their diffs."""
    stale = []
    for lock in locks:
        diff = stale_diff(lock, uv, root, uv_args)
        if diff:
            stale.append(lock.path)
            print(diff[:4000], end="" if diff.endswith("\n") else "\n")
    return stale


def write(locks: tuple[Lock, ...], uv: Path, root: Path, uv_args: list[str]) -> None:
    """Write every lock, in order (a lock constrained by another is written after it)."""
    for lock in locks:
        (root / lock.path).parent.mkdir(parents=True, exist_ok=True)
        (root / lock.path).write_text(generate(lock, uv, root, uv_args=uv_args))
        print(f"wrote {lock.path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a lock is stale")
    parser.add_argument("uv_args", nargs="*", help="after --: more arguments for uv pip compile")
    args = parser.parse_args(argv)
    try:
        uv = uv_executable()
        found, pinned = uv_version(uv), pinned_uv_version()
        if found != pinned:
            message = f"uv {found} in .venv, pyproject.toml pins uv=={pinned}"
            if args.check:
                raise LockError(f"{message}: run `make setup` (after `{WRITE_COMMAND}`)")
            print(f"note: {message}: writing the locks with {found}", file=sys.stderr)
        if not args.check:
            write(LOCKS, uv, PROJECT_ROOT, args.uv_args)
            return 0
        stale = check(LOCKS, uv, PROJECT_ROOT, args.uv_args)
    except LockError as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 2
    if stale:
        print(f"stale: {', '.join(stale)}: not what pyproject.toml gives; run `{WRITE_COMMAND}`", file=sys.stderr)
        return 1
    print(f"locks current: {', '.join(lock.path for lock in LOCKS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
