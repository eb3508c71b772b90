"""File-system helpers on Hadoop's FileSystem API (file://, s3:// via EMRFS or s3a, hdfs://) from the driver."""

from __future__ import annotations

from datetime import UTC

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
    from datetime import datetime

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

    Written to a temporary name first and renamed, so a reader never sees half a file; on object
    stores the single PUT of ``create`` is atomic already.
    """
    fs, path = _hadoop_path(spark, uri)
    jvm = spark.sparkContext._jvm
    scheme = path.toUri().getScheme() or "file"
    target = path
    via_rename = scheme in ("file", "hdfs")
    if via_rename:
        path = jvm.org.apache.hadoop.fs.Path(uri + ".partial")
    out = fs.create(path, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()
    if via_rename:
        if fs.exists(target):
            fs.delete(target, False)
        fs.rename(path, target)


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


def delete(spark, uri: str) -> bool:
    """Delete a file or folder (recursively) if it exists; returns whether something was deleted."""
    fs, path = _hadoop_path(spark, uri)
    return bool(fs.exists(path) and fs.delete(path, True))


def has_parquet(spark, uri: str) -> bool:
    """Whether a Parquet dataset folder holds at least one data file (at any depth)."""
    fs, path = _hadoop_path(spark, uri)
    if not fs.exists(path):
        return False
    files = fs.listFiles(path, True)
    while files.hasNext():
        if files.next().getPath().getName().endswith(".parquet"):
            return True
    return False
