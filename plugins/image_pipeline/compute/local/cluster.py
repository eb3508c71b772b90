"""A transient Spark standalone cluster on this machine: master + workers as local processes.

The local twin of an EMR cluster: ``start_cluster`` starts a master and N workers bound to 127.0.0.1
on free ports (so two runs never collide), waits until every worker has registered and records pids,
ports and log files in ``<cluster_dir>/cluster.json`` as it goes; ``submit_step`` runs spark-submit
against the master with an argument list (never a shell); ``stop_cluster`` stops every process of
the cluster (executors and Python workers included: each daemon leads its own process group).
Like EMR's auto-termination policy, a watchdog started with the cluster (``watchdog.py``, in a session
of its own) stops the master and workers once no application ran for the idle timeout, so a cluster
whose owner was killed does not run on forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from image_pipeline.compute.contract import DRIVER_HEAP_MIB, DRIVER_MAX_RESULT_MIB
from image_pipeline.wiring.settings import DEFAULT_LOCAL_IDLE_TIMEOUT_MINUTES, PROJECT_ROOT

log = logging.getLogger(__name__)

CLUSTER_FILE = "cluster.json"
SPARK_CONF_DIR = PROJECT_ROOT / "conf"
START_ATTEMPTS = 3
WATCHDOG_ROLE = "watchdog"
# the causes an executor's log may add to a step's diagnosis
WORKER_CAUSES = ("cause: out of memory", "cause: disk full", "cause: inference runtime")


class StepFailedError(RuntimeError):
    """A Spark step exited non-zero; the message carries the tail of its output."""


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


def _master_status(webui: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{webui}/json/", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return ""


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
