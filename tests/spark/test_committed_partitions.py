"""Readers of the features and rejects datasets see committed run partitions only."""

from __future__ import annotations

import logging

import pytest

from image_jobs import storage

pytestmark = pytest.mark.spark


def test_a_killed_writes_leftovers_are_not_read(spark, tmp_path, caplog):
    base = f"file://{tmp_path}/features/backbone=b"
    spark.createDataFrame([("a.jpg", 1)], "path string, length long").write.parquet(f"{base}/run=done")
    killed = tmp_path / "features" / "backbone=b" / "run=killed"
    killed.mkdir()
    (killed / "part-00000-half.snappy.parquet").write_bytes(b"PAR1 half written")  # no _SUCCESS: never committed
    committed, uncommitted = storage.partitions(spark, base)
    assert [c.rsplit("/", 1)[-1] for c in committed] == ["run=done"]
    assert [u.rsplit("/", 1)[-1] for u in uncommitted] == ["run=killed"]
    with caplog.at_level(logging.WARNING):
        rows = storage.read_committed(spark, base, log=logging.getLogger("test")).collect()
    assert [(r["path"], r["run"]) for r in rows] == [("a.jpg", "done")]
    assert "run=killed" in caplog.text


def test_nothing_committed_reads_as_none(spark, tmp_path):
    assert storage.read_committed(spark, f"file://{tmp_path}/missing") is None
    (tmp_path / "empty" / "run=x").mkdir(parents=True)
    assert storage.read_committed(spark, f"file://{tmp_path}/empty") is None


def test_a_reader_sees_the_old_rows_or_the_new_never_a_subset_while_a_retry_rewrites(spark, tmp_path):
    """A cleared and retried extraction writes its run's rows again while another run's training reads the
    store: every read finds the run's rows whole (the old attempt's or the new one's), never a missing folder,
    a subset or an error; afterwards readers take the newest committed attempt."""
    import threading

    from pyspark.sql import functions as F

    base = f"file://{tmp_path}/features/backbone=b"
    rows = 3000

    def write(run: str, version: int) -> None:
        frame = spark.range(rows).select(F.concat(F.lit("p"), F.col("id").cast("string")).alias("path"),
                                         F.lit(version).alias("version"))
        frame.repartition(8).write.parquet(storage.attempt_folder(base, run))

    write("retried", 0)
    write("other", 0)
    seen, errors, stop = [], [], threading.Event()

    def read_while_rewritten() -> None:
        while not stop.is_set():
            try:
                df = storage.read_committed(spark, base)
                counts = {r["run"]: r["n"] for r in df.groupBy("run").agg(F.count("*").alias("n")).collect()}
                versions = df.filter(F.col("run") == "retried").select("version").distinct().count()
                seen.append((counts, versions))
            except Exception as exc:  # a vanished folder or file: what must never happen
                errors.append(repr(exc)[:300])

    reader = threading.Thread(target=read_while_rewritten)
    reader.start()
    version = 0
    try:
        while version < 30 and (version < 5 or len(seen) + len(errors) < 5):  # reads overlap several rewrites
            version += 1
            write("retried", version)
    finally:
        stop.set()
        reader.join(timeout=120)
    assert errors == [] and len(seen) >= 5
    assert all(counts == {"retried": rows, "other": rows} and versions == 1 for counts, versions in seen)
    final = storage.read_committed(spark, base).filter(F.col("run") == "retried")
    assert [r.version for r in final.select("version").distinct().collect()] == [version]
