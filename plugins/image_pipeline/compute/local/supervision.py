"""Supervision of the local cluster's processes: each one started in a session of its own, watched through /proc.

A process is alive while it runs and is no zombie; stopping one signals its whole session (SIGTERM, then
SIGKILL), so whatever it started goes with it, Spark's Python daemons included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path


def _spawn(role: str, argv: list[str], env: dict[str, str], log_path: Path) -> dict:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop_cluster reaches its children too
        )
    return {"role": role, "pid": proc.pid, "pgid": proc.pid, "log": str(log_path)}


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Running, and not a zombie (exited, not yet reaped by its parent)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _session_members(sid: int) -> list[int]:
    """Processes of the session ``sid`` leads (every cluster process is started in its own session).

    The session, not the process group: Spark's Python daemon moves itself and its workers into a
    process group of their own, but stays in the session of the executor that started it.
    """
    members = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat_fields(entry)
        if fields is not None and len(fields) > 3 and fields[3] == str(sid):
            members.append(int(entry))
    return members


def _signal_session(sid: int, sig: int) -> None:
    """Send ``sig`` to the session's leading group and to every member outside it (Python daemons)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, sig)
    for pid in _session_members(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _session_alive(pgid: int) -> bool:
    return any(_alive(pid) for pid in _session_members(pgid))


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return ""


def _wait(condition: Callable[[], bool], still_alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not still_alive():
            return False
        time.sleep(0.5)
    return False


def _stop_processes(processes: list[dict], grace: float = 15.0) -> list[int]:
    groups = [p["pgid"] for p in processes if _session_alive(p["pgid"])]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            _signal_session(pgid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 10.0)
        while time.monotonic() < deadline and any(_session_alive(g) for g in groups):
            time.sleep(0.2)
        groups = [g for g in groups if _session_alive(g)]
        if not groups:
            break
    if groups:
        raise RuntimeError(f"processes of groups {groups} survived SIGKILL")
    return [p["pid"] for p in processes]
