"""Transforms of the feature-extraction job: listing, labelling, incremental selection, splitting.

They take and return DataFrames; reading and writing URIs is left to ``extract_features.main``.
"""

from __future__ import annotations

from datetime import UTC, datetime

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")
IMAGE_KEY = ["path", "length", "modificationTime"]
NO_CLASS_FOLDER = "not inside a class folder (images must be under <images_uri>/<label>/)"


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

    return listing.join(F.broadcast(done_keys.select(*IMAGE_KEY).distinct()), IMAGE_KEY, "left_anti")


def unlabelled_rejects(todo):
    """Reject rows for files that sit outside any class folder: they cannot be labelled."""
    from pyspark.sql import functions as F

    return todo.filter(F.col("label").isNull()).select(
        "path", "label", "length", "modificationTime", F.lit(NO_CLASS_FOLDER).alias("reason")
    )


def oversized_rejects(todo, max_bytes: int):
    """Reject rows for files too large to read into memory as one record."""
    from pyspark.sql import functions as F

    return todo.filter(F.col("label").isNotNull() & (F.col("length") > max_bytes)).select(
        "path", "label", "length", "modificationTime",
        F.concat(F.lit("file is "), F.col("length").cast("string"),
                 F.lit(f" bytes, over the limit of {max_bytes}")).alias("reason"),
    )
