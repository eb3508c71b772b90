"""The local cluster's idle-timeout backstop, the twin of EMR's auto-termination policy.

``start_cluster`` starts it with the master, detached in a session of its own like the daemons, so
it outlives whoever started the cluster (an Airflow killed as a whole during a step):

    python -m image_pipeline.compute.local.watchdog <cluster_dir> --idle-timeout-minutes 60

It polls the master's JSON status. Once no application (and no driver) has been active for the idle
timeout, it stops the cluster's master and workers with the cluster module's own stop logic, says so
in ``logs/watchdog.log`` and exits. It exits as well when the master and workers are gone, and when
the teardown stops it (``stop_cluster`` stops it first). A cluster running an application is never
stopped, nor one whose master is up but does not answer: its applications cannot be seen.

It imports only the standard library and the cluster module: no Airflow, no pyspark.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from image_pipeline.compute.local.cluster import WATCHDOG_ROLE, ClusterInfo, _master_status, stop_spark_daemons
from image_pipeline.compute.local.supervision import _alive, _session_alive

log = logging.getLogger("image_pipeline.compute.local.watchdog")

IDLE, BUSY, STARTING, UNANSWERED = "idle", "busy", "starting", "unanswered"


def poll_seconds(idle_timeout_s: float) -> float:
    """How often to look: a tenth of the timeout, between half a second and half a minute."""
    return min(30.0, max(0.5, idle_timeout_s / 10))


def observe(info: ClusterInfo, starting: bool) -> tuple[str, list[str]]:
    """What the cluster is doing now: (state, names of the active applications and drivers)."""
    status = _master_status(info.master_webui) if info.master_webui else None
    if status is None:
        master = next((p for p in info.processes if p["role"] == "master"), None)
        # a master that is gone runs no application; one that is up but silent may well run one
        return (UNANSWERED, []) if master is not None and _alive(master["pid"]) else (IDLE, [])
    active = [str(app.get("name") or app.get("id")) for app in status.get("activeapps", [])]
    active += [str(driver.get("id")) for driver in status.get("activedrivers", [])]
    if active:
        return BUSY, active
    if starting and int(status.get("aliveworkers", 0)) < info.workers:
        return STARTING, []
    return IDLE, []


def daemons_alive(info: ClusterInfo) -> bool:
    """Whether any master or worker process (or a process of its session) still runs."""
    return any(_session_alive(p["pgid"]) for p in info.processes if p["role"] != WATCHDOG_ROLE)


def log_change(state: str, active: list[str], idle_timeout_s: float) -> None:
    if state == BUSY:
        log.info("application(s) running: %s", ", ".join(active))
    elif state == IDLE:
        log.info("no application running: the cluster stops after %s min idle", minutes(idle_timeout_s))
    elif state == STARTING:
        log.info("waiting for the workers to register")
    else:
        log.warning("the master does not answer at its web UI; not counted as idle while it does not")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:g}"


def watch(cluster_dir: Path, idle_timeout_s: float, start_grace_s: float) -> str:
    """Poll until the cluster was idle for ``idle_timeout_s`` (then stop it: "stopped") or is gone ("gone")."""
    started = time.monotonic()
    idle_since: float | None = None
    seen: tuple[str, list[str]] | None = None
    while True:
        info = ClusterInfo.load(cluster_dir)
        if info is None or not daemons_alive(info):
            log.info("the cluster's master and workers are gone (stopped by the teardown, or exited): exiting")
            return "gone"
        now = time.monotonic()
        state, active = observe(info, starting=now - started < start_grace_s)
        if (state, active) != seen:
            log_change(state, active, idle_timeout_s)
            seen = (state, active)
        if state != IDLE:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= idle_timeout_s:
            log.info("idle for %.0f s with no application: stopping the cluster (idle timeout %s min)",
                     now - idle_since, minutes(idle_timeout_s))
            stopped = stop_spark_daemons(cluster_dir)
            log.info("stopped the cluster's master and workers (%d process group(s)): exiting", len(stopped))
            return "stopped"
        time.sleep(poll_seconds(idle_timeout_s))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cluster_dir", type=Path, help="the cluster's folder (holding cluster.json)")
    parser.add_argument("--idle-timeout-minutes", type=float, required=True,
                        help="stop the cluster after this long with no application (fractions allowed)")
    parser.add_argument("--start-grace-seconds", type=float, default=120.0,
                        help="idle time counts only once the workers registered or this long after the start")
    args = parser.parse_args(argv)
    if not args.idle_timeout_minutes > 0:
        parser.error("--idle-timeout-minutes must be > 0 (a cluster without idle timeout gets no watchdog)")
    return args


def _exit_on_sigterm(signum, frame) -> None:
    log.info("asked to stop (the cluster is being stopped): exiting")
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Watch one cluster; 0 when it stopped the cluster or the cluster was gone, 1 on an error."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log.info("watching the cluster in %s: it stops after %g min with no application",
             args.cluster_dir, args.idle_timeout_minutes)
    try:
        watch(args.cluster_dir, args.idle_timeout_minutes * 60, args.start_grace_seconds)
    except Exception:
        log.exception("the watchdog failed: the cluster is no longer stopped when idle")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
