"""What the Spark steps run: the jobs' library zip and entry scripts, named by their content hash."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from image_pipeline.packaging import SPARK_JOBS_DIR, build_jobs_zip
from image_pipeline.steps import STEP_NAMES

ENTRY_SCRIPTS = tuple(f"{name}.py" for name in STEP_NAMES)


def entry_script_paths(spark_jobs_dir: Path = SPARK_JOBS_DIR) -> list[Path]:
    """The entry scripts of the three steps."""
    return [spark_jobs_dir / name for name in ENTRY_SCRIPTS]


def build_local_artifacts(work_dir: Path) -> tuple[str, list[Path]]:
    """Build the zip in ``work_dir``; return the content hash of zip + entry scripts and their files."""
    files = [build_jobs_zip(work_dir), *entry_script_paths()]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16], files


def stage_local(artifacts_uri: str) -> dict[str, str]:
    """Copy the code to ``<artifacts>/<hash>/`` on the local file system (skipped when already there).

    Returns the zip's path and the folder of the entry scripts.
    """
    root = Path(artifacts_uri.removeprefix("file://"))
    with tempfile.TemporaryDirectory() as tmp:
        content_hash, files = build_local_artifacts(Path(tmp))
        target = root / content_hash
        if not (target / "image_jobs.zip").exists():
            staging = root / f".{content_hash}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for path in files:
                shutil.copy2(path, staging / path.name)
            staging.rename(target) if not target.exists() else shutil.rmtree(staging)
    return {"content_hash": content_hash, "jobs_zip": str(target / "image_jobs.zip"), "entry_dir": str(target)}
