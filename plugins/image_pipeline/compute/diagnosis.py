"""Why a Spark step failed, in one line, from its output: out of memory, disk full, a worker died, bad input.

A failed step's output is hundreds of lines of stack traces; the cause that matters ("No space left on
device" deep inside a ``TASK_WRITE_FAILED``, a ``MemoryError`` in a Python worker) is easy to miss
under "exit code 1". ``FailureScanner`` reads the output line by line as it streams (nothing kept but
the first evidence of each cause) and ``diagnosis()`` puts the cause first in the task's error.
The local backend feeds it spark-submit's output; the EMR backend the step's stderr from LogUri.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_EVIDENCE_CHARS = 300
# what a user does about a step whose cluster is gone, on either backend (local.health, emr.operators)
CLUSTER_GONE_FIX = ("clear this task together with its setup task create_cluster (in the Airflow UI: Clear, with "
                    "the setup tasks included, which Airflow 3 does by default for a task with a setup): that "
                    "starts a new cluster and runs the steps on it")


@dataclass(frozen=True)
class Cause:
    name: str
    explanation: str
    pattern: re.Pattern


CAUSES = (
    Cause("disk full", "a disk of the cluster (or the output's file system) is full",
          re.compile(r"No space left on device|Disk quota exceeded|ENOSPC")),
    Cause("out of memory", "a Spark JVM or Python worker ran out of memory (or, for a thread it could not "
          "start, hit a limit on threads)",
          re.compile(r"java\.lang\.OutOfMemoryError.*|(?<![\w.])MemoryError\b.*|Cannot allocate memory|"
                     r"std::bad_alloc|failed to map segment from shared object|can't start new thread|"
                     r"cannot allocate memory for thread-local data|"
                     r"Container killed by YARN for exceeding memory limits.*|"
                     r"exit(?:ed with)? (?:code|status) 137\b")),
    Cause("inference runtime", "the inference runtime could not load or run the model",
          re.compile(r"(?<=InferenceRuntimeError: ).*")),
    Cause("worker died", "a Python worker or executor died without an error of its own (often the kernel's "
          "out-of-memory killer: see dmesg on the node)",
          re.compile(r"Python worker exited unexpectedly.*|Executor (?:lost|.*exited).*|"
                     r"Worker (?:lost|.*removed).*|Lost executor \d+.*")),
    Cause("missing file", "a file or folder the step needs does not exist",
          re.compile(r"FileNotFoundException.*|\[PATH_NOT_FOUND\].*|does not exist\b.*")),
)
# the job's own explanation of bad input: "... ERROR train_models: <message>"
JOB_ERROR = re.compile(r"\bERROR (?:extract_features|train_models|evaluate_models|score_inbox): (?P<message>.+)")
WHERE = re.compile(r"\[TASK_WRITE_FAILED\][^.]*|Task failed while writing rows to \S+")


class FailureScanner:
    """Fed every output line of a step; remembers the first evidence of each known cause."""

    def __init__(self) -> None:
        self.evidence: dict[str, str] = {}
        self.job_error: str | None = None
        self.where: str | None = None

    def feed(self, line: str) -> None:
        for cause in CAUSES:
            if cause.name not in self.evidence:
                match = cause.pattern.search(line)
                if match:
                    self.evidence[cause.name] = match.group(0).strip()[:MAX_EVIDENCE_CHARS]
        if self.job_error is None and (match := JOB_ERROR.search(line)):
            self.job_error = match.group("message").strip()[:MAX_EVIDENCE_CHARS]
        if self.where is None and (match := WHERE.search(line)):
            self.where = match.group(0).strip()[:MAX_EVIDENCE_CHARS]

    def feed_text(self, text: str) -> FailureScanner:
        for line in text.splitlines():
            self.feed(line)
        return self

    def feed_file(self, path) -> FailureScanner:
        """Every line of a log file, streamed (a missing or unreadable file adds nothing)."""
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    self.feed(line.rstrip("\n"))
        except OSError:
            pass
        return self

    def diagnosis(self) -> str | None:
        """``cause: <what> (<evidence>)``, the most specific known cause first; None when none was seen."""
        if self.job_error is not None:
            return f"cause: the job stopped on its input: {self.job_error}"
        for cause in CAUSES:
            if cause.name in self.evidence:
                where = f"; while: {self.where}" if self.where and cause.name == "disk full" else ""
                return f"cause: {cause.name}: {cause.explanation} ({self.evidence[cause.name]}){where}"
        return None


def diagnose_text(text: str) -> str | None:
    """The diagnosis of a whole log at once (an EMR step's stderr)."""
    return FailureScanner().feed_text(text).diagnosis()
