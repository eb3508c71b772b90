"""Transforms of the feature-extraction job: listing, labelling, incremental selection, splitting.

They take and return DataFrames; reading and writing URIs is left to ``extract_features.main``.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from urllib.parse import unquote

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")
IMAGE_KEY = ["path", "length", "modificationTime"]
IMAGES_PER_PARTITION = 200
FILE_OPEN_COST = 8192  # bytes a file "costs" when Spark packs files into partitions
NO_CLASS_FOLDER = "not inside a class folder (images must be under <images_uri>/<label>/)"
VANISHED = "file disappeared between listing and reading"
CHANGED = "file changed between listing and reading (a later run reads the new version)"
# A reject reason starts with its kind in lower-case words, then ':' or '(' and the details.
REASON_KIND_PATTERN = r"^([a-z ]+)"


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


def list_images(spark, images_uri: str, modified_before: str):
    """(path, length, modificationTime) of every image file under ``images_uri``, empty files included.

    Spark's file scans skip zero-byte files, so a scan alone would lose them silently; the file
    index behind the scan (``inputFiles``) still lists them, and their status is fetched from the
    file system so they can be recorded as rejects.
    """
    from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

    from image_jobs import storage

    # The listing is scanned once, then reused by every later step of the job. A local checkpoint
    # rather than cache(): a cached plan would be served again to a later listing of the same folder
    # in the same session (same plan, stale files), and nobody could unpersist it from outside.
    scanned = read_images(spark, [images_uri], modified_before, with_content=False)
    listed = {_path_column_form(uri) for uri in scanned.inputFiles()}  # before checkpointing: needs the file index
    scanned = scanned.coalesce(spark.sparkContext.defaultParallelism).localCheckpoint(eager=True)  # metadata only
    seen = {row["path"] for row in scanned.select("path").collect()}
    extra, gone = [], []
    for path in sorted(listed - seen):
        status = storage.file_status(spark, path)
        if status is None:  # deleted while being listed: it is not part of this run's input any more
            gone.append(path)
        else:
            extra.append((path, status[0], status[1]))
    if gone:
        logging.getLogger("extract_features").warning(
            "%d file(s) disappeared while the images were being listed, not part of this run: %s",
            len(gone), gone[:20])
    schema = StructType([StructField("path", StringType(), False), StructField("length", LongType(), False),
                         StructField("modificationTime", TimestampType(), True)])
    return scanned.unionByName(spark.createDataFrame(extra, schema)) if extra else scanned


def with_labels(df, images_root: str):
    """Add ``label``: the first folder under ``images_root`` (nested sub-folders keep their class).

    Files directly under the root get a null label; ``images_root`` must be qualified the way
    Spark reports paths (see ``storage.qualify``).
    """
    from pyspark.sql import functions as F

    prefix = images_root.rstrip("/") + "/"
    relative = F.expr(f"substring(path, {len(prefix) + 1})")
    parts = F.split(relative, "/")
    return df.withColumn(
        "label",
        F.when(F.col("path").startswith(prefix) & (F.size(parts) > 1), parts.getItem(0)),
    )


def restrict_labels(df, labels: list[str] | None):
    """Keep only images of the allowed labels (all when ``labels`` is empty); unlabelled files stay."""
    from pyspark.sql import functions as F

    if not labels:
        return df
    return df.filter(F.col("label").isNull() | F.col("label").isin(list(labels)))


def select_new(listing, done_keys):
    """Images of ``listing`` whose (path, length, modificationTime) has no row in ``done_keys``."""
    from pyspark.sql import functions as F

    return listing.join(F.broadcast(done_keys.select(*IMAGE_KEY)), IMAGE_KEY, "left_anti")


def unlabelled_rejects(todo):
    """Reject rows for files that sit outside any class folder: they cannot be labelled."""
    from pyspark.sql import functions as F

    return todo.filter(F.col("label").isNull()).select(
        "path", "label", "length", "modificationTime", F.lit(NO_CLASS_FOLDER).alias("reason")
    )


def size_rejects(todo, max_bytes: int):
    """Reject rows for empty files and for files too large to read into memory as one record."""
    from pyspark.sql import functions as F

    reason = (
        F.when(F.col("length") == 0, F.lit("empty file (0 bytes)"))
        .when(F.col("length") > max_bytes, F.concat(F.lit("file too large: "), F.col("length").cast("string"),
                                                    F.lit(f" bytes, over the limit of {max_bytes}")))
    )
    return todo.filter(F.col("label").isNotNull()).select(
        "path", "label", "length", "modificationTime", reason.alias("reason")
    ).filter(F.col("reason").isNotNull())


def readable(todo, max_bytes: int):
    """The labelled images whose bytes the content pass reads (not empty, not oversized)."""
    from pyspark.sql import functions as F

    return todo.filter(F.col("label").isNotNull() & (F.col("length") > 0) & (F.col("length") <= max_bytes))


def unread(to_read, featurized):
    """Images of ``to_read`` that the content pass returned no row for.

    The content pass skips files deleted since the listing (``ignoreMissingFiles``: one vanished file
    must not fail the job) and drops files whose length or modification time changed since (their
    key no longer matches). Without this, either would silently have no row at all.
    """
    return to_read.select(*IMAGE_KEY, "label").join(featurized.select("path"), "path", "left_anti")


def unread_rejects(spark, rows, exists):
    """Reject rows (``path, label, length, modificationTime, reason``) for the ``unread`` images.

    ``exists(path)`` tells a deleted file (VANISHED) from one rewritten since the listing (CHANGED).
    """
    from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

    schema = StructType([StructField("path", StringType(), False), StructField("label", StringType(), True),
                         StructField("length", LongType(), False),
                         StructField("modificationTime", TimestampType(), True),
                         StructField("reason", StringType(), True)])
    return spark.createDataFrame(
        [(r["path"], r["label"], r["length"], r["modificationTime"], CHANGED if exists(r["path"]) else VANISHED)
         for r in rows], schema)


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
