"""A transient Spark standalone cluster on this machine: master + workers as local processes.

The local twin of an EMR cluster: ``start_cluster`` starts a master and N workers bound to 127.0.0.1
on free ports (so two runs never collide), waits until every worker has registered and records pids,
ports and log files in ``<cluster_dir>/cluster.json`` as it goes; ``stop_cluster`` stops every process of
the cluster (executors and Python workers included: each daemon leads its own process group, see
``supervision.py``). Steps run on it through ``submit.py``.
Like EMR's auto-termination policy, a watchdog started with the cluster (``watchdog.py``, in a session
of its own) stops the master and workers once no application ran for the idle timeout, so a cluster
whose owner was killed does not run on forever.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from image_pipeline.compute.local.supervision import (
    _alive,
    _session_members,
    _spawn,
    _stop_processes,
    _tail,
    _wait,
)
from image_pipeline.wiring.settings import DEFAULT_LOCAL_IDLE_TIMEOUT_MINUTES, PROJECT_ROOT

log = logging.getLogger(__name__)

CLUSTER_FILE = "cluster.json"
SPARK_CONF_DIR = PROJECT_ROOT / "conf"
START_ATTEMPTS = 3
WATCHDOG_ROLE = "watchdog"


@dataclass
class ClusterInfo:
    """What a running local cluster is made of; saved as cluster.json in the run's folder."""

    cluster_dir: str
    master_url: str = ""
    master_webui: str = ""
    workers: int = 0
    cores_per_worker: int = 1
    memory_gb_per_worker: int = 1
    processes: list[dict] = field(default_factory=list)  # {"role", "pid", "pgid", "log"}
    started_unix: float = 0.0
    idle_timeout_minutes: float = 0.0  # the watchdog stops the cluster after this long idle; 0: no watchdog

    def save(self) -> None:
        path = Path(self.cluster_dir) / CLUSTER_FILE
        tmp = path.with_suffix(".json.partial")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, cluster_dir: str | Path) -> ClusterInfo | None:
        path = Path(cluster_dir) / CLUSTER_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spark_home() -> str:
    """The Spark distribution inside the pyspark package."""
    from pyspark.find_spark_home import _find_spark_home

    return _find_spark_home()


def cluster_env(cluster_dir: Path, python: str, java_home: str) -> dict[str, str]:
    """Environment of the cluster's processes: Java, Python, run-private scratch folders, and the cluster's own
    Spark configuration (with its secret: ``auth``; the project's ``conf/`` for a cluster started before it)."""
    from image_pipeline.compute.local.auth import conf_dir

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
    own_conf = conf_dir(cluster_dir)
    env.update({
        "JAVA_HOME": java_home,
        "SPARK_HOME": spark_home(),
        "SPARK_CONF_DIR": str(own_conf if own_conf.is_dir() else SPARK_CONF_DIR),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(cluster_dir / "local"),
        "SPARK_WORKER_DIR": str(cluster_dir / "work"),
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
    })
    return env


def _master_status(webui: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{webui}/json/", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def start_cluster(cluster_dir: Path, workers: int, cores: int, memory_gb: int, python: str, java_home: str,
                  timeout: float = 120.0,
                  idle_timeout_minutes: float = DEFAULT_LOCAL_IDLE_TIMEOUT_MINUTES) -> ClusterInfo:
    """Start a master and ``workers`` workers; return once all have registered with the master.

    With ``idle_timeout_minutes`` > 0 a watchdog started with the master stops the cluster once no
    application ran for that long. On any failure, whatever was started is stopped again before the
    error propagates.
    """
    from image_pipeline.compute.local.auth import write_conf

    cluster_dir.mkdir(parents=True, exist_ok=True)
    write_conf(cluster_dir, SPARK_CONF_DIR)  # a new secret: only this cluster's processes can talk to it
    env = cluster_env(cluster_dir, python, java_home)
    spark_class = str(Path(env["SPARK_HOME"]) / "bin" / "spark-class")
    info = ClusterInfo(str(cluster_dir), workers=workers, cores_per_worker=cores, memory_gb_per_worker=memory_gb,
                       started_unix=time.time(), idle_timeout_minutes=idle_timeout_minutes)
    try:
        _start_master(info, spark_class, env)
        if idle_timeout_minutes > 0:
            _start_watchdog(info, python, env, start_grace=timeout)
        _start_workers(info, spark_class, env)
        _wait_for_workers(info, timeout)
        return info
    except BaseException:
        stop_cluster(cluster_dir)
        raise


def _start_master(info: ClusterInfo, spark_class: str, env: dict[str, str]) -> None:
    """Start the master on free ports, retrying when a port was taken in between; record it in ``info``."""
    cluster_dir = Path(info.cluster_dir)
    for attempt in range(1, START_ATTEMPTS + 1):
        port, webui_port = free_port(), free_port()
        master = _spawn("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(port), "--webui-port", str(webui_port)],
                        env, cluster_dir / "logs" / f"master-{attempt}.log")
        info.processes.append(master)
        info.master_url, info.master_webui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{webui_port}"
        info.save()
        master_pid = master["pid"]
        if _wait(lambda: _master_status(info.master_webui) is not None, lambda: _alive(master_pid), 60):  # noqa: B023
            break
        log.warning("master attempt %d did not come up (port taken?):\n%s", attempt, _tail(master["log"]))
        _stop_processes([master])
        info.processes.remove(master)
    else:
        raise RuntimeError(f"the Spark master did not start after {START_ATTEMPTS} attempts; "
                           f"see {cluster_dir}/logs")
    log.info("master %s up (web UI %s)", info.master_url, info.master_webui)


def _start_watchdog(info: ClusterInfo, python: str, env: dict[str, str], start_grace: float) -> None:
    """Start the idle-timeout watchdog in a session of its own, so it outlives whoever started the cluster.

    Started right after the master, so a cluster whose owner dies while the workers start is covered
    too; it counts no idle time before the workers registered or ``start_grace`` seconds passed.
    """
    package_parent = str(Path(__file__).resolve().parents[3])  # the folder holding image_pipeline/
    watchdog_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))}
    info.processes.append(_spawn(
        WATCHDOG_ROLE,
        [python, "-m", "image_pipeline.compute.local.watchdog", info.cluster_dir,
         "--idle-timeout-minutes", repr(float(info.idle_timeout_minutes)), "--start-grace-seconds", repr(start_grace)],
        watchdog_env, Path(info.cluster_dir) / "logs" / "watchdog.log"))
    info.save()


def _start_workers(info: ClusterInfo, spark_class: str, env: dict[str, str]) -> None:
    """Start the workers against the master; each is recorded in ``info`` as soon as it is spawned."""
    cluster_dir = Path(info.cluster_dir)
    for i in range(info.workers):
        info.processes.append(_spawn(
            f"worker-{i}",
            # port 0: the worker binds whatever port is free when it starts, so two runs starting
            # at the same time cannot race for one (the master's port is retried instead, above)
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
             "--port", "0", "--webui-port", "0", "--cores", str(info.cores_per_worker),
             "--memory", f"{info.memory_gb_per_worker}g", "--work-dir", str(cluster_dir / "work"), info.master_url],
            env, cluster_dir / "logs" / f"worker-{i}.log"))
        info.save()


def _wait_for_workers(info: ClusterInfo, timeout: float) -> None:
    """Return once every worker registered with the master; fail with the dead processes' log tails."""
    def registered() -> bool:
        status = _master_status(info.master_webui) or {}
        return int(status.get("aliveworkers", 0)) >= info.workers

    def all_alive() -> bool:
        return all(_alive(p["pid"]) for p in info.processes)

    if not _wait(registered, all_alive, timeout):
        dead = [p for p in info.processes if not _alive(p["pid"])]
        detail = "\n".join(f"--- {p['role']} ({p['log']}):\n{_tail(p['log'])}" for p in (dead or info.processes))
        raise RuntimeError(f"{info.workers} worker(s) did not register with {info.master_url} "
                           f"within {timeout:.0f} s:\n{detail}")
    log.info("%d worker(s) registered, %d core(s) and %d GB each", info.workers, info.cores_per_worker,
             info.memory_gb_per_worker)


def stop_cluster(cluster_dir: str | Path) -> list[int]:
    """Stop every process recorded for the cluster in ``cluster_dir``; returns their pids.

    The watchdog first (so it does not race the teardown), then the workers, then the master. Safe to
    call twice, and on a cluster that only partly started.
    """
    info = ClusterInfo.load(cluster_dir)
    if info is None:
        log.info("no cluster recorded in %s: nothing to stop", cluster_dir)
        return []
    stopped = _stop_processes([p for p in info.processes if p["role"] == WATCHDOG_ROLE]) + _stop_daemons(info)
    log.info("stopped %d cluster process group(s) of %s", len(stopped), cluster_dir)
    return stopped


def stop_spark_daemons(cluster_dir: str | Path) -> list[int]:
    """Stop the cluster's master and workers but not its watchdog: how the watchdog stops an idle cluster."""
    info = ClusterInfo.load(cluster_dir)
    return _stop_daemons(info) if info is not None else []


def _stop_daemons(info: ClusterInfo) -> list[int]:
    from image_pipeline.compute.local.auth import remove_conf

    daemons = [p for p in info.processes if p["role"] != WATCHDOG_ROLE]
    stopped = _stop_processes(sorted(daemons, key=lambda p: p["role"] == "master"))  # workers first
    remove_conf(info.cluster_dir)  # its secret is of no use any more
    return stopped


def terminate_local_cluster(cluster_dir: str | Path) -> dict:
    """The local teardown: stop the cluster, return the backends' cluster summary (cost 0, its pids)."""
    from image_pipeline.compute.contract import cluster_summary

    info = ClusterInfo.load(cluster_dir)
    hours = (time.time() - info.started_unix) / 3600 if info and info.started_unix else 0.0
    stopped = stop_cluster(cluster_dir)
    return cluster_summary(Path(cluster_dir).name, "local", hours, process_ids=stopped,
                           console_link=info.master_webui if info else "")


def cluster_processes_alive(cluster_dir: str | Path) -> list[int]:
    """Pids of the cluster's process groups that are still running (empty once stopped)."""
    info = ClusterInfo.load(cluster_dir)
    if info is None:
        return []
    return [pid for p in info.processes for pid in _session_members(p["pgid"]) if _alive(pid)]
