"""The one place a SparkSession is built, with settings that make Spark 3.5 (EMR) and 4.x behave alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

# Defaults that differ between Spark 3.5 and 4.x, pinned so both versions give the same results.
COMMON_CONF: dict[str, str] = {
    "spark.sql.ansi.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.pythonUDF.arrow.enabled": "false",
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
    "spark.sql.execution.pandas.convertToArrowArraySafely": "false",
    "spark.sql.session.timeZone": "UTC",
    # run=<run_key> partition values are names, never numbers or dates
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.parquet.compression.codec": "snappy",
}


def build_session(app_name: str, master: str | None = None, conf: dict[str, str] | None = None):
    """Build (or get) the SparkSession for a job. ``master`` is for tests; spark-submit sets it otherwise."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in {**COMMON_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # getOrCreate may return a running session: make the SQL settings hold for it too
    for key, value in {**COMMON_CONF, **(conf or {})}.items():
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)
    spark.sparkContext.setLogLevel("WARN")
    return spark


@contextmanager
def sql_conf(spark, settings: dict[str, str]) -> Iterator[None]:
    """Session SQL settings for the queries run inside the block, restored (or unset) after it."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def job_logger(name: str) -> logging.Logger:
    """A logger that prints to the driver's stderr, which the Airflow task log streams."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return logging.getLogger(name)
