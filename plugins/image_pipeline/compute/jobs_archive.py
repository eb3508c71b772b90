"""Package the Spark jobs' library for ``spark-submit --py-files``: a reproducible zip.

The zip's bytes depend only on the files' paths and contents (sorted entries, fixed timestamps),
so its content hash names it in the object store and an unchanged library is never uploaded twice.

Command: ``python -m image_pipeline.compute.jobs_archive --out dist`` prints the zip's path.
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from pathlib import Path

from image_pipeline.shipped import SPARK_JOBS_DIR
from image_pipeline.wiring.settings import PROJECT_ROOT

LIBRARY_PACKAGE = "image_jobs"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def library_files(spark_jobs_dir: Path = SPARK_JOBS_DIR) -> list[Path]:
    """The library's source files, sorted (no caches, no compiled files)."""
    root = spark_jobs_dir / LIBRARY_PACKAGE
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def build_jobs_zip(out_dir: Path, spark_jobs_dir: Path = SPARK_JOBS_DIR) -> Path:
    """Write ``<out_dir>/image_jobs.zip`` reproducibly and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{LIBRARY_PACKAGE}.zip"
    tmp = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in library_files(spark_jobs_dir):
            info = zipfile.ZipInfo(path.relative_to(spark_jobs_dir).as_posix(), date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    tmp.replace(target)
    return target


def content_hash(*paths: Path) -> str:
    """A short SHA-256 over the given files' bytes, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "dist")
    args = parser.parse_args(argv)
    print(build_jobs_zip(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
