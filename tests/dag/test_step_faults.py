"""Faults injected into Spark steps running on a real local cluster, on the default runtime (OpenVINO).

- a damaged IR beside the weights: exported again, named in the step's output, the run undisturbed;
- a Spark worker killed in the middle of extraction: the job completes, one feature row per image, each
  equal to the undisturbed run's;
- the extraction task killed (``on_kill``) while featurizing, a partly written file left in its output,
  then retried: no process of the killed attempt survives, the retry leaves exactly one row per image,
  each equal to the undisturbed run's;
- out of memory (OpenVINO's worker and TensorFlow's) and a full disk: the task's error names the cause,
  not only the exit code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from image_pipeline.compute.local.cluster import ClusterInfo, cluster_env, start_cluster, stop_cluster
from image_pipeline.compute.local.submit import StepFailedError, StepProcess, spark_submit_argv
from image_pipeline.compute.local.supervision import _alive, _session_members
from image_pipeline.compute.staging import local_path
from image_tools.sample_images import write_sample_images

pytestmark = pytest.mark.spark

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# six tasks of 200 images: OpenVINO featurizes them in several seconds on the two workers, a window to hit
N_CLASSES, PER_CLASS = 6, 200
# the runtime test's tolerance for OpenVINO fp32 (tests/model/test_inference.py)
TOLERANCE = 1e-4
# a Python worker's address-space cap that OpenVINO's worker exceeds (TensorFlow's fails under 1200m)
OPENVINO_CAP = "700m"


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


def has_compiled_openvino_model(pid: int) -> bool:
    """OpenVINO's CPU plugin is in the process's memory maps: it compiled the IR (only compiling loads it)."""
    try:
        return "libopenvino_intel_cpu_plugin" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def featurizing(sid: int) -> bool:
    """A Python worker of the session holds the model: OpenVINO's compiled IR, or TensorFlow's ~1 GB."""
    return any(has_compiled_openvino_model(pid) or rss_mb(pid) > 600 for pid in python_workers(sid))


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


@pytest.fixture(scope="module")
def weights(root, converted_weights) -> Path:
    """A copy of the weights with their OpenVINO IR exported beside them, as ``make weights`` leaves them."""
    weights = root / "weights" / converted_weights.name
    weights.parent.mkdir()
    shutil.copyfile(converted_weights, weights)
    done = subprocess.run([sys.executable, "-m", "image_jobs.openvino_runtime", "--backbone", "mobilenet_v2",
                           "--weights", str(weights)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "spark_jobs")})
    assert done.returncode == 0, done.stderr[-3000:]
    return weights


def make_plan(root: Path, out: Path, run_id: str, weights: Path, n_classes: int | None = None,
              runtime: str = "openvino") -> dict:
    """The run plan of a run over ``root``'s images (its first ``n_classes``) that writes under ``out``, its class
    list written where the steps read it, as plan_run writes it. OpenVINO runs at fp32, the precision whose
    features the runtime test holds to ``TOLERANCE``."""
    from image_pipeline.planning.run_plan import build_run_plan, write_labels
    from image_pipeline.wiring.params import dag_params
    from image_pipeline.wiring.settings import load_settings

    settings = load_settings({"IMAGE_PIPELINE_ROOT_URI": f"file://{out}",
                              "IMAGE_PIPELINE_WEIGHTS_URI": f"file://{weights}"})
    params = {name: param.value for name, param in dag_params(settings).items()}
    params["images_uri"] = f"file://{root}/images"
    params["runtime"], params["precision"] = runtime, "fp32"
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


def execute_keeping_output(operator) -> tuple[dict, list[str]]:
    """Run the step's operator; its result and every line of spark-submit's output it logged."""
    from image_pipeline.compute.local import submit

    lines, real = [], submit.StepProcess

    def tee(argv, env, on_line, **options):
        return real(argv, env, lambda line: (lines.append(line), on_line(line)), **options)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(submit, "StepProcess", tee)  # the operator imports it from submit when it runs
        return operator.execute({}), lines


def feature_rows(spark, plan: dict, run_key: str) -> list[tuple[str, np.ndarray]]:
    """The run's committed feature rows (path, features), as every reader sees them (the newest committed
    attempt)."""
    from image_jobs import storage

    features = storage.read_committed(spark, f"{plan['features_uri']}/backbone=mobilenet_v2")
    rows = features.filter(features["run"] == run_key).select("path", "features").collect()
    return [(row["path"], np.array(row["features"], np.float32)) for row in rows]


def assert_one_row_per_photo_as_undisturbed(rows: list[tuple[str, np.ndarray]], undisturbed: dict) -> None:
    """Every photo has exactly one feature row, equal to the undisturbed run's within the runtime's tolerance."""
    paths = [path for path, _ in rows]
    assert len(paths) == N_CLASSES * PER_CLASS and len(set(paths)) == len(paths)
    assert set(paths) == set(undisturbed)
    worst = max(float(np.abs(features - undisturbed[path]).max() / np.abs(undisturbed[path]).max())
                for path, features in rows)
    assert worst <= TOLERANCE, f"a feature row differs from the undisturbed run's by {worst:.2e} (relative)"


@pytest.fixture(scope="module")
def artifacts(root):
    from image_pipeline.compute.staging import stage_local

    return stage_local(f"file://{root}/artifacts")


def truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


@pytest.fixture(scope="module")
def undisturbed(spark, root, tmp_path_factory, cluster, artifacts, weights):
    """The extraction run nothing disturbs, started with the IR beside the weights cut short (a disk that
    filled up during ``make weights``): its features by path, its output lines, the IR's .bin."""
    from image_jobs.openvino_runtime import ir_path

    xml = ir_path("mobilenet_v2", weights)
    truncate(xml.with_suffix(".bin"), 1_000_000)
    plan = make_plan(root, tmp_path_factory.mktemp("undisturbed"), "undisturbed", weights)
    result, lines = execute_keeping_output(step_operator(plan, cluster, artifacts))
    assert result["exit_code"] == 0
    return dict(feature_rows(spark, plan, plan["run_key"])), lines, xml.with_suffix(".bin")


def test_a_damaged_ir_beside_the_weights_is_named_and_exported_again(undisturbed):
    from image_jobs.ir_digests import ir_problem, read_digests

    features, lines, bin_ = undisturbed
    named = [line for line in lines if f"OpenVINO IR file {bin_} (1000000 bytes) does not match its digest" in line]
    assert named and "exporting it again" in named[0], lines[-40:]
    xml = bin_.with_suffix(".xml")
    assert bin_.stat().st_size > 8_000_000 and ir_problem(xml, read_digests(xml)) is None
    assert len(features) == N_CLASSES * PER_CLASS


def test_a_worker_killed_mid_extraction_loses_no_image_and_duplicates_none(spark, root, out, cluster, artifacts,
                                                                           weights, undisturbed):
    plan = make_plan(root, out, "worker_killed", weights)
    operator = step_operator(plan, cluster, artifacts)
    victim = next(p for p in cluster.processes if p["role"] == "worker-1")
    # the undisturbed run's Python workers exit with its executors: what is found featurizing is this run's
    wait_until(lambda: not featurizing(victim["pgid"]), 60, "the earlier run's Python workers to exit")
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=operator.execute({})), daemon=True)
    thread.start()
    # kill the worker (its JVM, executor and Python workers: the whole process group) once its
    # Python worker has loaded the model and is featurizing
    wait_until(lambda: featurizing(victim["pgid"]), 300, "the model loaded in a Python worker of worker-1")
    time.sleep(1)
    assert featurizing(victim["pgid"]) and "result" not in outcome, "the step ended before worker-1 could be killed"
    for pid in _session_members(victim["pgid"]):
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert outcome.get("result", {}).get("exit_code") == 0, outcome
    assert_one_row_per_photo_as_undisturbed(feature_rows(spark, plan, plan["run_key"]), undisturbed[0])
    assert [pid for pid in _session_members(victim["pgid"]) if _alive(pid)] == []


def test_a_killed_step_leaves_no_process_and_its_retry_no_duplicate(spark, root, out, cluster, artifacts,
                                                                    weights, undisturbed):
    alive = [p for p in cluster.processes if p["role"] != "worker-1"]  # worker-1 was killed above
    plan = make_plan(root, out, "killed_then_retried", weights)
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
    assert "result" not in outcome, "the step ended before it could be killed"
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
    assert_one_row_per_photo_as_undisturbed(feature_rows(spark, plan, plan["run_key"]), undisturbed[0])
    # the retry wrote an attempt of its own; the killed one is never committed, so never read
    attempts = sorted(features.glob(f"run={plan['run_key']}@*"))
    assert len(attempts) == 2 and killed in attempts and not (killed / "_SUCCESS").exists()


def run_failing_step(root: Path, out: Path, cluster: ClusterInfo, artifacts: dict, weights: Path, java_home: str,
                     features_uri: str | None = None, conf: dict[str, str] | None = None,
                     runtime: str = "openvino") -> str:
    """spark-submit the extraction as the operator does; return the task error it would raise."""
    from image_pipeline.compute.steps import step_by_name

    plan = make_plan(root, out, "fault", weights, n_classes=1, runtime=runtime)  # one class is enough to fail
    if features_uri:
        plan["features_uri"] = features_uri
    spec = step_by_name(plan, "extract_features")
    argv = spark_submit_argv(cluster, str(Path(local_path(artifacts["entry_dir_uri"])) / spec.entry_script),
                             list(spec.args), local_path(artifacts["jobs_zip_uri"]), sys.executable, "fault")
    at = argv.index("--py-files")
    for key, value in {"spark.task.maxFailures": "1", **(conf or {})}.items():  # fail at the first attempt
        argv[at:at] = ["--conf", f"{key}={value}"]
    process = StepProcess(argv, cluster_env(Path(cluster.cluster_dir), sys.executable, java_home), lambda line: None,
                          work_dir=Path(cluster.cluster_dir) / "work")
    code = process.run()
    assert code != 0
    return process.failure_message("extract_features", code)


@pytest.mark.parametrize("runtime,cap", [("openvino", OPENVINO_CAP), ("tensorflow", "1200m")])
def test_out_of_memory_is_named_as_the_cause(root, out, cluster, artifacts, weights, java_home, runtime, cap):
    # Spark caps each Python worker's address space: the model no longer fits
    message = run_failing_step(root, out, cluster, artifacts, weights, java_home,
                               conf={"spark.executor.pyspark.memory": cap}, runtime=runtime)
    headline = message.splitlines()[0]
    assert headline.startswith("step extract_features failed with exit code 1; cause: out of memory"), \
        message[-3000:]
    # a capped worker fails where its next allocation does: a MemoryError (OpenVINO's names the cap), loading
    # TensorFlow's library, the stack of a photo-reading thread, or a native thread's own memory, which aborts
    # the worker (then the executor's log says so, and the headline names that log)
    assert any(evidence in headline for evidence in (
        "MemoryError", "failed to map segment", "can't start new thread",
        "cannot allocate memory for thread-local data")), headline


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
