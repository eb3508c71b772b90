"""Parts of the feature-extraction job: listing, labelling, incremental selection, scan sizing.

The listing (metadata only) lives on the driver as ``ListedImage`` rows; only image bytes go through
Spark. Reading and writing the datasets is left to ``extract_features.run``.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import unquote

from image_jobs.conventions import IMAGE_EXTENSIONS

IMAGE_KEY = ["path", "length", "modificationTime"]
IMAGES_PER_PARTITION = 200
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024  # larger files are rejected unread (a record holds one file)
# What a file "costs" on top of its bytes when Spark packs files into a scan's partitions: an image's
# forward pass takes about as long as decoding a megabyte, so partitions of small images are balanced
# by count, and of large photos by bytes and count together (by bytes alone, the partitions holding
# the smallest files had 1.6x the images of the others, and the last wave waited for them).
FILE_OPEN_COST = 1 << 20
NO_CLASS_FOLDER = "not inside a class folder (images must be under <images_uri>/<label>/)"
VANISHED = "file disappeared between listing and reading"
CHANGED = "file changed between listing and reading (a later run reads the new version)"
# A reject reason starts with its kind in lower-case words, then ':' or '(' and the details.
REASON_KIND_PATTERN = r"^([a-z ]+)"


class ListedImage(NamedTuple):
    """One listed image file, kept on the driver: its key (path, length, modification time in epoch
    ms) and its class (None until labelled, or for a file outside any class folder)."""

    path: str
    length: int
    mtime_ms: int
    label: str | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        return self.path, self.length, self.mtime_ms


def reason_kind(reason: str) -> str:
    """The kind of a reject reason, e.g. ``too many pixels`` for ``too many pixels: image is ...``."""
    match = re.match(REASON_KIND_PATTERN, reason)
    return (match.group(1).strip() if match else "") or "other"


def image_glob() -> str:
    """A case-insensitive Hadoop glob for the image extensions: ``*.{[jJ][pP][gG],...}``."""
    def ci(ext: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" for c in ext)

    return "*.{" + ",".join(ci(e) for e in IMAGE_EXTENSIONS) + "}"


def spark_timestamp(value: str) -> str:
    """An ISO-8601 time (with zone, or UTC if none) as the ``modifiedBefore`` option wants it, in UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--modified-before {value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def read_images(spark, paths: list[str], modified_before: str, with_content: bool):
    """Spark's binaryFile source over ``paths`` (recursive, image extensions, modifiedBefore).

    Without content, only the listing is done: Spark's binaryFile source reads a file's bytes only
    when the ``content`` column is selected.
    """
    df = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", image_glob())
        .option("modifiedBefore", spark_timestamp(modified_before))
        .option("ignoreMissingFiles", "true")
        .load(paths)
    )
    columns = ["path", "length", "modificationTime"] + (["content"] if with_content else [])
    return df.select(*columns)


def _path_column_form(uri: str) -> str:
    """``inputFiles()`` URIs (percent-encoded, ``file:///``) in the form of binaryFile's ``path`` column."""
    uri = unquote(uri)
    return "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri


def list_image_rows(spark, images_uri: str, modified_before: str) -> list[ListedImage]:
    """Every image file under ``images_uri`` (not labelled yet).

    Empty files included: Spark's file scans skip zero-byte files, so a scan alone would lose them
    silently; the file index behind the scan (``inputFiles``) still lists them, and their status is
    fetched from the file system so they can be recorded as rejects.

    The listing is metadata only (a few hundred bytes per file) and is kept on the driver: every later
    step reuses it without listing again, a lost executor cannot lose it, and no cached plan can serve
    a later listing of the same folder stale files. Times travel as epoch milliseconds, so no time-zone
    conversion ever touches the incremental key.
    """
    from pyspark.sql import functions as F

    from image_jobs import storage
    from image_jobs.session import sql_conf

    scanned = read_images(spark, [images_uri], modified_before, with_content=False)
    listed = {_path_column_form(uri) for uri in scanned.inputFiles()}
    # metadata only, no byte read: one task per core instead of Spark's default of one per 4 MiB of
    # "open cost" (a hundred tasks for 3000 files)
    with sql_conf(spark, {"spark.sql.files.openCostInBytes": str(FILE_OPEN_COST),
                          "spark.sql.files.maxPartitionBytes": str(1 << 50)}):
        rows = [ListedImage(r[0], int(r[1]), int(r[2])) for r in scanned.select(
            "path", "length", F.unix_millis("modificationTime")).collect()]
    seen = {row.path for row in rows}
    gone = []
    for path in sorted(listed - seen):
        status = storage.file_status(spark, path)
        if status is None:  # deleted while being listed: it is not part of this run's input any more
            gone.append(path)
        else:
            rows.append(ListedImage(path, status[0], round(status[1].timestamp() * 1000)))
    if gone:
        logging.getLogger("extract_features").warning(
            "%d file(s) disappeared while the images were being listed, not part of this run: %s",
            len(gone), gone[:20])
    return rows


def image_frame(spark, rows, *extra: str):
    """A DataFrame of driver-side rows ``(path, length, mtime_ms, *extra)``: IMAGE_KEY plus the ``extra``
    string columns, ``modificationTime`` a timestamp again.

    Built through Arrow from pandas, so Spark holds it as a local relation on the driver (up to
    ``spark.sql.execution.arrow.localRelationThreshold``, 48 MB): broadcasting it for a join runs no
    Spark job, where a frame built from Python rows is an RDD that a job has to collect first.
    """
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    schema = StructType([StructField("path", StringType(), False), StructField("length", LongType(), False),
                         StructField("mtime_ms", LongType(), True),
                         *[StructField(name, StringType(), True) for name in extra]])
    columns = [field.name for field in schema.fields]
    frame = pd.DataFrame([tuple(row) for row in rows], columns=columns).astype(
        {"path": object, "length": "int64", "mtime_ms": "Int64", **{name: object for name in extra}})
    return spark.createDataFrame(frame, schema).select(
        "path", "length", F.timestamp_millis("mtime_ms").alias("modificationTime"), *extra)


def done_keys(spark, dataset_uris: list[str], run_key: str,
              log: logging.Logger | None = None) -> set[tuple[str, int, int]]:
    """(path, length, mtime_ms) of the committed rows other runs wrote under ``dataset_uris`` (datasets
    partitioned by ``run``); a killed attempt's uncommitted files are ignored and logged to ``log``."""
    from pyspark.sql import functions as F

    from image_jobs import storage

    log = log or logging.getLogger("extract_features")
    frames = [df.filter(F.col("run") != run_key).select("path", "length", F.unix_millis("modificationTime"))
              for df in (storage.read_committed(spark, uri, log=log) for uri in dataset_uris) if df is not None]
    if not frames:
        return set()
    union = frames[0]
    for frame in frames[1:]:
        union = union.union(frame)
    return {(r[0], int(r[1]), int(r[2])) for r in union.collect()}


def label_of(path: str, images_root: str) -> str | None:
    """The class of ``path``: its first folder under ``images_root`` (nested sub-folders keep their
    class); None for a file directly under the root. ``images_root`` is qualified the way Spark
    reports paths (see ``storage.qualify``)."""
    prefix = images_root.rstrip("/") + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix):].split("/")
    return parts[0] if len(parts) > 1 else None


def size_reason(length: int, max_bytes: int) -> str | None:
    """Why a file of ``length`` bytes is not worth reading (empty, or too large to be one record), or None."""
    if length == 0:
        return "empty file (0 bytes)"
    if length > max_bytes:
        return f"file too large: {length} bytes, over the limit of {max_bytes}"
    return None


def precheck_reason(label: str | None, length: int, max_bytes: int) -> str | None:
    """Why a listed file is rejected before any byte is read, or None when its bytes are to be read."""
    return NO_CLASS_FOLDER if label is None else size_reason(length, max_bytes)


def split_readable(images: list[ListedImage], reason_of) -> tuple[list[ListedImage], list[tuple[ListedImage, str]]]:
    """``images`` whose bytes are to be read, and ``(image, reason)`` for the others: ``reason_of(image)``
    is why an image is rejected before reading (``precheck_reason``, ``size_reason``), or None."""
    to_read, rejected = [], []
    for image in images:
        reason = reason_of(image)
        if reason is None:
            to_read.append(image)
        else:
            rejected.append((image, reason))
    return to_read, rejected


def size_image_scan(spark, n_images: int, n_bytes: int, batch_size: int) -> int:
    """Size the next image scan's own partitions; returns how many it aims at.

    A whole number of waves over the cores, small enough to show progress, instead of shuffling
    image bytes: the Python workers start while files are read. Arrow batches hold ``batch_size``
    images, so a batch of JPEG bytes stays small.
    """
    cores = spark.sparkContext.defaultParallelism
    partitions = cores * max(1, math.ceil(n_images / IMAGES_PER_PARTITION / cores))
    total_bytes = n_bytes + n_images * FILE_OPEN_COST
    spark.conf.set("spark.sql.files.openCostInBytes", str(FILE_OPEN_COST))
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(max(1, math.ceil(total_bytes / partitions))))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    return partitions
