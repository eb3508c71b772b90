"""Is the run's local cluster still there? Asked by every step before it submits anything.

A step retried after its cluster went away (stopped by its watchdog after the idle timeout while Airflow was
down, stopped by the teardown, gone with a reboot) would otherwise spend 40 s on "Failed to connect to master"
and end in a py4j traceback that says nothing of why. ``gone_reason`` says why, and what to do.

Standard library, the cluster module and the failure wording (``diagnosis``) only.
"""

from __future__ import annotations

from pathlib import Path

from image_pipeline.compute.diagnosis import CLUSTER_GONE_FIX
from image_pipeline.compute.local.cluster import WATCHDOG_ROLE, ClusterInfo, _master_status
from image_pipeline.compute.local.supervision import _session_alive

# the watchdog's log line when it stops an idle cluster (watchdog.watch)
WATCHDOG_STOP_MARK = "stopping the cluster (idle timeout"


def watchdog_stop_line(info: ClusterInfo) -> str | None:
    """The watchdog's log line (with its time) saying it stopped the cluster when idle, if it did."""
    for process in info.processes:
        log = Path(process.get("log") or "")
        if process["role"] == WATCHDOG_ROLE and log.is_file():
            text = log.read_text(errors="replace")
            lines = [line.strip() for line in text.splitlines() if WATCHDOG_STOP_MARK in line]
            if lines:
                return lines[-1]
    return None


def gone_reason(cluster_dir: str | Path) -> str | None:
    """None while the cluster's master runs and answers with live workers; else why it is gone and what to do."""
    info = ClusterInfo.load(cluster_dir)
    if info is None:
        record = Path(cluster_dir) / "cluster.json"
        return f"the run's local cluster is gone: {record} does not exist; {CLUSTER_GONE_FIX}"
    masters = [p for p in info.processes if p["role"] == "master"]
    status = _master_status(info.master_webui) if info.master_webui else None
    alive = bool(masters) and all(_session_alive(p["pgid"]) for p in masters)
    workers = [w for w in (status or {}).get("workers", []) if w.get("state") == "ALIVE"]
    if alive and status is not None and workers:
        return None
    stopped = watchdog_stop_line(info)
    if stopped:
        cause = f"its watchdog stopped it after the idle timeout: {stopped}"
    elif not alive:
        cause = "its master is not running (stopped by the teardown, a restart of the machine, or killed)"
    elif status is None:
        cause = f"its master does not answer on {info.master_webui}"
    else:
        cause = "no worker of it is alive"
    return f"the run's local cluster at {info.master_url} is gone: {cause}; {CLUSTER_GONE_FIX}"
