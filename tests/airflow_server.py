"""A real Airflow (``airflow standalone``: API server, scheduler, DAG processor, triggerer, LocalExecutor)
on free 127.0.0.1 ports with an isolated home, for the tests that need a scheduler and the REST API; and what
those tests ask it (trigger a run, wait for it, its task instances) and look for on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from image_pipeline.compute.local.cluster import free_port
from project_paths import PROJECT_ROOT

PASSWORD = "ui-test-password"
DAG_ID = "image_classification"
# a credential the Airflow server's environment and AWS connection carry; no output of a run may contain it
UI_FAKE_SECRET = "fake/Secret+Key-ui-5e8a1f"

# a run small enough for the local machine: what the runs of the tests under a real scheduler trigger with
SMALL = {"max_per_class": 12, "split_ratios": [0.5], "pca_components": 8, "iterations": 20,
         "local_worker_cores": 1, "local_worker_memory_gb": 2, "min_accuracy": 0.3}


def http_json(url: str, token: str | None = None, data: dict | None = None, method: str | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                     method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(condition, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"airflow exited with {proc.returncode} while waiting for {what}")
        time.sleep(2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def trigger(server, conf: dict) -> str:
    run = http_json(f"{server['base']}/api/v2/dags/{DAG_ID}/dagRuns", server["token"],
                    data={"logical_date": None, "conf": conf})
    return run["dag_run_id"]


def run_state(server, run_id: str) -> str:
    return http_json(f"{server['base']}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", server["token"])["state"]


def wait_finished(server, run_id: str, timeout: float = 900) -> str:
    return wait_for(lambda: (s := run_state(server, run_id)) in ("success", "failed") and s, timeout,
                    f"run {run_id} to finish")


def task_instances(server, run_id: str) -> dict[str, dict]:
    tis = http_json(f"{server['base']}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", server["token"])
    return {ti["task_id"]: ti for ti in tis["task_instances"]}


def processes_mentioning(marker: str) -> list[str]:
    """Command lines of live (not zombie) processes that mention ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(cmdline)
    return found


def intervals_overlap(a: dict, b: dict) -> bool:
    """Whether two task instances (or runs) of the REST API were running at the same time."""
    return a["start_date"] < b["end_date"] and b["start_date"] < a["end_date"]


@contextmanager
def standalone_airflow(home: Path, root: Path, weights: Path, java_home: str, extra_env: dict[str, str]):
    """Yield {"base", "token", "root", "home"} of a running Airflow whose DAGs use ``root`` as storage root."""
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": PASSWORD}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "IMAGE_PIPELINE_ROOT_URI": f"file://{root}",
        "IMAGE_PIPELINE_WEIGHTS_URI": f"file://{weights}",
        # SQLite writers wait for the lock up to a minute (see airflow_config/sqlite_connect.py)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "sqlite_connect.CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "sqlite_connect.CONNECT_ARGS",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent / "airflow_config"),
                                                    os.environ.get("PYTHONPATH")])),
        "IMAGE_PIPELINE_SCHEDULE": "none",  # only the runs the tests trigger
        "IMAGE_PIPELINE_SCORING_SCHEDULE": "none",  # scoring only on the model Asset's events
        "IMAGE_PIPELINE_RETRIES": "0",
        "JAVA_HOME": java_home,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **extra_env,
    })
    log = (home / "standalone.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_json(f"{base}/api/v2/version"), 180, "the API server", proc)
        token = http_json(f"{base}/auth/token", data={"username": "admin", "password": PASSWORD})["access_token"]
        wait_for(lambda: http_json(f"{base}/api/v2/dags/{DAG_ID}", token), 180, "the DAG", proc)
        yield {"base": base, "token": token, "root": root, "home": home}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # standalone stops its components on SIGINT
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
