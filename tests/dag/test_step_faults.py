"""Faults injected into Spark steps running on a real local cluster.

- a Spark worker killed in the middle of extraction: the job completes, one feature row per image;
- the extraction task killed (``on_kill``) while featurizing, a partly written file left in its output,
  then retried: no process of the killed attempt survives, the retry leaves exactly one row per image;
- out of memory and a full disk: the task's error names the cause, not only the exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from image_pipeline.compute.local.cluster import (
    ClusterInfo,
    StepFailedError,
    StepProcess,
    _alive,
    _session_members,
    cluster_env,
    spark_submit_argv,
    start_cluster,
    stop_cluster,
)
from image_pipeline.compute.staging import local_path
from image_tools.sample_images import write_sample_images

pytestmark = pytest.mark.spark

N_CLASSES, PER_CLASS = 6, 60  # two tasks of 180 images: seconds of featurizing to interrupt


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def python_workers(sid: int) -> list[int]:
    """Spark's Python worker processes (pyspark.daemon and its forks) in a worker's session."""
    return [pid for pid in _session_members(sid)
            if Path(cmdline(pid).split(" ")[0]).name.startswith("python") and "pyspark" in cmdline(pid)]


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)


def featurizing(sid: int) -> bool:
    """A Python worker of the session has TensorFlow and the model in memory."""
    return any(rss_mb(pid) > 600 for pid in python_workers(sid))


def executors(sid: int) -> list[int]:
    return [pid for pid in _session_members(sid) if "CoarseGrainedExecutorBackend" in cmdline(pid)]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    write_sample_images(root / "images", n_classes=N_CLASSES, per_class=PER_CLASS, seed=5)
    return root


@pytest.fixture
def out(tmp_path) -> Path:
    """The test's own storage root (features, rejects, runs): every test extracts every image."""
    return tmp_path


@pytest.fixture(scope="module")
def cluster(root, java_home):
    """Two workers of one core each, so one can die while the other finishes the job."""
    info = start_cluster(root / "cluster", workers=2, cores=1, memory_gb=2, python=sys.executable,
                         java_home=java_home)
    yield info
    stop_cluster(root / "cluster")


def make_plan(root: Path, out: Path, run_id: str, weights: Path, n_classes: int | None = None) -> dict:
    """The run plan of a run over ``root``'s images (its first ``n_classes``) that writes under ``out``, its class
    list written where the steps read it, as plan_run writes it."""
    from image_pipeline.planning.run_plan import build_run_plan, write_labels
    from image_pipeline.wiring.params import dag_params
    from image_pipeline.wiring.settings import load_settings

    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": f"file://{out}",
                              "IMAGE_PIPELINE_WEIGHTS_URI": f"file://{weights}"})
    params = {name: param.value for name, param in dag_params(settings).items()}
    params["images_uri"] = f"file://{root}/images"
    # TensorFlow's Python workers: their ~1 GB with the model loaded is what ``featurizing`` and the memory
    # cap of the out-of-memory fault key on, and their pace leaves seconds of featurizing to interrupt
    # (OpenVINO's workers hold a few hundred MB and finish these images about three times sooner)
    params["runtime"] = "tensorflow"
    labels = sorted(p.name for p in (root / "images").iterdir())
    plan = build_run_plan(params, run_id, datetime.now(UTC), settings, labels).as_dict()
    plan["labels"] = plan["labels"][:n_classes]
    write_labels(plan)
    return plan


def step_operator(plan: dict, cluster: ClusterInfo, artifacts: dict):
    from dataclasses import asdict

    from image_pipeline.compute.local.operators import LocalSparkStepOperator

    return LocalSparkStepOperator(task_id="extract_features", step="extract_features", plan=plan,
                                  cluster=asdict(cluster), artifacts=artifacts, python=sys.executable)


def feature_rows(spark, plan: dict, run_key: str):
    """The run's committed feature rows, as every reader sees them (the newest committed attempt)."""
    from image_jobs import storage

    features = storage.read_committed(spark, f"{plan['features_uri']}/backbone=mobilenet_v2")
    return features.filter(features["run"] == run_key).select("path").collect()


@pytest.fixture(scope="module")
def artifacts(root):
    from image_pipeline.compute.staging import stage_local

    return stage_local(f"file://{root}/artifacts")


def test_a_worker_killed_mid_extraction_loses_no_image_and_duplicates_none(spark, root, out, cluster, artifacts,
                                                                           converted_weights):
    plan = make_plan(root, out, "worker_killed", converted_weights)
    operator = step_operator(plan, cluster, artifacts)
    victim = next(p for p in cluster.processes if p["role"] == "worker-1")
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=operator.execute({})), daemon=True)
    thread.start()
    # kill the worker (its JVM, executor and Python workers: the whole process group) once its
    # Python worker has loaded the model and is featurizing
    wait_until(lambda: featurizing(victim["pgid"]), 300, "the model loaded in a Python worker of worker-1")
    time.sleep(1)
    assert featurizing(victim["pgid"]), "worker-1 finished its task before it could be killed"
    for pid in _session_members(victim["pgid"]):
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert outcome.get("result", {}).get("exit_code") == 0, outcome
    paths = [r["path"] for r in feature_rows(spark, plan, plan["run_key"])]
    assert len(paths) == N_CLASSES * PER_CLASS and len(set(paths)) == len(paths)
    assert [pid for pid in _session_members(victim["pgid"]) if _alive(pid)] == []


def test_a_killed_step_leaves_no_process_and_its_retry_no_duplicate(spark, root, out, cluster, artifacts,
                                                                    converted_weights):
    alive = [p for p in cluster.processes if p["role"] != "worker-1"]  # worker-1 was killed above
    plan = make_plan(root, out, "killed_then_retried", converted_weights)
    features = Path(plan["features_uri"].removeprefix("file://")) / "backbone=mobilenet_v2"
    operator = step_operator(plan, cluster, artifacts)
    outcome = {}

    def attempt():
        try:
            outcome["result"] = operator.execute({})
        except StepFailedError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    wait_until(lambda: any(featurizing(p["pgid"]) for p in alive), 300, "the step to be featurizing")
    operator.on_kill()  # what Airflow calls when the task is killed or marked failed from outside
    thread.join(timeout=60)
    assert "was killed" in outcome.get("error", ""), outcome
    driver_pgid = operator._process.proc.pid
    # spark-submit, the driver and its Python are gone
    assert [pid for pid in _session_members(driver_pgid) if _alive(pid)] == []
    for process in alive:  # the cluster stays up for the retry, without the killed run's executors
        wait_until(lambda p=process: not executors(p["pgid"]) and not python_workers(p["pgid"]), 60,
                   f"the killed run's executors on {process['role']} to exit")
    # a partly written file of the killed attempt, as an object store may keep one
    # (the killed attempt's folder, or one like it when the kill came before its write had begun)
    killed = next(iter(features.glob(f"run={plan['run_key']}@*")),
                  features / f"run={plan['run_key']}@20000101T000000000000Z-killed")
    killed.mkdir(parents=True, exist_ok=True)
    (killed / "part-99999-killed-attempt.snappy.parquet").write_bytes(b"PAR1 half written")
    retry = step_operator(plan, cluster, artifacts).execute({})
    assert retry["exit_code"] == 0
    paths = [r["path"] for r in feature_rows(spark, plan, plan["run_key"])]
    assert len(paths) == N_CLASSES * PER_CLASS and len(set(paths)) == len(paths)
    # the retry wrote an attempt of its own; the killed one is never committed, so never read
    attempts = sorted(features.glob(f"run={plan['run_key']}@*"))
    assert len(attempts) == 2 and killed in attempts and not (killed / "_SUCCESS").exists()


def run_failing_step(root: Path, out: Path, cluster: ClusterInfo, artifacts: dict, weights: Path, java_home: str,
                     features_uri: str | None = None, conf: dict[str, str] | None = None) -> str:
    """spark-submit the extraction as the operator does; return the task error it would raise."""
    from image_pipeline.compute.steps import step_by_name

    plan = make_plan(root, out, "fault", weights, n_classes=1)  # one class is enough to fail
    if features_uri:
        plan["features_uri"] = features_uri
    spec = step_by_name(plan, "extract_features")
    argv = spark_submit_argv(cluster, str(Path(local_path(artifacts["entry_dir_uri"])) / spec.entry_script),
                             list(spec.args), local_path(artifacts["jobs_zip_uri"]), sys.executable, "fault")
    at = argv.index("--py-files")
    for key, value in {"spark.task.maxFailures": "1", **(conf or {})}.items():  # fail at the first attempt
        argv[at:at] = ["--conf", f"{key}={value}"]
    process = StepProcess(argv, cluster_env(Path(cluster.cluster_dir), sys.executable, java_home), lambda line: None)
    code = process.run()
    assert code != 0
    return process.failure_message("extract_features", code)


def test_out_of_memory_is_named_as_the_cause(root, out, cluster, artifacts, converted_weights, java_home):
    # Spark caps each Python worker's address space: the model no longer fits
    message = run_failing_step(root, out, cluster, artifacts, converted_weights, java_home,
                               conf={"spark.executor.pyspark.memory": "1200m"})
    headline = message.splitlines()[0]
    assert headline.startswith("step extract_features failed with exit code 1; cause: out of memory"), \
        message[-3000:]
    # a capped worker fails where its next allocation does: a MemoryError, loading TensorFlow's library, or
    # the stack of a photo-reading thread
    assert any(evidence in headline for evidence in ("MemoryError", "failed to map segment",
                                                     "can't start new thread")), headline


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB file system (tmpfs), where the features cannot fit; needs root."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_named_as_the_cause(root, out, cluster, artifacts, converted_weights, java_home,
                                           small_disk):
    message = run_failing_step(root, out, cluster, artifacts, converted_weights, java_home,
                               features_uri=f"file://{small_disk}/features")
    headline = message.splitlines()[0]
    assert "cause: disk full" in headline and "No space left on device" in headline, headline
    assert f"{small_disk}/features/backbone=mobilenet_v2" in headline  # where it happened
