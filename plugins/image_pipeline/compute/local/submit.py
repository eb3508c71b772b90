"""A step on the local cluster: spark-submit against its master, as an argument list (never a shell).

``StepProcess`` streams the step's output, keeps its last lines and explains a failure by its cause
(out of memory, disk full, ...), from the output or, where that names none, from the executors' logs.
"""

from __future__ import annotations

import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from image_pipeline.compute.contract import DRIVER_HEAP_MIB, DRIVER_MAX_RESULT_MIB
from image_pipeline.compute.local.cluster import ClusterInfo, spark_home
from image_pipeline.compute.local.supervision import _stop_processes

# the causes an executor's log may add to a step's diagnosis
WORKER_CAUSES = ("cause: out of memory", "cause: disk full", "cause: inference runtime")


class StepFailedError(RuntimeError):
    """A Spark step exited non-zero; the message carries the tail of its output."""


def spark_submit_argv(info: ClusterInfo, entry_script: str, args: list[str], jobs_zip: str, python: str,
                      app_name: str) -> list[str]:
    """spark-submit against the local master, as an argument list (no shell, so no quoting issues)."""
    executor_memory = max(1, info.memory_gb_per_worker - 1)
    return [
        str(Path(spark_home()) / "bin" / "spark-submit"),
        "--master", info.master_url,
        "--deploy-mode", "client",
        "--name", app_name,
        "--conf", "spark.driver.host=127.0.0.1",
        "--conf", "spark.driver.bindAddress=127.0.0.1",
        "--conf", "spark.ui.enabled=false",
        "--conf", f"spark.driver.memory={DRIVER_HEAP_MIB}m",
        "--conf", f"spark.driver.maxResultSize={DRIVER_MAX_RESULT_MIB}m",
        "--conf", f"spark.executor.memory={executor_memory}g",
        "--conf", f"spark.sql.shuffle.partitions={max(2, 2 * info.workers * info.cores_per_worker)}",
        "--conf", f"spark.pyspark.python={python}",
        "--conf", f"spark.pyspark.driver.python={python}",
        "--py-files", jobs_zip,
        entry_script,
        *args,
    ]


class StepProcess:
    """A running spark-submit whose output streams line by line into ``emit``; kill() stops it.

    Every line also goes through a ``FailureScanner``, so a failure can be explained by its cause
    (out of memory, disk full, ...) and not only by its exit code. A Python worker that crashed in native
    code (an allocation refused under its memory cap aborts it) leaves only "exited unexpectedly" in this
    output: its own words are in its executor's log, ``<work_dir>/<app id>/<executor>/stderr``, which a
    failure without a more specific cause is then explained from.
    """

    def __init__(self, argv: list[str], env: dict[str, str], emit: Callable[[str], None], tail_lines: int = 40,
                 work_dir: Path | None = None):
        from image_pipeline.compute.diagnosis import FailureScanner

        self.argv, self.env, self.emit, self.work_dir = argv, env, emit, work_dir
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.scanner = FailureScanner()
        self.proc: subprocess.Popen | None = None
        self.killed = False
        self.started = time.time()

    def run(self) -> int:
        self.started = time.time()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, text=True, errors="replace", bufsize=1,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.tail.append(line)
            self.scanner.feed(line)
            self.emit(line)
        return self.proc.wait()

    def diagnosis(self) -> str | None:
        """The cause from the output; where that names none, or only a worker that died, from the application's
        executor logs as well: their evidence of out of memory, a full disk or the inference runtime (what a
        worker says of itself), nothing vaguer."""
        diagnosis = self.scanner.diagnosis()
        if (diagnosis is None or diagnosis.startswith("cause: worker died")) and self.work_dir:
            from image_pipeline.compute.diagnosis import FailureScanner

            for log in self.executor_logs():
                found = FailureScanner().feed_file(log).diagnosis()
                if found and found.startswith(WORKER_CAUSES):
                    return f"{found} (executor log {log})"
        return diagnosis

    def executor_logs(self) -> list[Path]:
        """The executors' stderr of the applications the cluster started since this step did (a run's steps
        never run at once; Spark names the application only at INFO, which conf/log4j2.properties hides)."""
        apps = [app for app in Path(self.work_dir).glob("app-*") if app.stat().st_mtime >= self.started - 1]
        return sorted(log for app in apps for log in app.glob("*/stderr"))

    def failure_message(self, name: str, code: int) -> str:
        """What a failed step's task error says: the cause when known, then the last output lines."""
        if self.killed:
            headline = f"step {name} was killed (exit code {code})"
        else:
            diagnosis = self.diagnosis()
            headline = f"step {name} failed with exit code {code}" + (f"; {diagnosis}" if diagnosis else "")
        return f"{headline}\nlast output lines:\n" + "\n".join(self.tail)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            _stop_processes([{"pid": self.proc.pid, "pgid": self.proc.pid}], grace=10.0)
