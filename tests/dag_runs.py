"""What the DAG tests share about a run: its task states (read from the metadata database), the processes it
left behind, and the modification times of the photos it is to see."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path


def task_states(dag_run) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_run.dag_id,
                                                 TaskInstance.run_id == dag_run.run_id).all()
        return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis}


def set_mtime(folder: Path, when: datetime) -> None:
    """Everything under ``folder`` last modified at ``when`` (a run sees the photos modified before the end of its
    data interval)."""
    for path in folder.rglob("*"):
        os.utime(path, (when.timestamp(), when.timestamp()))


def leftover_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (a run's cluster folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(pid) != os.getpid():
            found.append(cmdline[:200])
    return found
