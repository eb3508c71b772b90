"""Two runs publishing ``models/latest.json`` at once, interleaved the worst way: the run on older data reads
the record, then the run on newer data publishes, then the older one writes (shared by the local and the S3
tests of the compare-and-swap)."""

from __future__ import annotations

import threading


def race_two_publishes(older: dict, newer: dict, conn_id: str | None, monkeypatch) -> tuple[dict, dict]:
    """Publish ``older`` and ``newer`` (plans) so that ``older`` decides on what it read before ``newer``
    published; returns both outcomes. Where the store locks (file://), ``newer`` waits for ``older``'s lock
    instead, and ``older`` goes on after a short wait."""
    from image_pipeline.publishing import latest_model

    older_has_read, newer_done = threading.Event(), threading.Event()
    keep_previous = latest_model._keep_previous

    def keep_after_the_newer_run(previous, record):
        if record["run_key"] == older["run_key"] and not older_has_read.is_set():
            older_has_read.set()
            newer_done.wait(timeout=3)
        return keep_previous(previous, record)

    monkeypatch.setattr(latest_model, "_keep_previous", keep_after_the_newer_run)
    headline = {"multiclass_accuracy": 0.9}
    outcomes: dict[str, dict] = {}

    def publish_older():
        outcomes["older"] = latest_model.publish_latest(older, headline, conn_id)

    thread = threading.Thread(target=publish_older)
    thread.start()
    assert older_has_read.wait(timeout=30)
    outcomes["newer"] = latest_model.publish_latest(newer, headline, conn_id)
    newer_done.set()
    thread.join(timeout=60)
    return outcomes["older"], outcomes["newer"]
