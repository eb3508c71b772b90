"""File-system helpers on Hadoop's FileSystem API (file://, s3:// via EMRFS or s3a, hdfs://) from the driver."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

GLOB_SPECIAL = "\\{}[]*?"


def _hadoop_path(spark, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if fs.getScheme() == "file":
        fs = fs.getRawFileSystem()  # no hidden .crc files next to reports and plots
    return fs, path


def qualify(spark, uri: str) -> str:
    """The URI as Spark's file sources report paths (e.g. ``file:/data/images``), without a trailing slash."""
    fs, path = _hadoop_path(spark, uri)
    return str(fs.makeQualified(path).toString()).rstrip("/")


def exists(spark, uri: str) -> bool:
    """Whether a file or folder exists at ``uri``."""
    fs, path = _hadoop_path(spark, uri)
    return bool(fs.exists(path))


def file_status(spark, uri: str) -> tuple[int, object] | None:
    """(length, modification time as a UTC datetime) of a file, or None when it does not exist."""

    fs, path = _hadoop_path(spark, uri)
    if not fs.exists(path):
        return None
    status = fs.getFileStatus(path)
    mtime = datetime.fromtimestamp(status.getModificationTime() / 1000, tz=UTC)
    return int(status.getLen()), mtime


def escape_glob(text: str) -> str:
    """Escape Hadoop glob characters so a folder named ``a[1]`` is read literally, not as a pattern."""
    return "".join("\\" + ch if ch in GLOB_SPECIAL else ch for ch in text)


def join_uri(base: str, *parts: str) -> str:
    """Join URI segments with single slashes."""
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def write_bytes(spark, uri: str, data: bytes) -> None:
    """Write a small file (report, plot, model) through Hadoop's FileSystem, replacing any old one.

    A reader finds the old file or the new one, whole, and never no file (``_replace``). On object stores
    the single PUT of ``create`` replaces the object whole when it completes; elsewhere the bytes go to a
    temporary name beside the target first.
    """
    fs, target = _hadoop_path(spark, uri)
    if (target.toUri().getScheme() or "file") not in ("file", "hdfs"):
        _write(fs, target, data)
        return
    partial = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(
        target.getParent(), f".{target.getName()}.{uuid.uuid4().hex}.partial")
    _write(fs, partial, data)
    _replace(spark, fs, partial, target)


def _replace(spark, fs, source, target) -> None:
    """Put the file ``source`` in the place of ``target`` in one step, the old ``target`` readable until then.

    Local: one rename, which replaces the target atomically (POSIX ``rename``); HDFS: a rename with the
    OVERWRITE option; object stores: a copy onto the target (one upload that replaces the object whole when
    it completes), then the source deleted.
    """
    jvm = spark.sparkContext._jvm
    scheme = target.toUri().getScheme() or "file"
    if scheme == "file":
        if not fs.rename(source, target):
            raise OSError(f"could not replace {target.toString()} with {source.toString()}")
    elif scheme == "hdfs":
        overwrite = spark.sparkContext._gateway.new_array(jvm.org.apache.hadoop.fs.Options.Rename, 1)
        overwrite[0] = jvm.org.apache.hadoop.fs.Options.Rename.OVERWRITE
        fs.rename(source, target, overwrite)
    else:
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        jvm.org.apache.hadoop.fs.FileUtil.copy(fs, source, fs, target, True, True, conf)


def _write(fs, path, data: bytes) -> None:
    out = fs.create(path, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()


def csv_text(column):
    """A text column as its CSV cells (``conventions.csv_cell`` in Spark): a value a spreadsheet would run as a
    formula (``=``, ``+``, ``-``, ``@``, tab, carriage return) or that starts with the quote gets a leading
    ``'``."""
    from pyspark.sql import functions as F

    from image_jobs.conventions import CSV_ESCAPED_START, CSV_TEXT_QUOTE

    return F.when(column.rlike(CSV_ESCAPED_START), F.concat(F.lit(CSV_TEXT_QUOTE), column)).otherwise(column)


def write_csv_file(df, uri: str) -> None:
    """Write ``df`` (string columns, in order) as one CSV file with a header at ``uri``, from Spark's tasks:
    one task writes the rows in order into a folder beside ``uri``, whose single part file is then renamed.

    The CSV is what pandas writes: fields quoted only when needed, quotes doubled, empty for null, spaces kept.
    """
    spark = df.sparkSession
    parts = uri.rstrip("/") + ".parts"
    (df.coalesce(1).write.mode("overwrite").option("header", "true").option("quote", '"').option("escape", '"')
     .option("nullValue", "").option("emptyValue", '""').option("ignoreLeadingWhiteSpace", "false")
     .option("ignoreTrailingWhiteSpace", "false").option("lineSep", "\n").csv(parts))
    fs, folder = _hadoop_path(spark, parts)
    (part,) = [s.getPath() for s in fs.listStatus(folder) if s.getPath().getName().startswith("part-")]
    _, target = _hadoop_path(spark, uri)
    _replace(spark, fs, part, target)  # the old file stays readable until the new one replaces it
    fs.delete(folder, True)


def write_text(spark, uri: str, text: str) -> None:
    """Write a small UTF-8 text file (see ``write_bytes``)."""
    write_bytes(spark, uri, text.encode("utf-8"))


def read_bytes(spark, uri: str) -> bytes:
    """Read a small file through Hadoop's FileSystem; FileNotFoundError names the URI."""
    fs, path = _hadoop_path(spark, uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri} does not exist")
    jvm = spark.sparkContext._jvm
    stream = fs.open(path)
    try:
        return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def read_text(spark, uri: str) -> str:
    """Read a small UTF-8 text file (see ``read_bytes``)."""
    return read_bytes(spark, uri).decode("utf-8")


SUCCESS_MARKER = "_SUCCESS"  # what Spark's file committer writes last, once every file of a write is in place
# ``<column>=<key>@<attempt>``: each attempt of a run's write has a folder of its own (a retry never deletes
# what a reader may be reading); ``@`` is in no run key, and attempts sort by their start time
ATTEMPT_MARK = "@"


def attempt_folder(base_uri: str, key: str, column: str = "run") -> str:
    """A new folder for one attempt of ``key``'s write under ``base_uri``; readers take the newest committed."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return join_uri(base_uri, f"{column}={key}{ATTEMPT_MARK}{stamp}-{uuid.uuid4().hex[:8]}")


def partitions(spark, base_uri: str, column: str = "run") -> tuple[list[str], list[str]]:
    """(committed, uncommitted) ``<base_uri>/<column>=*`` folders, by the presence of Spark's _SUCCESS marker;
    of a key's committed attempts (``attempt_folder``), only the newest (a folder without attempt, written
    before attempts had folders, is the oldest).

    An uncommitted folder is a write that was killed (or is still running, in a concurrent run): its files may
    be partial or not Parquet at all, so readers must not see it. An older committed attempt stays where it
    is, so a reader that listed it before a retry committed still finds its files.
    """
    fs, pattern = _hadoop_path(spark, join_uri(base_uri, f"{column}=*"))
    newest: dict[str, tuple[str, str]] = {}
    uncommitted = []
    for status in fs.globStatus(pattern) or []:
        if not status.isDirectory():
            continue
        folder = status.getPath()
        marker = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(folder, SUCCESS_MARKER)
        if not fs.exists(marker):
            uncommitted.append(str(folder.toString()))
            continue
        key, _, attempt = folder.getName().partition("=")[2].partition(ATTEMPT_MARK)
        if key not in newest or attempt > newest[key][0]:
            newest[key] = (attempt, str(folder.toString()))
    return sorted(path for _, path in newest.values()), sorted(uncommitted)


def read_committed(spark, base_uri: str, column: str = "run", log=None, merge_schema: bool = False):
    """The Parquet dataset under ``base_uri`` (partitioned by ``column``), committed partitions only.

    ``merge_schema``: partitions written before a column was added read it as null. Returns None when
    there is none. Skipped partitions are logged: a killed attempt's leftovers are
    overwritten by its retry, a concurrent run's partition is read once it is committed.
    """
    if not exists(spark, base_uri):
        return None
    committed, uncommitted = partitions(spark, base_uri, column)
    if uncommitted and log is not None:
        log.warning("not reading %d uncommitted partition(s) (killed or still being written): %s",
                    len(uncommitted), ", ".join(uncommitted))
    if not committed:
        return None
    from pyspark.sql import functions as F

    reader = spark.read.option("basePath", qualify(spark, base_uri))
    df = (reader.option("mergeSchema", "true") if merge_schema else reader).parquet(*committed)
    return df.withColumn(column, F.regexp_replace(F.col(column), f"{ATTEMPT_MARK}.*$", ""))  # the key alone


def delete(spark, uri: str) -> bool:
    """Delete a file or folder (recursively) if it exists; returns whether something was deleted."""
    fs, path = _hadoop_path(spark, uri)
    return bool(fs.exists(path) and fs.delete(path, True))
