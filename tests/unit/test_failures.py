"""A failed step's cause, read from its output (lines as Spark 4.3 and the jobs really print them)."""

from __future__ import annotations

import pytest

from image_pipeline.compute.diagnosis import FailureScanner, diagnose_text

DISK_FULL = """\
26/11/21 23:21:23 WARN TaskSetManager: Lost task 0.0 in stage 18.0 (TID 28) (127.0.0.1 executor 0): \
org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows to \
file:/data/features/backbone=mobilenet_v2/run=r1. SQLSTATE: 58030
\tat org.apache.spark.sql.execution.datasources.FileFormatWriter$.executeTask(FileFormatWriter.scala:424)
Caused by: org.apache.hadoop.fs.FSError: java.io.IOException: No space left on device
\tat org.apache.hadoop.fs.RawLocalFileSystem$LocalFSFileOutputStream.write(RawLocalFileSystem.java:363)
26/11/21 23:21:23 ERROR TaskSetManager: Task 0 in stage 18.0 failed 4 times; aborting job
"""
PYTHON_OOM = """\
26/11/21 23:20:01 WARN TaskSetManager: Lost task 0.0 in stage 14.0 (TID 21) (127.0.0.1 executor 0): \
org.apache.spark.api.python.PythonException: [PYTHON_EXCEPTION] An exception was thrown from the Python worker: \
Traceback (most recent call last):
  File "./image_jobs.zip/image_jobs/featurize.py", line 76, in load_model
MemoryError
 SQLSTATE: 38000
"""
MAP_FAILED = ("ImportError: libtensorflow_framework.so.2: failed to map segment from shared object\n")
THREAD_FAILED = ("    File \"/usr/lib/python3.11/threading.py\", line 968, in start\n      raise\n"
                 "  RuntimeError: can't start new thread\n")  # a capped address space: no room for its stack
DAMAGED_IR = ("  File \"./image_jobs.zip/image_jobs/openvino_runtime.py\", line 200, in __init__\n"
              "image_jobs.openvino_runtime.InferenceRuntimeError: OpenVINO IR file /x/mobilenet_v2-ab.bin (1024 bytes) "
              "does not match its digest (sha256 0123..., expected 4567...): it is truncated or corrupted\n")
JVM_OOM = "Exception in thread \"Executor task launch worker\" java.lang.OutOfMemoryError: Java heap space\n"
WORKER_DIED = ("26/11/21 WARN TaskSetManager: Lost task 1.0 in stage 3.0: org.apache.spark.SparkException: "
               "Python worker exited unexpectedly (crashed)\n")
JOB_ERROR = ("2026-11-21 23:20:22,182 ERROR train_models: class 'pug' has 1 usable image(s); "
             "every class needs at least 2\n")


@pytest.mark.parametrize("text,expected", [
    (DISK_FULL, "cause: disk full"),
    (PYTHON_OOM, "cause: out of memory"),
    (JVM_OOM, "cause: out of memory"),
    (MAP_FAILED, "cause: out of memory"),
    (THREAD_FAILED, "cause: out of memory"),
    (WORKER_DIED, "cause: worker died"),
    (WORKER_DIED + DAMAGED_IR, "cause: inference runtime: the inference runtime could not load or run the model "
     "(OpenVINO IR file /x/mobilenet_v2-ab.bin (1024 bytes) does not match its digest"),
    (JOB_ERROR, "cause: the job stopped on its input: class 'pug' has 1 usable image(s)"),
])
def test_the_cause_is_named(text, expected):
    assert diagnose_text(text).startswith(expected)


def test_disk_full_says_where_it_happened():
    diagnosis = diagnose_text(DISK_FULL)
    assert "No space left on device" in diagnosis
    assert "file:/data/features/backbone=mobilenet_v2/run=r1" in diagnosis


def test_the_most_specific_cause_wins_over_its_consequences():
    # a worker lost because its disk filled up: the disk is the cause
    assert diagnose_text(WORKER_DIED + DISK_FULL).startswith("cause: disk full")
    assert diagnose_text(WORKER_DIED + PYTHON_OOM).startswith("cause: out of memory")


def test_unknown_failures_have_no_invented_cause():
    assert diagnose_text("Traceback (most recent call last):\nValueError: something else\n") is None


def test_the_scanner_keeps_only_evidence_not_the_whole_output():
    scanner = FailureScanner()
    for i in range(10_000):
        scanner.feed(f"INFO line {i}")
    scanner.feed("java.lang.OutOfMemoryError: Java heap space " + "x" * 5000)
    assert len(scanner.evidence["out of memory"]) <= 300 and scanner.job_error is None


def test_a_crashed_worker_is_explained_from_its_executors_log(tmp_path):
    """A Python worker aborted in native code under its memory cap: spark-submit's output has only "exited
    unexpectedly"; the executor log of the application the step started has the worker's own words."""
    import os

    from image_pipeline.compute.local.submit import StepProcess

    app = tmp_path / "app-20261207011019-0001"
    aborted = "INFO Executor: Running task 1.0\ncannot allocate memory for thread-local data: ABORT\n"
    for executor, text in (("0", "INFO Executor: Running task 0.0\n"), ("1", aborted)):
        (app / executor).mkdir(parents=True)
        (app / executor / "stderr").write_text(text)

    def step(started_before_the_app: float, extra: str = "") -> StepProcess:
        process = StepProcess(["spark-submit"], {}, lambda line: None, work_dir=tmp_path)
        process.scanner.feed_text(WORKER_DIED + extra)
        process.started = app.stat().st_mtime - started_before_the_app
        return process

    diagnosis = step(10).diagnosis()
    assert diagnosis.startswith("cause: out of memory") and "cannot allocate memory for thread-local data" in diagnosis
    assert diagnosis.endswith(f"(executor log {app / '1' / 'stderr'})")
    # an application started an hour before the step is another step's: its logs are not this one's
    assert step(-3600).diagnosis().startswith("cause: worker died")
    # an executor log saying something vaguer (a missing file) does not replace "worker died"
    (app / "1" / "stderr").write_text("WARN x: hdfs:/tmp/spark-events does not exist\n")
    os.utime(app, (app.stat().st_atime, app.stat().st_mtime))
    assert step(10).diagnosis().startswith("cause: worker died")
    # and no executor logs: the output's own diagnosis stands
    assert StepProcess(["spark-submit"], {}, lambda line: None, work_dir=tmp_path / "none").diagnosis() is None
