"""The local transient cluster: starts on free ports, registers its workers, stops without leftovers,
and stops itself once idle for the idle timeout (its watchdog), also when its owner was killed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dag_runs import leftover_processes
from image_pipeline.compute.local.cluster import (
    ClusterInfo,
    _master_status,
    _start_watchdog,
    cluster_env,
    cluster_processes_alive,
    spark_home,
    start_cluster,
    stop_cluster,
)
from image_pipeline.compute.local.health import gone_reason
from image_pipeline.compute.local.supervision import _alive
from image_pipeline.wiring.settings import load_settings

pytestmark = pytest.mark.spark

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
IDLE_MINUTES = 0.1  # 6 s; every wait for the watchdog allows a generous minute on top


def stop_line(minutes: float) -> re.Pattern:
    return re.compile(rf"idle for (\d+) s with no application: stopping the cluster \(idle timeout {minutes:g} min\)")

# started by a child process that is then SIGKILLed, as when Airflow is killed as a whole
START_AND_HANG = """
import sys, time
from pathlib import Path
from image_pipeline.compute.local.cluster import start_cluster
start_cluster(Path(sys.argv[1]), workers=1, cores=1, memory_gb=1, python=sys.executable, java_home=sys.argv[2],
              idle_timeout_minutes=float(sys.argv[3]))
print("cluster started", flush=True)
time.sleep(3600)
"""

# an application that stays registered longer than the idle timeout and needs its executor at the end
SLOW_APP = """
import sys, time
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("slow-app").getOrCreate()
first = spark.sparkContext.parallelize(range(100), 2).sum()
time.sleep(float(sys.argv[1]))
second = spark.sparkContext.parallelize(range(100), 2).sum()
print(f"sums {first} {second}", flush=True)
spark.stop()
"""


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def watchdog_log(cluster_dir: Path) -> str:
    return (cluster_dir / "logs" / "watchdog.log").read_text()


def daemons(info: ClusterInfo) -> list[dict]:
    return [p for p in info.processes if p["role"] != "watchdog"]


def test_two_clusters_at_once_do_not_collide_and_stop_cleanly(java_home, tmp_path):
    a = start_cluster(tmp_path / "a", workers=1, cores=1, memory_gb=1, python=sys.executable, java_home=java_home,
                      idle_timeout_minutes=0)  # 0: no watchdog
    try:
        b = start_cluster(tmp_path / "b", workers=2, cores=1, memory_gb=1, python=sys.executable,
                          java_home=java_home)
        try:
            assert a.master_url != b.master_url and a.master_webui != b.master_webui
            assert _master_status(a.master_webui)["aliveworkers"] == 1
            assert _master_status(b.master_webui)["aliveworkers"] == 2
            recorded = json.loads((tmp_path / "b" / "cluster.json").read_text())
            assert recorded["master_url"] == b.master_url
            assert sorted(p["role"] for p in recorded["processes"]) == ["master", "watchdog", "worker-0", "worker-1"]
            assert [p["role"] for p in a.processes] == ["master", "worker-0"]
            assert ClusterInfo.load(tmp_path / "b").processes == b.processes
            assert cluster_processes_alive(tmp_path / "b")
        finally:
            stop_cluster(tmp_path / "b")
        assert cluster_processes_alive(tmp_path / "b") == []
        assert _master_status(a.master_webui)["aliveworkers"] == 1  # the other run's cluster is untouched
    finally:
        stop_cluster(tmp_path / "a")
    assert cluster_processes_alive(tmp_path / "a") == []
    stop_cluster(tmp_path / "a")  # stopping twice is harmless
    assert cluster_processes_alive(tmp_path / "a") == []
    assert stop_cluster(tmp_path / "never_started") == []


def test_a_failed_start_leaves_nothing_running(java_home, tmp_path):
    with pytest.raises(RuntimeError, match="did not register"):
        # a worker asking for more memory than the JVM flag allows exits at once
        start_cluster(tmp_path / "c", workers=1, cores=1, memory_gb=0, python=sys.executable, java_home=java_home,
                      timeout=30)
    assert cluster_processes_alive(tmp_path / "c") == []


def test_a_cluster_whose_owner_was_killed_stops_itself_after_the_idle_timeout(java_home, tmp_path):
    cluster_dir = tmp_path / "orphaned"
    owner = subprocess.Popen([sys.executable, "-c", START_AND_HANG, str(cluster_dir), java_home, str(IDLE_MINUTES)],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PLUGINS)})
    try:
        try:
            assert owner.stdout.readline().strip() == "cluster started"
        finally:
            owner.kill()  # SIGKILL: no teardown, no finally, no atexit in the owner
        assert owner.wait() == -signal.SIGKILL
        roles = [p["role"] for p in ClusterInfo.load(cluster_dir).processes]
        assert sorted(roles) == ["master", "watchdog", "worker-0"]
        assert gone_reason(cluster_dir) is None  # up, with its worker: a step may be submitted
        wait_until(lambda: not cluster_processes_alive(cluster_dir), IDLE_MINUTES * 60 + 60,
                   "the orphaned cluster to stop itself")
        log = watchdog_log(cluster_dir)
        assert len(stop_line(IDLE_MINUTES).findall(log)) == 1, log
        assert "stopped the cluster's master and workers" in log
        assert leftover_processes(str(cluster_dir)) == []  # the watchdog exited too
        # a step retried now fails at once with the watchdog's line (its time included) and what to do
        reason = gone_reason(cluster_dir)
        assert stop_line(IDLE_MINUTES).search(reason) and "its watchdog stopped it after the idle timeout" in reason
    finally:
        stop_cluster(cluster_dir)


def test_a_running_application_is_never_stopped_and_the_idle_cluster_is_after_it(java_home, tmp_path):
    cluster_dir = tmp_path / "busy"
    # a new cluster waiting for its first application is idle, and spark-submit may take longer than
    # 6 s to start on a loaded machine: the watchdog joins (as start_cluster starts it) once the
    # application runs, so from its first look the application stays active 1.5 idle timeouts
    info = start_cluster(cluster_dir, workers=1, cores=1, memory_gb=1, python=sys.executable, java_home=java_home,
                         idle_timeout_minutes=0)
    env = cluster_env(cluster_dir, sys.executable, java_home)  # with the cluster's secret, made by start_cluster
    try:
        (tmp_path / "slow_app.py").write_text(SLOW_APP)
        argv = [str(Path(spark_home()) / "bin" / "spark-submit"), "--master", info.master_url,
                "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
                "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=512m",
                str(tmp_path / "slow_app.py"), str(IDLE_MINUTES * 60 * 1.5)]
        with (tmp_path / "app.out").open("w") as out, (tmp_path / "app.err").open("w") as err:
            app = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        wait_until(lambda: app.poll() is not None or (_master_status(info.master_webui) or {}).get("activeapps"),
                   180, "the application to register with the master")
        info.idle_timeout_minutes = IDLE_MINUTES
        _start_watchdog(info, sys.executable, env, start_grace=0)
        code = app.wait(timeout=300)
        # the moment the application ended: the cluster is whole, the watchdog saw it and stopped nothing
        alive_at_app_end = [p["role"] for p in daemons(info) if _alive(p["pid"])]
        log_at_app_end = watchdog_log(cluster_dir)
        assert code == 0, (tmp_path / "app.err").read_text()[-4000:] + log_at_app_end
        assert "sums 4950 4950" in (tmp_path / "app.out").read_text()
        assert sorted(alive_at_app_end) == ["master", "worker-0"]
        assert "application(s) running: slow-app" in log_at_app_end
        assert not stop_line(IDLE_MINUTES).search(log_at_app_end), log_at_app_end
        wait_until(lambda: not cluster_processes_alive(cluster_dir), IDLE_MINUTES * 60 + 60,
                   "the idle cluster to stop itself")
        log = watchdog_log(cluster_dir)
        stops = [int(seconds) for seconds in stop_line(IDLE_MINUTES).findall(log)]
        assert len(stops) == 1 and stops[0] >= IDLE_MINUTES * 60, log
        assert log.index("application(s) running: slow-app") < log.index("no application running")
    finally:
        stop_cluster(cluster_dir)


def test_stop_cluster_stops_the_watchdog_too(java_home, tmp_path):
    cluster_dir = tmp_path / "torn_down"
    info = start_cluster(cluster_dir, workers=1, cores=1, memory_gb=1, python=sys.executable, java_home=java_home)
    try:
        watchdog = next(p for p in info.processes if p["role"] == "watchdog")
        assert _alive(watchdog["pid"]) and watchdog["log"] == str(cluster_dir / "logs" / "watchdog.log")
    finally:
        stopped = stop_cluster(cluster_dir)
    assert sorted(stopped) == sorted(p["pid"] for p in info.processes)
    assert cluster_processes_alive(cluster_dir) == [] and leftover_processes(str(cluster_dir)) == []
    log = watchdog_log(cluster_dir)
    assert "stops after 60 min with no application" in log
    assert "asked to stop (the cluster is being stopped): exiting" in log and "stopping the cluster" not in log


def test_the_idle_timeout_setting_allows_fractions_and_zero_and_names_itself_when_bad():
    name = "IMAGE_PIPELINE_LOCAL_IDLE_TIMEOUT_MINUTES"
    assert load_settings({}).local_idle_timeout_minutes == 60
    assert load_settings({name: "0.1"}).local_idle_timeout_minutes == 0.1
    assert load_settings({name: "0"}).local_idle_timeout_minutes == 0
    for bad in ("-1", "an hour", "", "nan", "inf"):
        with pytest.raises(ValueError, match=re.escape(f"{name}={bad!r}: give a number of minutes >= 0")):
            load_settings({name: bad})


def test_the_watchdog_imports_neither_airflow_nor_spark():
    probe = ("import sys, image_pipeline.compute.local.watchdog; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow', 'pyspark', 'pandas', 'numpy'}))")
    result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(PLUGINS)},
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


PI_APP = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("probe").getOrCreate()
print("sum", spark.sparkContext.parallelize(range(10), 2).sum(), flush=True)
spark.stop()
"""


def refused_submit_output(master_url: str, app: Path, env: dict) -> str:
    """spark-submit ``app`` without the cluster's secret; its output up to the master's refusal (or its end),
    then its process group is stopped."""
    process = subprocess.Popen([str(Path(spark_home()) / "bin" / "spark-submit"), "--master", master_url, str(app)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines, deadline = [], time.monotonic() + 120
    try:
        for line in process.stdout:
            lines.append(line)
            if "Expected SaslMessage" in line or time.monotonic() > deadline:
                break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    return "".join(lines)


def test_only_holders_of_the_clusters_secret_can_submit(java_home, tmp_path):
    """spark.authenticate with a secret made per cluster: a submit without it (any other local user) is refused;
    the secret is in no command line, log or cluster.json. The cluster's own submits hold it (every DAG test)."""
    from image_pipeline.compute.local.auth import conf_dir

    cluster_dir = tmp_path / "secured"
    info = start_cluster(cluster_dir, workers=1, cores=1, memory_gb=1, python=sys.executable, java_home=java_home,
                         idle_timeout_minutes=0)
    app = tmp_path / "probe.py"
    app.write_text(PI_APP)
    try:
        defaults = conf_dir(cluster_dir) / "spark-defaults.conf"
        assert defaults.stat().st_mode & 0o777 == 0o600 and conf_dir(cluster_dir).stat().st_mode & 0o777 == 0o700
        secret = re.search(r"^spark\.authenticate\.secret\s+(\S+)$", defaults.read_text(), re.M).group(1)
        assert len(secret) == 64 and "spark.authenticate              true" in defaults.read_text()
        # the cluster's own submits (every DAG test's steps) hold the secret; another local user can only guess it
        env = {**cluster_env(cluster_dir, sys.executable, java_home), "SPARK_CONF_DIR": str(tmp_path / "no-conf")}
        (tmp_path / "no-conf").mkdir()
        output = refused_submit_output(info.master_url, app, env)
        # the master answers its first registration with SASL's refusal (spark-submit would retry for a minute,
        # then give up with "All masters are unresponsive"; stopped here once the refusal is in)
        assert "Expected SaslMessage, received something else" in output, output[-3000:]
        assert "sum 45" not in output
        assert _master_status(info.master_webui)["activeapps"] == []  # nothing of it ran
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        files = [p for p in cluster_dir.rglob("*") if p.is_file() and p != defaults]
        assert [p for p in files if secret.encode() in p.read_bytes()] == []
    finally:
        stop_cluster(cluster_dir)
    assert not conf_dir(cluster_dir).exists()  # the secret goes with the cluster
