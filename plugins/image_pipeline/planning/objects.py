"""Object-store paths on the Airflow side: one code path for file:// and s3:// (Airflow's ObjectStoragePath)."""

from __future__ import annotations

import os
import uuid
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


def write_bytes_atomically(uri: str, data: bytes, conn_id: str | None = None) -> None:
    """Write a small file so that a reader sees the old file (or none) or the new one, never half of one.

    Locally: a temporary file of this writer's own in the same folder, then ``os.replace`` (atomic on
    POSIX). On S3 a single PUT is atomic already: the object is replaced whole when the upload completes.
    """
    if uri.startswith("file://"):
        target = Path(uri.removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    else:
        object_path(uri, conn_id).write_bytes(data)


def write_text_atomically(uri: str, text: str, conn_id: str | None = None) -> None:
    """Write a small UTF-8 text file (see ``write_bytes_atomically``)."""
    write_bytes_atomically(uri, text.encode("utf-8"), conn_id)


CAS_ATTEMPTS = 10


def update_text(uri: str, decide, conn_id: str | None = None) -> bool:
    """Replace a small text file by compare-and-swap: ``decide(current text or None)`` returns the new text, or
    None to keep the file; returns whether it was written. Two updates that race never both act on the same
    old content: the second sees the first's file.

    Locally: an exclusive ``flock`` on ``.<name>.lock`` beside the file around the read and the atomic
    replace. On S3: a conditional PUT (``If-Match`` the ETag read, ``If-None-Match: *`` when there was no
    object); S3 answers 412 Precondition Failed when another write came in between (409 ConditionalRequest
    Conflict when one is under way), and the update reads again and decides again, up to CAS_ATTEMPTS times
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).
    """
    if uri.startswith("file://") or "://" not in uri:
        return _update_local(Path(uri.removeprefix("file://")), decide)
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri}: compare-and-swap is implemented for file:// and s3:// only")
    return _update_s3(uri, decide, conn_id)


def _update_local(target: Path, decide) -> bool:
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with target.with_name(f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        text = decide(target.read_text() if target.exists() else None)
        if text is None:
            return False
        write_text_atomically(f"file://{target}", text)
        return True


def _update_s3(uri: str, decide, conn_id: str | None) -> bool:
    import random
    import time

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.exceptions import ClientError

    bucket, key = S3Hook.parse_s3_url(uri)
    client = S3Hook(aws_conn_id=conn_id).get_conn()
    for attempt in range(CAS_ATTEMPTS):
        try:
            current = client.get_object(Bucket=bucket, Key=key)
            text, condition = current["Body"].read().decode("utf-8"), {"IfMatch": current["ETag"]}
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            text, condition = None, {"IfNoneMatch": "*"}
        new = decide(text)
        if new is None:
            return False
        try:
            client.put_object(Bucket=bucket, Key=key, Body=new.encode("utf-8"), **condition)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
        time.sleep(random.uniform(0, 0.05 * 2 ** attempt))  # another write came in between: read again
    raise RuntimeError(f"{uri} changed under each of {CAS_ATTEMPTS} attempts to update it; try again")
