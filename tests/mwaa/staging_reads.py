"""A pytest plugin for the runs tests/mwaa/test_mwaa.py starts in the MWAA-like environment: which Spark-job
and bootstrap files the session reads, and from where.

Loaded with ``-p staging_reads`` (its folder on PYTHONPATH) and ``IMAGE_PIPELINE_TEST_READS_LOG=<file>``: an
audit hook on ``open`` records every file opened under a folder named ``spark_jobs`` or ``bootstrap``
(whichever function of the package reads it: the jobs' zip, the entry scripts, the bootstrap, the
conventions), and at the session's end the file gets, as JSON, those paths and the folders
``image_pipeline.shipped`` found (``spark_jobs``, ``bootstrap``).
"""

from __future__ import annotations

import json
import os
import sys

_read: set[str] = set()


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    try:
        path = os.path.abspath(os.fsdecode(args[0]))
    except (TypeError, ValueError, OSError):
        return
    if f"{os.sep}spark_jobs{os.sep}" in path or f"{os.sep}bootstrap{os.sep}" in path:
        _read.add(path)


sys.addaudithook(_audit)


def pytest_sessionfinish(session) -> None:
    import image_pipeline.shipped as shipped

    with open(os.environ["IMAGE_PIPELINE_TEST_READS_LOG"], "w") as log:
        json.dump({"spark_jobs": str(shipped.SPARK_JOBS_DIR), "bootstrap": str(shipped.BOOTSTRAP_DIR),
                   "read": sorted(_read)}, log)
