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
