"""Files the jobs replace (summaries, model.json, report tables, plots) are never missing or half-written for a
reader: a reader polling while the job rewrites them finds the old file or the new one, whole, every time."""

from __future__ import annotations

import threading

import pytest

from image_jobs import storage

pytestmark = pytest.mark.spark


def poll(path, versions: set[bytes], stop: threading.Event, seen: list) -> None:
    """Read ``path`` until ``stop``; record every read that is not one of ``versions`` whole."""
    while not stop.is_set():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            seen.append(b"<missing>")
            continue
        seen.append(data if data not in versions else b"ok")


def test_a_reader_always_finds_the_old_or_the_new_small_file(spark, tmp_path):
    versions = [b"A" * 200_000, b"B" * 50_000]
    target = tmp_path / "summary.json"
    storage.write_bytes(spark, f"file://{target}", versions[0])
    stop, seen = threading.Event(), []
    reader = threading.Thread(target=poll, args=(target, set(versions), stop, seen))
    reader.start()
    try:
        for i in range(300):
            storage.write_bytes(spark, f"file://{target}", versions[i % 2])
    finally:
        stop.set()
        reader.join()
    assert len(seen) > 100 and set(seen) == {b"ok"}, {s[:20] for s in seen}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


def test_a_reader_always_finds_the_old_or_the_new_csv_written_by_spark(spark, tmp_path):
    target = tmp_path / "metrics.csv"
    frames = [spark.createDataFrame([(str(i), "x" * 50) for i in range(n)], "a string, b string") for n in (2000, 30)]
    texts = set()
    for frame in frames:
        storage.write_csv_file(frame, f"file://{target}")
        texts.add(target.read_bytes())
    stop, seen = threading.Event(), []
    reader = threading.Thread(target=poll, args=(target, texts, stop, seen))
    reader.start()
    try:
        for i in range(12):
            storage.write_csv_file(frames[i % 2], f"file://{target}")
    finally:
        stop.set()
        reader.join()
    assert len(seen) > 10 and set(seen) == {b"ok"}, {s[:20] for s in seen}
