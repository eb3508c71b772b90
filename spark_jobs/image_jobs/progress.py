"""Progress of long Spark work, logged from the driver while executors work, and the accumulators it reads."""

from __future__ import annotations

import logging
import threading
import time


class ProgressLogger:
    """Logs ``done/total`` images and the rate every ``interval`` seconds until stopped.

    Reads Spark accumulators updated by the executors (at the end of each task) and the job's
    stage progress from the status tracker, so the log moves even between finished tasks.
    """

    def __init__(self, spark, log: logging.Logger, total: int, counters: dict, interval: float = 10.0):
        self._tracker = spark.sparkContext.statusTracker()
        self._log, self._total, self._counters, self._interval = log, total, counters, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> ProgressLogger:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _tasks(self) -> tuple[int, int]:
        done = total = 0
        for stage_id in self._tracker.getActiveStageIds():
            info = self._tracker.getStageInfo(stage_id)
            if info is not None:
                done += info.numCompletedTasks
                total += info.numTasks
        return done, total

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            done = self._counters["done"].value + self._counters["rejected"].value
            elapsed = time.monotonic() - self._started
            tasks_done, tasks_total = self._tasks()
            self._log.info(
                "progress: %d/%d images (%d rejected), %.1f images/s, tasks %d/%d active stages",
                done, self._total, self._counters["rejected"].value, done / max(elapsed, 1e-9),
                tasks_done, tasks_total,
            )


def task_counters(sc) -> dict:
    """The accumulators the featurizing and scoring tasks report to: photos done and rejected and their
    seconds (what ``ProgressLogger`` logs), model loads and their seconds (the jobs' summaries)."""
    return {"done": sc.accumulator(0), "rejected": sc.accumulator(0), "seconds": sc.accumulator(0.0),
            "model_loads": sc.accumulator(0), "load_seconds": sc.accumulator(0.0)}
