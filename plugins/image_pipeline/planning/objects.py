"""Object-store paths on the Airflow side: one code path for file:// and s3:// (Airflow's ObjectStoragePath)."""

from __future__ import annotations

import os
from pathlib import Path


def to_uri(location: str) -> str:
    """A URI for ``location``: URIs are kept, plain local paths become absolute ``file://`` URIs."""
    if "://" in location:
        stripped = location.rstrip("/")
        return stripped if not stripped.endswith(":") else location
    return f"file://{Path(location).expanduser().resolve()}"


def object_path(uri: str, conn_id: str | None = None):
    """``ObjectStoragePath`` of a URI; s3:// goes through the Airflow connection ``conn_id``."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(uri, conn_id=conn_id) if uri.startswith("s3://") else ObjectStoragePath(uri)


def readable_path(uri: str, conn_id: str | None = None):
    """A path to read ``uri`` through (``exists``, ``read_text``, ``read_bytes``, ``stat``, ``open``): a
    ``pathlib.Path`` for file:// URIs and plain paths, which imports no Airflow (the prediction command
    answers in under two seconds that way), else ``object_path``."""
    if uri.startswith("file://") or "://" not in uri:
        return Path(uri.removeprefix("file://"))
    return object_path(uri, conn_id)


def write_text_atomically(uri: str, text: str, conn_id: str | None = None) -> None:
    """Write a small text file so that a reader sees the old file or the new one, never half of one.

    Locally: a temporary file in the same folder, then ``os.replace`` (atomic on POSIX). On S3 a
    single PUT is atomic already: the object is replaced whole when the upload completes.
    """
    if uri.startswith("file://"):
        target = Path(uri.removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        tmp.write_text(text)
        os.replace(tmp, target)
    else:
        object_path(uri, conn_id).write_text(text)
