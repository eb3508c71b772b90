"""The photo store's pure parts: URIs in Spark's form, rejects before any byte is read, and the bounded,
ordered, failing-loudly prefetch of photo bytes."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from image_jobs.photo_listing import NO_CLASS_FOLDER, before_ms, precheck_reason
from image_jobs.photo_store import (
    CHANGED,
    VANISHED,
    Fetched,
    StoreError,
    StoreLocation,
    StoreOptions,
    fetch,
    list_folder,
    prefetched,
    prefetched_photos,
)


@pytest.mark.parametrize("uri,location,spark_form", [
    ("file:/data/images", ("file", "/data/images"), "file:/data/images"),
    ("file:///data/images", ("file", "/data/images"), "file:/data/images"),
    ("/data/images", ("file", "/data/images"), "file:/data/images"),
    ("file:/d/chat noir é 柴犬/3.png", ("file", "/d/chat noir é 柴犬/3.png"), "file:/d/chat noir é 柴犬/3.png"),
    ("s3://bucket/pets/images/", ("s3", "bucket/pets/images"), "s3://bucket/pets/images"),
    ("s3a://bucket/a b/c.jpg", ("s3a", "bucket/a b/c.jpg"), "s3a://bucket/a b/c.jpg"),
])
def test_uris_split_for_pyarrow_and_back_in_sparks_form(uri, location, spark_form):
    assert StoreLocation.of(uri) == location
    assert StoreLocation.of(uri).uri() == spark_form


@pytest.mark.parametrize("uri,message", [
    ("hdfs://nn/images", "file:// and s3:// only, not hdfs://"),
    ("s3:///images", "names no bucket"),
    ("images/relative", "neither an absolute path nor a URI"),
])
def test_unreadable_uris_are_named(uri, message):
    with pytest.raises(StoreError, match=message):
        StoreLocation.of(uri)


@pytest.mark.parametrize("label,length,reason", [
    ("pug", 1000, None),
    (None, 1000, NO_CLASS_FOLDER),
    ("pug", 0, "empty file (0 bytes)"),
    ("pug", 5001, "file too large: 5001 bytes, over the limit of 5000"),
    ("pug", 5000, None),
])
def test_rejects_decided_before_reading(label, length, reason):
    assert precheck_reason(label, length, max_bytes=5000) == reason


def test_modified_before_is_to_the_second_in_utc():
    assert before_ms("2026-01-01T00:00:00Z") == 1_767_225_600_000
    assert before_ms("2026-01-01T01:00:00.999+01:00") == 1_767_225_600_000
    assert before_ms("2026-01-01T00:00:00") == 1_767_225_600_000  # no zone: UTC
    with pytest.raises(ValueError, match="--modified-before 'yesterday'"):
        before_ms("yesterday")


def test_listing_a_folder_applies_the_hidden_extension_and_time_rules(tmp_path):
    """What Spark's file sources would list: image extensions in any case, nothing under a hidden name at any
    depth, empty files included, only files modified before the cut-off."""
    files = {"pug/a.jpg": b"x", "pug/B.PNG": b"xy", "pug/sub/c.jpeg": b"xyz", "pug/empty.jpg": b"",
             "pug/notes.txt": b"n", "pug/.hidden.jpg": b"h", "pug/_drafts/d.jpg": b"d", "pug/sub/.git/e.jpg": b"e",
             "pug/f.jpg._COPYING_": b"f", "pug/late.jpg": b"late", "loose.jpg": b"l"}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    import os

    os.utime(tmp_path / "pug/late.jpg", (2_000_000_000, 2_000_000_000))
    cutoff = 1_900_000_000_000
    listed = {p.path.removeprefix(f"file:{tmp_path}/"): p for p in list_folder(
        f"file://{tmp_path}", "pug", cutoff, StoreOptions())}
    assert sorted(listed) == ["pug/B.PNG", "pug/a.jpg", "pug/empty.jpg", "pug/sub/c.jpeg"]
    assert {p.label for p in listed.values()} == {"pug"}
    assert listed["pug/B.PNG"].length == 2 and listed["pug/empty.jpg"].length == 0
    assert listed["pug/a.jpg"].mtime_ms == (tmp_path / "pug/a.jpg").stat().st_mtime_ns // 1_000_000
    root = list(list_folder(str(tmp_path), None, cutoff, StoreOptions()))
    assert [(p.path, p.label) for p in root] == [(f"file:{tmp_path}/loose.jpg", None)]


def test_a_read_checks_the_listed_version(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"abc")
    listed = photo.stat().st_mtime_ns // 1_000_000
    options = StoreOptions()
    assert fetch(f"file:{photo}", 3, listed, options) == Fetched(b"abc")
    assert fetch(f"file:{photo}", 4, listed, options) == Fetched(None, CHANGED)
    assert fetch(f"file:{photo}", 3, listed - 1000, options) == Fetched(None, CHANGED)
    assert fetch(f"file:{tmp_path}/gone.jpg", 3, listed, options) == Fetched(None, VANISHED)


def test_prefetch_keeps_order_bounds_reads_in_flight_and_overlaps_the_consumer():
    """Reads of later batches run while the consumer works on the current one, never more than the
    concurrency at once, and every batch comes back with its rows' results in order."""
    lock, running, peak = threading.Lock(), [0], [0]
    next_batch_read = threading.Event()

    def slow_read(value):
        def read():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            if value >= 8:  # a row of the second batch
                next_batch_read.set()
            time.sleep(0.01)
            with lock:
                running[0] -= 1
            return Fetched(value.to_bytes(2, "big"))
        return read

    batches = [list(range(start, start + 8)) for start in range(0, 64, 8)]
    out = []
    for batch, fetched in prefetched(batches, lambda b: ([slow_read(v) for v in b], 8 * len(b)), concurrency=4):
        if batch[0] == 0:  # the consumer holds the first batch: the second one's reads go on meanwhile
            assert next_batch_read.wait(10)
        out.append((batch, [int.from_bytes(f.content, "big") for f in fetched]))
    assert out == [(b, b) for b in batches]
    assert peak[0] == 4


def test_a_failed_read_fails_the_task_and_rejected_rows_are_not_read():
    def read_rows(pdf):
        return prefetched_photos([pdf], StoreOptions(concurrency=2), lambda label, n: "too small" if n < 2 else None)

    pdf = pd.DataFrame({"path": ["file:/nowhere/a.jpg", "file:/nowhere/b.jpg"], "length": [1, 1],
                        "mtime_ms": [0, 0], "label": ["pug", "pug"]})
    [(_, fetched)] = list(read_rows(pdf))
    assert fetched == [Fetched(None, "too small")] * 2  # not read: a read would find them vanished

    def failing():
        raise OSError("AWS Error SLOW_DOWN during GetObject operation")

    with pytest.raises(OSError, match="SLOW_DOWN"):
        list(prefetched([["x"]], lambda b: ([failing], 1), concurrency=2))
