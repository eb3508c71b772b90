"""The EMR nodes' wheelhouse: every wheel ``bootstrap/requirements-emr.txt`` needs, for the nodes' platform.

Nodes in a private subnet without NAT cannot reach PyPI, so the bootstrap action installs from a
wheelhouse staged next to the code (``<artifacts>/wheelhouse-<hash>/``) with ``pip install --no-index``.
A wheelhouse is named by the hash of the requirements file's content and built once into
``IMAGE_PIPELINE_WHEELHOUSE_DIR`` (default ``<project>/.wheelhouse``) as ``<hash>/``: the pinned
packages and all their dependencies as wheels for CPython 3.11 on manylinux x86_64, then
``manifest.json``, written last, so a folder without a manifest is an unfinished build, never staged.

Command (builds it when missing, logs pip's progress, prints the folder):
``PYTHONPATH=plugins python -m image_pipeline.compute.emr.wheelhouse`` (``make wheelhouse``).
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from image_pipeline.shipped import BOOTSTRAP_DIR
from image_pipeline.wiring.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

REQUIREMENTS = BOOTSTRAP_DIR / "requirements-emr.txt"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "image-pipeline-wheelhouse/1"
NODE_PYTHON_VERSION, NODE_IMPLEMENTATION, NODE_ABI = "3.11", "cp", "cp311"
# EMR 7.x nodes run Amazon Linux 2023, whose glibc is 2.34
# (https://docs.aws.amazon.com/linux/al2023/ug/core-glibc.html): wheels built for any glibc up to it run there.
NODE_GLIBC_MINOR = 34
BUILD_COMMAND = "make wheelhouse"
MODULE_COMMAND = "PYTHONPATH=plugins python -m image_pipeline.compute.emr.wheelhouse"


class WheelhouseError(RuntimeError):
    """The wheelhouse of the nodes' requirements is missing and could not be built."""


def node_platforms() -> list[str]:
    """The manylinux platform tags the nodes accept (glibc 2.5 to 2.34, with the legacy aliases), newest first."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(NODE_GLIBC_MINOR, 4, -1)]
    return [*tags, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def wheelhouse_root(environ: dict[str, str] | None = None) -> Path:
    """Where wheelhouses are built and found: ``IMAGE_PIPELINE_WHEELHOUSE_DIR`` or ``<project>/.wheelhouse``."""
    env = os.environ if environ is None else environ
    return Path(env.get("IMAGE_PIPELINE_WHEELHOUSE_DIR") or PROJECT_ROOT / ".wheelhouse")


def requirements_hash(requirements: Path = REQUIREMENTS) -> str:
    """The wheelhouse's name: a short SHA-256 of the requirements file's content."""
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]


def complete_wheelhouse(requirements: Path = REQUIREMENTS, root: Path | None = None) -> Path | None:
    """The folder of the requirements' wheelhouse when its build finished (its manifest is there), else None."""
    folder = (root or wheelhouse_root()) / requirements_hash(requirements)
    return folder if (folder / MANIFEST).is_file() else None


def read_manifest(folder: Path) -> dict:
    """A finished wheelhouse's manifest: requirements hash and text, platform, each wheel's size and SHA-256."""
    return json.loads((folder / MANIFEST).read_text())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, requirements: Path = REQUIREMENTS) -> dict:
    """Describe every wheel in ``folder`` in ``manifest.json``, atomically; this marks the build finished."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise WheelhouseError(f"no wheels in {folder}: nothing to describe in a manifest")
    manifest = {
        "format": MANIFEST_FORMAT, "requirements_hash": requirements_hash(requirements),
        "requirements": requirements.read_text(), "python_version": NODE_PYTHON_VERSION, "abi": NODE_ABI,
        "platforms": node_platforms(),
        "wheels": [{"file": w.name, "size": w.stat().st_size, "sha256": _sha256(w)} for w in wheels],
    }
    partial = folder / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=1) + "\n")
    partial.replace(folder / MANIFEST)
    return manifest


def download_command(requirements: Path, folder: Path) -> list[str]:
    """``pip download`` of the requirements and their dependencies as wheels for the nodes only."""
    platforms = [arg for tag in node_platforms() for arg in ("--platform", tag)]
    return [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
            "--only-binary=:all:", *platforms, "--python-version", NODE_PYTHON_VERSION,
            "--implementation", NODE_IMPLEMENTATION, "--abi", NODE_ABI,
            "-r", str(requirements), "--dest", str(folder)]


def _drop_broken_wheels(folder: Path) -> None:
    """Remove wheels an interrupted build left truncated, so pip downloads them again."""
    for wheel in folder.glob("*.whl"):
        try:
            zipfile.ZipFile(wheel).close()
        except zipfile.BadZipFile:
            log.warning("removing the unreadable %s (an interrupted download)", wheel.name)
            wheel.unlink()


def _run_pip(command: list[str]) -> None:
    """Run pip, logging each line of its output; a failure raises with pip's last lines."""
    tail: collections.deque[str] = collections.deque(maxlen=15)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pip:
        for line in pip.stdout:
            if line.strip():
                tail.append(line.rstrip())
                log.info("pip: %s", line.rstrip())
    if pip.returncode != 0:
        raise WheelhouseError(f"pip download exited with {pip.returncode}: " + " | ".join(tail))


def build_wheelhouse(requirements: Path = REQUIREMENTS, root: Path | None = None) -> Path:
    """Build the requirements' wheelhouse under ``<root>/<hash>/`` unless finished already; return its folder.

    One build per wheelhouse at a time (a lock file); wheels a failed build downloaded are kept and
    reused by the next attempt, which writes the manifest only once pip succeeded.
    """
    root = root or wheelhouse_root()
    folder = root / requirements_hash(requirements)
    folder.mkdir(parents=True, exist_ok=True)
    with (root / f".{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / MANIFEST).is_file():
            log.info("wheelhouse %s is already built", folder)
            return folder
        log.info("building the wheelhouse of %s (requirements hash %s) into %s", requirements, folder.name, folder)
        started = time.monotonic()
        _drop_broken_wheels(folder)
        _run_pip(download_command(requirements, folder))
        manifest = write_manifest(folder, requirements)
    size_mb = sum(w["size"] for w in manifest["wheels"]) / 1e6
    log.info("wheelhouse %s built: %d wheels, %.0f MB, in %.0f s", folder, len(manifest["wheels"]), size_mb,
             time.monotonic() - started)
    return folder


def ensure_wheelhouse(requirements: Path = REQUIREMENTS, root: Path | None = None) -> Path:
    """The finished wheelhouse of the requirements, built now when missing (this machine may reach PyPI).

    Raises ``WheelhouseError`` naming the command that builds it and the requirements hash when it
    is missing and cannot be built here.
    """
    root = root or wheelhouse_root()
    found = complete_wheelhouse(requirements, root)
    if found:
        return found
    name = requirements_hash(requirements)
    log.info("no finished wheelhouse %s in %s: building it", name, root)
    try:
        return build_wheelhouse(requirements, root)
    except (OSError, WheelhouseError) as failure:
        raise WheelhouseError(
            f"the EMR nodes' wheelhouse for {requirements.name} (requirements hash {name}) is not in {root} "
            f"and could not be built here ({failure}). Build it where PyPI is reachable with "
            f"`{BUILD_COMMAND}` (or `{MODULE_COMMAND}`), then give the Airflow workers {root / name}/ "
            "(IMAGE_PIPELINE_WHEELHOUSE_DIR names the folder holding it)") from failure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    parser.add_argument("--dir", type=Path, default=None, help="default: IMAGE_PIPELINE_WHEELHOUSE_DIR or "
                                                                 "<project>/.wheelhouse")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(build_wheelhouse(args.requirements, args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
