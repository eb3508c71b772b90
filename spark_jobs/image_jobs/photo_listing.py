"""The photo listing and the incremental selection as Spark datasets (extraction and scoring share them).

Nothing here grows with the number of photos on the driver: the driver lists only the class folders
(the top level of the images root); Spark's tasks list the photos in them (``photo_store.list_folder``),
and "already done" is a left anti-join of that listing against the committed rows of the feature and
reject stores (or of the scoring batches), in Spark. The photos to process stay a dataset that the
featurizing tasks read the bytes of (``photo_store.prefetched_photos``).
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime

from image_jobs.conventions import PHOTO_KEY
from image_jobs.photo_store import CHANGED, VANISHED, StoreOptions, class_folders, list_folder

__all__ = ["CHANGED", "VANISHED"]  # re-exported: the reasons of photos gone or rewritten since the listing

# the photo key (conventions.PHOTO_KEY) as the listing holds it: the modification time in milliseconds
LISTED_KEY = [*PHOTO_KEY[:2], "mtime_ms"]
IMAGES_PER_PARTITION = 200
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024  # larger files are rejected unread (a record holds one file)
NO_CLASS_FOLDER = "not inside a class folder (images must be under <images_uri>/<label>/)"
# A reject reason starts with its kind in lower-case words, then ':' or '(' and the details.
REASON_KIND_PATTERN = r"^([a-z ]+)"
# the folders a listing task lists: at most this many tasks per core (S3 lists page after page: more
# tasks list more folders at once; every folder is one task's work)
LISTING_TASKS_PER_CORE = 4


def reason_kind(reason: str) -> str:
    """The kind of a reject reason, e.g. ``too many pixels`` for ``too many pixels: image is ...``."""
    match = re.match(REASON_KIND_PATTERN, reason)
    return (match.group(1).strip() if match else "") or "other"


# reasons earlier versions recorded as permanent rejects though the file was not at fault (a decoder out of
# memory): a MemoryError now fails the task, which Spark retries; such rows are not "done" and are tried again
TRANSIENT_REJECT_REASONS = ("out of memory while decoding",)


def reason_kind_column(column: str = "reason"):
    """``reason_kind`` as a Spark column expression (for counting rejects by kind without collecting them)."""
    from pyspark.sql import functions as F

    kind = F.trim(F.regexp_extract(F.col(column), REASON_KIND_PATTERN, 1))
    return F.when(kind == "", F.lit("other")).otherwise(kind)


def parse_instant(value: str) -> datetime:
    """An ISO-8601 time (with zone, or UTC if none) as an aware UTC datetime, to the whole second."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--modified-before {value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(microsecond=0)


def spark_timestamp(value: str) -> str:
    """An ISO-8601 time as Spark's SQL timestamps want it, in UTC (``2026-11-21T10:00:00``)."""
    return parse_instant(value).strftime("%Y-%m-%dT%H:%M:%S")


def before_ms(value: str) -> int:
    """An ISO-8601 time as epoch milliseconds: a run sees the photos modified strictly before it."""
    return int(parse_instant(value).timestamp() * 1000)


def listing_schema():
    """Schema of the listing: Spark's path, length, modification time (epoch ms) and class (null: none)."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    return StructType([StructField("path", StringType(), False), StructField("length", LongType(), False),
                       StructField("mtime_ms", LongType(), False), StructField("label", StringType(), True)])


def _folder_lister(images_uri: str, cutoff_ms: int, options: StoreOptions, classes: bool, chunk: int = 10_000):
    """The ``mapInPandas`` function of the listing tasks: folder names (null: the root's own files) ->
    the photos in them (labelled by their folder with ``classes``), in chunks of ``chunk`` rows."""

    def list_tasks(batches):
        import pandas as pd

        columns = ["path", "length", "mtime_ms", "label"]
        for pdf in batches:
            for folder in pdf["folder"]:
                folder = folder if isinstance(folder, str) else None
                rows = []
                for photo in list_folder(images_uri, folder, cutoff_ms, options):
                    rows.append(photo if classes else photo._replace(label=None))
                    if len(rows) == chunk:
                        yield pd.DataFrame(rows, columns=columns)
                        rows = []
                if rows:
                    yield pd.DataFrame(rows, columns=columns)

    return list_tasks


def list_photos(spark, images_uri: str, modified_before: str, options: StoreOptions, labels=(),
                classes: bool = True):
    """Every image file under ``images_uri`` modified before ``modified_before``, as a dataset
    (``listing_schema``), cached for the job's later passes.

    With ``classes`` (extraction), the label is the class folder (the first folder under the root; nested
    sub-folders keep their class), only the ``labels`` folders when given, and files directly under the
    root have label null (rejected later). Without (an inbox to score), every photo at any depth is listed
    with label null. The driver lists the top level only; the tasks list one folder each.
    """
    import pandas as pd
    from pyspark import StorageLevel
    from pyspark.sql.types import StringType, StructField, StructType

    folders = class_folders(images_uri, options, labels if classes else ())
    tasks = pd.DataFrame({"folder": [None, *folders]}, dtype=object)
    n_tasks = min(len(tasks), LISTING_TASKS_PER_CORE * spark.sparkContext.defaultParallelism)
    lister = _folder_lister(images_uri, before_ms(modified_before), options, classes)
    return (spark.createDataFrame(tasks, StructType([StructField("folder", StringType(), True)]))
            .repartition(n_tasks).mapInPandas(lister, listing_schema()).persist(StorageLevel.MEMORY_AND_DISK))


def done_rows(spark, dataset_uris: list[str], run_key: str, identity: dict[str, str] | None = None,
              log: logging.Logger | None = None):
    """The keys (``LISTED_KEY``) of the committed rows other runs wrote under ``dataset_uris`` (datasets
    partitioned by ``run``), of ``identity`` only when given (columns -> values: rows without them, or
    with other values, are not done); None when there is none. A killed attempt's uncommitted files are
    ignored and logged to ``log``."""
    from functools import reduce

    from pyspark.sql import functions as F

    from image_jobs import storage

    log = log or logging.getLogger("extract_features")
    frames = []
    for uri in dataset_uris:
        df = storage.read_committed(spark, uri, log=log, merge_schema=identity is not None)
        if df is None or (identity and not set(identity) <= set(df.columns)):
            continue  # nothing committed, or only rows written before features had an identity
        df = df.filter(F.col("run") != run_key)
        if "reason" in df.columns:  # a reject for a cause that was not the file's: not done, tried again
            df = df.filter(F.col("reason").isNull() | ~F.col("reason").isin(list(TRANSIENT_REJECT_REASONS)))
        for column, value in (identity or {}).items():
            df = df.filter(F.col(column) == value)
        frames.append(df.select("path", "length", F.unix_millis("modificationTime").alias("mtime_ms")))
    return reduce(lambda a, b: a.unionByName(b), frames) if frames else None


def not_done(listing, done):
    """The listed photos without a done row of the same key: a left anti-join, in Spark."""
    return listing if done is None else listing.join(done, LISTED_KEY, "left_anti")


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


def photo_partitions(spark, n_photos: int, batch_size: int) -> int:
    """How many tasks read and featurize ``n_photos``: a whole number of waves over the cores, each task
    small enough to show progress; Arrow batches hold ``batch_size`` photos."""
    cores = spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    return cores * max(1, math.ceil(n_photos / IMAGES_PER_PARTITION / cores))
