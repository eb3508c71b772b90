"""Benchmark: the training and evaluation jobs at 10,000, 100,000 and 1,000,000 feature rows: seconds, memory.

    make bench-scale                                              # 10,000, 100,000 and 1,000,000 rows
    make bench-scale BENCH_ARGS="--sizes 10000,100000 --keep"     # keep (and reuse) the generated features
    make bench-scale BENCH_ARGS="--old-sizes ''"                  # without the previous job
    make bench-scale BENCH_ARGS="--live-heap-every 0"             # no forced GCs: the reference phase timings
    make bench-scale BENCH_ARGS="--sizes 100000 --old-sizes '' --grid default --cv-max-rows 20000"
                                                                  # the model selection's cost at its default grid

Per size N it writes N synthetic 1,280-d float32 feature rows of 131 classes (the fruits study's count; one
Gaussian cluster per class around a normal(0, 1) centre, noise 4.75: 10,000 rows give about 86% accuracy, more
rows more, as the PCA finds the classes' directions better) with pyarrow, 20,000 rows per Parquet part file,
never N rows in memory, as the extraction job's committed partition ``backbone=synthetic/run=bench/`` with its
feature identity and an extraction summary.
Then, in fresh processes: a local Spark standalone cluster (the product's ``local.cluster``: one worker, 2
cores, 4 GB, executors 3g) and ``spark-submit`` of spark_jobs/train_models.py, then evaluate_models.py,
with the driver memory EMR gives on m5.xlarge (``capacity.spark_defaults``). Every 0.5 s while a job runs it
samples the driver JVM's heap used (``jstat -gc``: survivors + eden + old generation) and RSS, the driver
Python's RSS, and the executors' RSS (executor JVM + Python daemon and workers: the worker's descendants).
The heap used at a sample is mostly eden waiting for its next young GC, so its peak is not steady; by default
(``--live-heap-every 5``) it also forces a full GC of the driver every 5 s (``jcmd GC.run``) and takes the old
generation right after it: the peak of the live data, the driver heap figure the targets use (the raw sampled
peak is printed beside it). The forced GCs cost some seconds: ``--live-heap-every 0`` gives the reference
phase timings (and no live heap).

It prints per N the training summary's seconds per phase (reduce, selection, multiclass, pairwise, total),
the evaluate job's wall seconds, seconds per 1,000 rows, the driver and executor peaks and the multiclass
accuracy; then the issue's ratios: driver live heap peak at the largest / the smallest N (target <= 1.5) and
seconds per 1,000 rows at the largest / the second largest N (target <= 1.5).
At the smallest N, after the jobs (cluster stopped, features still on disk), "today's fit on the same data":
the feature rows standardised and reduced with the new job's multiclass/model.json arrays as
``predictor.MulticlassModel`` does, scikit-learn's ``LogisticRegression`` with the model's C
(``selection.fit_logistic``) fitted on the job's training rows (every row not in its test_predictions) and
scored on its test rows; it prints the job's (Spark ML) accuracy, scikit-learn's and the difference (target:
within 0.5 points), and model.json's own classifier on the rows as reduced here (a check of the reduction).
For the ``--old-sizes`` it also runs the training job as of commit d5a81ec (exported with ``git archive``,
read-only) on the same data and cluster, with a timeout, and prints its accuracy beside the new one, or its
error: the two jobs hold out different test rows, so that difference is not like for like.
Logs, summaries and reports stay in ``--work-dir`` (features too with ``--keep``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 131
DIM = 1280
CHUNK_ROWS = 20_000
BACKBONE = "synthetic"
RUN_KEY = "bench"
MODIFIED_BEFORE = "2100-01-01T00:00:00Z"
IDENTITY = {"weights_digest": "sha256:" + "5a" * 32, "precision_class": "fp32"}
OLD_COMMIT = "d5a81ec"
SAMPLE_SECONDS = 0.5
MB = 1024 * 1024
# the training arguments: small enough for 2 cores, the same at every size
TRAIN_OPTIONS = ["--pair-mode", "one_vs_each", "--focus-class", "class_000", "--split-ratios", "0.5",
                 "--max-per-class", "200", "--pca-components", "64", "--test-fraction", "0.2", "--seed", "0"]
# the model selection's grid: small by default; --grid default measures the job's own (3 reductions x 4 C x 5 folds)
SMALL_GRID = ["--reductions", "64", "--c-grid", "0.01,1.0", "--cv-folds", "3"]


# ---- the synthetic feature rows ----------------------------------------------------------------------------

def feature_schema():
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("label", pa.string()), ("features", pa.list_(pa.float32())),
                      ("length", pa.int64()), ("modificationTime", pa.timestamp("us", tz="UTC")),
                      ("width", pa.int32()), ("height", pa.int32()), ("weights_digest", pa.string()),
                      ("precision_class", pa.string())])


def chunk_table(centres: np.ndarray, start: int, stop: int, noise: float, seed: int):
    """Rows ``start..stop``: row i is of class i mod 131, its path unique (class folder, number in the class)."""
    import pyarrow as pa

    rows = np.arange(start, stop)
    classes, numbers = rows % CLASSES, rows // CLASSES
    rng = np.random.default_rng([seed, start])
    x = rng.standard_normal((len(rows), DIM), dtype=np.float32)
    x *= np.float32(noise)
    x += centres[classes]
    offsets = pa.array(np.arange(0, (len(rows) + 1) * DIM, DIM, dtype=np.int32))
    n = len(rows)
    return pa.table({
        "path": [f"file:/bench/images/class_{c:03d}/{i:06d}.jpg" for c, i in zip(classes, numbers, strict=True)],
        "label": [f"class_{c:03d}" for c in classes],
        "features": pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1))),
        "length": np.full(n, 1000, dtype=np.int64),
        "modificationTime": pa.array([1577836800_000000] * n, pa.timestamp("us", tz="UTC")),
        "width": np.full(n, 224, dtype=np.int32), "height": np.full(n, 224, dtype=np.int32),
        "weights_digest": [IDENTITY["weights_digest"]] * n, "precision_class": [IDENTITY["precision_class"]] * n,
    }, schema=feature_schema())


def generate(data: Path, n: int, noise: float, seed: int) -> Path:
    """N rows as the committed partition ``<data>/features/backbone=synthetic/run=bench/`` and the extraction
    summary (reused when a complete set of the same N, noise and seed is there); returns ``data``."""
    import pyarrow.parquet as pq

    marker, recipe = data / ".complete", json.dumps({"n": n, "noise": noise, "seed": seed})
    if marker.exists() and marker.read_text() == recipe:
        return data
    shutil.rmtree(data, ignore_errors=True)
    run = data / "features" / f"backbone={BACKBONE}" / f"run={RUN_KEY}"
    run.mkdir(parents=True)
    started = time.perf_counter()
    centres = np.random.default_rng(seed).normal(0, 1, (CLASSES, DIM)).astype(np.float32)
    for part, start in enumerate(range(0, n, CHUNK_ROWS)):
        table = chunk_table(centres, start, min(n, start + CHUNK_ROWS), noise, seed)
        pq.write_table(table, run / f"part-{part:05d}.snappy.parquet", compression="snappy")
    (run / "_SUCCESS").touch()
    (data / "extract_summary.json").write_text(json.dumps({"feature_identity": {"backbone": BACKBONE, **IDENTITY}}))
    marker.write_text(recipe)
    size = sum(p.stat().st_size for p in run.iterdir()) / 1e9
    progress(f"generated {n:,} rows ({size:.2f} GB of Parquet) in {time.perf_counter() - started:.0f} s")
    return data


# ---- the jobs' code: today's and the previous one --------------------------------------------------------------

def build_zips(work: Path) -> tuple[Path, Path]:
    """(today's jobs zip, the jobs zip of OLD_COMMIT), each next to its entry scripts: today's copied with the
    zip (a snapshot: the working tree may change during a long run), the old commit's in ``<work>/old``."""
    out = subprocess.run([sys.executable, "-m", "image_pipeline.compute.jobs_archive", "--out", str(work / "dist")],
                         env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")}, cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    for script in ("train_models.py", "evaluate_models.py"):
        shutil.copy(ROOT / "spark_jobs" / script, work / "dist" / script)
    old = work / "old"
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir(parents=True)
    archive = work / "old.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), OLD_COMMIT, "spark_jobs"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(old, filter="data")
    archive.unlink()
    old_zip = old / "image_jobs.zip"
    with zipfile.ZipFile(old_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((old / "spark_jobs" / "image_jobs").rglob("*.py")):
            zf.write(path, path.relative_to(old / "spark_jobs").as_posix())
    return Path(out.strip()), old_zip


def train_args(run: Path, data: Path, models: str, cv_max_rows: int | None, grid: str) -> list[str]:
    """train_models' command line; ``cv_max_rows`` None: the previous job's (no identity, no CV sample)."""
    args = ["--features-uri", f"file://{data}/features", "--backbone", BACKBONE, "--models-uri",
            f"file://{run}/{models}", "--run-key", RUN_KEY, "--modified-before", MODIFIED_BEFORE,
            "--labels-json", "[]", *TRAIN_OPTIONS, *(SMALL_GRID if grid == "small" else [])]
    if cv_max_rows is not None:
        args += ["--extract-summary-uri", f"file://{data}/extract_summary.json", "--cv-max-rows", str(cv_max_rows)]
    return args


def evaluate_args(run: Path) -> list[str]:
    (run / "rejects").mkdir(parents=True, exist_ok=True)  # empty: no rejects
    return ["--models-uri", f"file://{run}/models", "--report-uri", f"file://{run}/report",
            "--rejects-uri", f"file://{run}/rejects", "--backbone", BACKBONE, "--run-key", RUN_KEY,
            "--modified-before", MODIFIED_BEFORE]


# ---- measuring a spark-submit -------------------------------------------------------------------------------

@dataclass
class Peaks:
    """The largest values seen while a job ran (MB); heap None when jstat could not attach."""

    heap: float | None = None  # driver JVM heap used: survivors + eden + old generation
    old_gen: float | None = None
    live: float | None = None  # old generation right after a forced full GC: the live data (--live-heap-every)
    jvm_rss: float = 0.0
    py_rss: float = 0.0
    exec_rss: float = 0.0  # executor JVM(s) + Python daemon and workers, summed


def rss_mb(procs: list) -> float:
    import psutil

    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / MB


def tree(pid: int) -> list:
    """The process and its descendants (those still there)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cmdline(proc) -> str:
    import psutil

    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


@dataclass(frozen=True)
class HeapProbe:
    """The JDK tools that look into the driver JVM (None: not in JAVA_HOME/bin); live_every > 0: force a full
    GC that often (seconds) so the heap right after it gives the live data's peak."""

    jstat: str | None
    jcmd: str | None
    live_every: float


@dataclass
class Monitor:
    """Samples one spark-submit (its driver JVM and Python) and the worker's executors."""

    submit_pid: int
    worker_pid: int
    heap_log: Path
    probe: HeapProbe
    peaks: Peaks = field(default_factory=Peaks)
    _jstat_proc: subprocess.Popen | None = None
    _jstat_tries: int = 0
    _last_gc: float = field(default_factory=time.monotonic)
    _gc_proc: subprocess.Popen | None = None

    def sample(self) -> None:
        driver = tree(self.submit_pid)
        jvms = [p for p in driver if "org.apache.spark.deploy.SparkSubmit" in cmdline(p)]
        pythons = [p for p in driver if "python" in cmdline(p).split(" ")[0]]
        executors = tree(self.worker_pid)[1:]  # the executor JVM, its Python daemon and workers
        peaks = self.peaks
        peaks.jvm_rss = max(peaks.jvm_rss, rss_mb(jvms))
        peaks.py_rss = max(peaks.py_rss, rss_mb(pythons))
        peaks.exec_rss = max(peaks.exec_rss, rss_mb(executors))
        if jvms and self.probe.jstat:
            self._watch_heap(jvms[0].pid)
        if jvms and self.probe.jcmd and self.probe.live_every > 0:
            self._force_gc(jvms[0].pid)

    def _force_gc(self, pid: int) -> None:
        """``jcmd <pid> GC.run`` (a full GC) every ``live_every`` seconds, one at a time, not waited for."""
        if time.monotonic() - self._last_gc < self.probe.live_every:
            return
        if self._gc_proc is not None and self._gc_proc.poll() is None:
            return
        self._last_gc = time.monotonic()
        self._gc_proc = subprocess.Popen([self.probe.jcmd, str(pid), "GC.run"], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)

    def _watch_heap(self, pid: int) -> None:
        """``jstat -gc <pid> 500`` into the heap log, (re)started while it has not attached yet."""
        running = self._jstat_proc is not None and self._jstat_proc.poll() is None
        attached = self.heap_log.exists() and self.heap_log.stat().st_size > 0
        if running or attached or self._jstat_tries >= 20:
            return
        self._jstat_tries += 1
        with self.heap_log.open("w") as out:
            self._jstat_proc = subprocess.Popen([self.probe.jstat, "-gc", str(pid), str(int(SAMPLE_SECONDS * 1000))],
                                                stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)

    def close(self) -> Peaks:
        for proc in (self._jstat_proc, self._gc_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
            if proc is not None:
                proc.wait(timeout=10)
        self.peaks.heap, self.peaks.old_gen, self.peaks.live = heap_peaks(self.heap_log)
        return self.peaks


def heap_peaks(heap_log: Path) -> tuple[float | None, float | None, float | None]:
    """The peaks (MB) in jstat -gc's output of heap used, old generation used, and the old generation in the
    samples right after a full GC (FGC went up: everything live was compacted there); None without samples."""
    if not heap_log.exists():
        return None, None, None
    lines = [line.split() for line in heap_log.read_text().splitlines() if line.strip()]
    if len(lines) < 2 or "EU" not in lines[0]:
        return None, None, None
    col = {name: i for i, name in enumerate(lines[0])}
    used, old, live, full_gcs = [], [], [], 0.0
    for values in lines[1:]:
        if len(values) == len(col) and values[0] != "S0C":
            used.append(sum(float(values[col[c]]) for c in ("S0U", "S1U", "EU", "OU")) / 1024)
            old.append(float(values[col["OU"]]) / 1024)
            if float(values[col["FGC"]]) > full_gcs:
                live.append(old[-1])
                full_gcs = float(values[col["FGC"]])
    if not used:
        return None, None, None
    return max(used), max(old), max(live) if live else None


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the spark-submit's process group (its session), SIGKILL after 15 s."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def failure(log_path: Path, code: int, timed_out: bool, timeout: float) -> str:
    """One paragraph on why a job failed: the product's diagnosis, the last error lines, the last job line."""
    from image_pipeline.compute.diagnosis import FailureScanner

    text = log_path.read_text(errors="replace")
    lines = text.splitlines()
    head = f"killed after the {timeout:.0f} s timeout" if timed_out else f"exit code {code}"
    diagnosis = FailureScanner().feed_text(text).diagnosis()
    errors = [line.strip() for line in lines if re.search(r"(Error|Exception)\b", line)
              and not line.lstrip().startswith("at ")][-3:]
    job_lines = [line for line in lines if re.search(r" (INFO|WARNING|ERROR) (train_models|evaluate_models):", line)]
    parts = [head, diagnosis or "", *(f"error: {e[:400]}" for e in errors),
             f"last job line: {job_lines[-1][:300]}" if job_lines else "no job line logged",
             f"log: {log_path}"]
    return "\n    ".join(p for p in parts if p)


def run_job(argv: list[str], env: dict[str, str], log_path: Path, worker_pid: int, probe: HeapProbe,
            timeout: float | None = None) -> dict:
    """Run one spark-submit to its end (or the timeout) while sampling it; returns wall seconds, peaks, error."""
    progress(f"running {log_path.stem} (log {log_path})")
    started = time.perf_counter()
    with log_path.open("w") as out:
        out.write(f"command: {shlex.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    monitor = Monitor(proc.pid, worker_pid, log_path.with_suffix(".jstat"), probe)
    timed_out = False
    while proc.poll() is None:
        monitor.sample()
        if timeout is not None and time.perf_counter() - started > timeout:
            timed_out = True
            stop_group(proc)
            break
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - started
    peaks = monitor.close()
    code = proc.wait()
    error = failure(log_path, code, timed_out, timeout or 0) if code != 0 or timed_out else None
    progress(f"{log_path.stem}: {'OK' if error is None else 'FAILED'} in {wall:.0f} s")
    return {"wall": wall, "peaks": peaks, "error": error}


# ---- one size: cluster, jobs, results ---------------------------------------------------------------------------

def submit_argv(info, script: Path, job_args: list[str], jobs_zip: Path, driver_memory: str) -> list[str]:
    """The product's spark-submit command for the local cluster, with EMR's driver memory added."""
    from image_pipeline.compute.local.submit import spark_submit_argv

    argv = spark_submit_argv(info, str(script), job_args, str(jobs_zip), sys.executable, script.stem)
    at = argv.index("--py-files")
    return [*argv[:at], "--conf", f"spark.driver.memory={driver_memory}", *argv[at:]]


def run_jobs(info, run: Path, data: Path, zips: tuple[Path, Path], args: argparse.Namespace, n: int) -> dict:
    """Today's training, its evaluation, and (for the old sizes) the previous training, on one cluster."""
    from image_pipeline.compute.local.cluster import cluster_env
    from image_pipeline.compute.local.java import require_java_home

    java_home = require_java_home()
    env = cluster_env(Path(info.cluster_dir), sys.executable, java_home)
    tools = [str(Path(java_home) / "bin" / tool) for tool in ("jstat", "jcmd")]
    probe = HeapProbe(*(tool if os.access(tool, os.X_OK) else None for tool in tools), args.live_heap_every)
    worker = next(p["pid"] for p in info.processes if p["role"].startswith("worker"))
    logs = run / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def job(name: str, script: Path, job_args: list[str], jobs_zip: Path, timeout: float | None = None) -> dict:
        argv = submit_argv(info, script, job_args, jobs_zip, args.driver_memory)
        return run_job(argv, env, logs / f"n{n}-{name}.log", worker, probe, timeout)

    jobs = {"train": job("train", zips[0].parent / "train_models.py",
                         train_args(run, data, "models", args.cv_max_rows, args.grid), zips[0])}
    if jobs["train"]["error"] is None:
        jobs["evaluate"] = job("evaluate", zips[0].parent / "evaluate_models.py", evaluate_args(run), zips[0])
    if n in args.old_sizes:
        jobs["old_train"] = job("old_train", zips[1].parent / "spark_jobs" / "train_models.py",
                                train_args(run, data, "old_models", None, args.grid), zips[1], args.old_timeout)
    for name, models in (("train", "models"), ("old_train", "old_models")):
        summary = run / models / "training_summary.json"
        if name in jobs and jobs[name]["error"] is None and summary.exists():
            jobs[name]["summary"] = json.loads(summary.read_text())
    return jobs


def measure_size(n: int, zips: tuple[Path, Path], args: argparse.Namespace) -> dict:
    """Generate N rows, start a fresh cluster, run the jobs, stop the cluster (the features kept with --keep)."""
    from image_pipeline.compute.local.cluster import start_cluster, stop_cluster
    from image_pipeline.compute.local.java import require_java_home

    data = generate(args.work_dir / "data" / f"n{n}", n, args.noise, args.seed)
    run = args.work_dir / "runs" / f"n{n}"
    shutil.rmtree(run, ignore_errors=True)
    cluster_dir = run / "cluster"
    try:
        info = start_cluster(cluster_dir, 1, args.cores, args.worker_memory_gb, sys.executable, require_java_home())
        try:
            jobs = run_jobs(info, run, data, zips, args, n)
        finally:
            stop_cluster(cluster_dir)
            shutil.rmtree(cluster_dir / "local", ignore_errors=True)  # Spark's scratch; executor logs stay in work/
        if n == min(args.sizes) and "summary" in jobs["train"]:
            jobs["same_data"] = same_data_fit(run / "models", data, args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    return {"n": n, "run": run, **jobs}


# ---- today's fit on the same data: scikit-learn on the new job's split and reduction -------------------------

def reduced_rows(data: Path, model) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every feature row's path, label index (in the model's labels) and reduced features, part file by part
    file: standardised, then projected on the PCA components, as ``predictor.MulticlassModel.probabilities``
    computes them from model.json's arrays (float64; a feature with zero std becomes 0)."""
    import pyarrow.parquet as pq

    index = {label: i for i, label in enumerate(model.labels)}
    safe_std = np.where(model.std > 0, model.std, 1.0)
    paths: list[str] = []
    ys, xs = [], []
    for part in sorted((data / "features" / f"backbone={BACKBONE}" / f"run={RUN_KEY}").glob("part-*.parquet")):
        table = pq.read_table(part, columns=["path", "label", "features"])
        flat = table.column("features").combine_chunks().flatten().to_numpy()
        x = flat.reshape(table.num_rows, -1).astype(np.float64)
        z = np.where(model.std > 0, (x - model.mean) / safe_std, 0.0)
        xs.append(z if model.components is None else z @ model.components.T)
        ys.append(np.array([index[label] for label in table.column("label").to_pylist()], dtype=np.int64))
        paths += table.column("path").to_pylist()
    return paths, np.concatenate(ys), np.concatenate(xs)


def same_data_fit(models: Path, data: Path, seed: int) -> dict:
    """Today's fit on the same data: scikit-learn's LogisticRegression (``selection.fit_logistic``: C from
    model.json, max_iter 1000) on the new job's training rows (every row not in its test predictions), reduced
    with model.json's arrays, scored on its test rows; also model.json's own classifier on the same test rows.
    An error is returned (as ``error``), not raised: the jobs' measurements are still reported."""
    import pyarrow.parquet as pq

    from image_jobs.model_selection import fit_logistic
    from image_jobs.predictor import load_model_json

    progress("today's fit on the same data: scikit-learn on the new job's split and reduction")
    started = time.perf_counter()
    try:
        text = (models / "multiclass" / "model.json").read_text()
        raw, model = json.loads(text), load_model_json(text, str(models / "multiclass" / "model.json"))
        summary = json.loads((models / "training_summary.json").read_text())["multiclass"]
        test_paths = set(pq.read_table(models / "multiclass" / "test_predictions", columns=["path"])
                         .column("path").to_pylist())
        paths, y, x = reduced_rows(data, model)
        test = np.fromiter((p in test_paths for p in paths), dtype=bool, count=len(paths))
        fitted = fit_logistic(x[~test], y[~test], raw["classifier_c"], seed)
        own = (x[test] @ model.coef.T + model.intercept).argmax(axis=1)
    except Exception as exc:  # reported beside the jobs' figures
        progress(f"today's fit on the same data FAILED: {exc!r}")
        return {"error": repr(exc)}
    seconds = time.perf_counter() - started
    progress(f"today's fit on the same data: done in {seconds:.0f} s")
    return {"spark": 100 * summary["accuracy"], "sklearn": 100 * float((fitted.predict(x[test]) == y[test]).mean()),
            "model_json": 100 * float((own == y[test]).mean()), "train": int((~test).sum()), "test": int(test.sum()),
            "job_train": summary["train_images"], "job_test": summary["test_images"], "c": raw["classifier_c"],
            "reduction": raw.get("reduction"), "missing": len(test_paths) - int(test.sum()), "seconds": seconds}


# ---- the report ---------------------------------------------------------------------------------------------

def fmt(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def print_training_table(results: list[dict]) -> None:
    print(f"{'rows':>9} {'reduce s':>8} {'select s':>8} {'multi s':>7} {'pair s':>6} {'total s':>7} "
          f"{'s/1k rows':>9} {'submit s':>8} {'eval s':>6} {'live heap MB':>12} {'raw heap pk MB':>14} "
          f"{'old gen MB':>10} {'JVM RSS MB':>10} {'Py RSS MB':>9} {'exec RSS MB':>11} {'accuracy %':>10}")
    for r in results:
        train, evaluate = r["train"], r.get("evaluate")
        if "summary" not in train:
            print(f"{r['n']:>9} training FAILED after {train['wall']:.0f} s: {train['error']}")
            continue
        s, p = train["summary"]["seconds"], train["peaks"]
        eval_s = None if evaluate is None or evaluate["error"] else evaluate["wall"]
        print(f"{r['n']:>9} {s['reduce']:>8.1f} {s['selection']:>8.1f} {s['multiclass']:>7.1f} {s['pairwise']:>6.1f} "
              f"{s['total']:>7.1f} {fmt(per_1k(r), 9, 3)} {train['wall']:>8.1f} {fmt(eval_s, 6)} {fmt(p.live, 12)} "
              f"{fmt(p.heap, 14)} {fmt(p.old_gen, 10)} {p.jvm_rss:>10.1f} {p.py_rss:>9.1f} {p.exec_rss:>11.1f} "
              f"{100 * train['summary']['multiclass']['accuracy']:>10.2f}")
        if evaluate is not None and evaluate["error"]:
            print(f"{'':>9} evaluate FAILED: {evaluate['error']}")


def print_evaluate_table(results: list[dict]) -> None:
    print(f"{'rows':>9} {'eval s':>6} {'live heap MB':>12} {'raw heap pk MB':>14} {'old gen MB':>10} "
          f"{'JVM RSS MB':>10} {'Py RSS MB':>9} {'exec RSS MB':>11}")
    for r in results:
        e = r.get("evaluate")
        if e is not None and e["error"] is None:
            p = e["peaks"]
            print(f"{r['n']:>9} {e['wall']:>6.1f} {fmt(p.live, 12)} {fmt(p.heap, 14)} {fmt(p.old_gen, 10)} "
                  f"{p.jvm_rss:>10.1f} {p.py_rss:>9.1f} {p.exec_rss:>11.1f}")


def per_1k(result: dict) -> float | None:
    summary = result["train"].get("summary")
    return summary["seconds"]["total"] / (result["n"] / 1000) if summary else None


def print_ratios(results: list[dict]) -> None:
    done = [r for r in results if "summary" in r["train"]]
    if len(done) < 2:
        print("ratios: need two sizes that trained")
        return
    small, large = done[0], done[-1]
    name = f"{large['n']:,} / {small['n']:,}"
    for what, key in (("driver JVM live heap peak", "live"),
                      ("driver JVM raw sampled heap-used peak (extra, no target: mostly eden)", "heap"),
                      ("driver JVM RSS peak", "jvm_rss"),
                      ("driver Python RSS peak", "py_rss"), ("executors' RSS peak", "exec_rss")):
        a, b = getattr(large["train"]["peaks"], key), getattr(small["train"]["peaks"], key)
        if a is None or b is None:
            print(f"{what} {name}: n/a (not measured: jstat did not attach, or --live-heap-every 0)")
            continue
        target = ("" if key in ("exec_rss", "heap")
                  else f"  (target <= 1.50: {'MET' if a / b <= 1.5 else 'NOT MET'})")
        print(f"{what} {name}: {a:.0f} / {b:.0f} MB = {a / b:.2f}{target}")
    previous = done[-2]
    ratio = per_1k(large) / per_1k(previous)
    print(f"seconds per 1,000 rows {large['n']:,} / {previous['n']:,}: {per_1k(large):.3f} / {per_1k(previous):.3f} "
          f"= {ratio:.2f}  (target <= 1.50: {'MET' if ratio <= 1.5 else 'NOT MET'})")


def print_old_comparison(results: list[dict]) -> None:
    for r in (r for r in results if "old_train" in r):
        old, new = r["old_train"], r["train"].get("summary")
        p = old["peaks"]
        memory = (f"driver live heap peak {fmt(p.live, 0, 0)} MB (raw sampled heap peak {fmt(p.heap, 0, 0)} MB), "
                  f"JVM RSS {p.jvm_rss:.0f} MB, Python RSS {p.py_rss:.0f} MB, executors {p.exec_rss:.0f} MB")
        if "summary" not in old:
            print(f"{r['n']:>9} rows: previous job did NOT complete after {old['wall']:.0f} s ({memory}):\n    "
                  f"{old['error']}")
            continue
        old_acc = 100 * old["summary"]["multiclass"]["accuracy"]
        new_acc = None if new is None else 100 * new["multiclass"]["accuracy"]
        diff = ""
        if new_acc is not None:
            met = "MET" if abs(new_acc - old_acc) <= 0.5 else "NOT MET"
            diff = (f", today's {new_acc:.2f}%: difference {new_acc - old_acc:+.2f} points on DIFFERENT test rows "
                    f"(within 0.5: {met}, not like for like)")
        print(f"{r['n']:>9} rows: previous job accuracy {old_acc:.2f}%{diff}; its seconds "
              f"{old['summary']['seconds']}, spark-submit {old['wall']:.0f} s; {memory}")
        if new is not None:
            print(f"{'':>9} {split_note(r, old['summary']['multiclass'], new['multiclass'])}")


def print_same_data(results: list[dict]) -> None:
    """Today's fit on the same data: the new job's accuracy (Spark ML fit) and scikit-learn's on its split."""
    for r in (r for r in results if "same_data" in r):
        f = r["same_data"]
        print(f"\ntoday's fit on the same data ({r['n']:,} rows; same split, same reduction, same C):")
        if "error" in f:
            print(f"    FAILED: {f['error']}")
            continue
        diff = f["spark"] - f["sklearn"]
        print(f"    the new job's split: {f['train']:,} training / {f['test']:,} test rows (its summary: "
              f"{f['job_train']:,} / {f['job_test']:,}; test paths not in the features: {f['missing']}); "
              f"reduction {f['reduction']} and C={f['c']:g} from its model.json")
        print(f"    new job, Spark ML fit (training_summary.json):             {f['spark']:6.2f}%")
        print(f"    scikit-learn LogisticRegression (fit_logistic), same rows: {f['sklearn']:6.2f}%  "
              f"({f['seconds']:.0f} s with the reading and reduction)")
        print(f"    difference (Spark ML - scikit-learn): {diff:+.2f} points  (target within 0.5 points: "
              f"{'MET' if abs(diff) <= 0.5 else 'NOT MET'})")
        print(f"    check: model.json's coef/intercept on the test rows as reduced here: {f['model_json']:.2f}%")


def split_note(result: dict, old: dict, new: dict) -> str:
    """How many test rows the two jobs' splits share, and the sampling noise of comparing their accuracies."""
    import pyarrow.parquet as pq

    run = result["run"]
    paths = [set(pq.read_table(run / models / "multiclass" / "test_predictions", columns=["path"])
                 .column("path").to_pylist()) for models in ("old_models", "models")]
    noise = 100 * np.sqrt(sum(m["accuracy"] * (1 - m["accuracy"]) / m["test_images"] for m in (old, new)))
    return (f"(the jobs hold out different test rows: {len(paths[0] & paths[1]):,} of {len(paths[1]):,} in common; "
            f"the standard error of the difference of two such test accuracies is ~{noise:.1f} points)")


def report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\ntraining at scale: {CLASSES} classes, {DIM}-d float32 features (noise {args.noise}), local standalone "
          f"cluster (1 worker, {args.cores} cores, {args.worker_memory_gb} GB, executor "
          f"{args.worker_memory_gb - 1}g), driver {args.driver_memory} (capacity.spark_defaults m5.xlarge), each job "
          f"a fresh spark-submit; memory sampled every {SAMPLE_SECONDS} s")
    grid = SMALL_GRID if args.grid == "small" else ["(the job's default selection grid)"]
    print(f"train_models options: {shlex.join([*TRAIN_OPTIONS, *grid])} --cv-max-rows {args.cv_max_rows}")
    gcs = (f"a full GC forced every {args.live_heap_every:g} s (included in the seconds; --live-heap-every 0 for "
           "the reference timings)" if args.live_heap_every > 0 else "no forced GCs: no live heap")
    print("phase seconds from training_summary.json; submit s / eval s: spark-submit wall (JVM start included); "
          "peaks of the training job (driver: live heap = old gen right after a forced full GC, the targets' "
          "figure; raw heap pk = the raw sampled peak of jstat S0U+S1U+EU+OU, mostly eden; old gen = OU); "
          f"driver: {gcs}")
    print_training_table(results)
    print("\nevaluate_models (its own spark-submit): wall seconds and peaks")
    print_evaluate_table(results)
    print()
    print_ratios(results)
    print_same_data(results)
    if any("old_train" in r for r in results):
        print(f"\nthe previous training job ({OLD_COMMIT}, same options minus --extract-summary-uri and --cv-max-rows, "
              f"timeout {args.old_timeout:.0f} s), on DIFFERENT test rows from today's job:")
        print_old_comparison(results)


def code_version() -> str:
    """HEAD's commit and the files of spark_jobs/ that differ from it (read-only git)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *argv], stdout=subprocess.PIPE, text=True).stdout.strip()

    changed = git("diff", "--name-only", "HEAD", "--", "spark_jobs").split()
    return f"HEAD {git('rev-parse', '--short', 'HEAD')}" + (f", modified: {', '.join(changed)}" if changed else "")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    from image_pipeline.compute.emr.capacity import spark_defaults

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma list of row counts")
    parser.add_argument("--old-sizes", default="10000,100000", help="sizes the previous job also runs at")
    parser.add_argument("--old-timeout", type=float, default=1200.0, help="seconds before the previous job is killed")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-training-scale"))
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the generated features")
    parser.add_argument("--noise", type=float, default=4.75, help="std of the per-class Gaussian noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2, help="the local worker's cores")
    parser.add_argument("--worker-memory-gb", type=int, default=4, help="the local worker's memory (executor: 1 less)")
    parser.add_argument("--cv-max-rows", type=int, default=20_000)
    parser.add_argument("--grid", choices=("small", "default"), default="small",
                        help="the model selection's grid: small (one PCA size, two C, 3 folds), or the job's default")
    parser.add_argument("--live-heap-every", type=float, default=5.0,
                        help="seconds between forced full GCs of the driver (jcmd GC.run) for the live heap's peak, "
                             "the figure the driver heap target uses; 0: none (the reference phase timings, no "
                             "live heap)")
    parser.add_argument("--driver-memory", default=spark_defaults("m5.xlarge", 2, 0, 32)["spark.driver.memory"])
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.old_sizes = {int(s) for s in args.old_sizes.split(",") if s.strip()}
    args.work_dir = args.work_dir.resolve()
    return args


def main() -> int:
    # the product's local cluster and EMR capacity code, the jobs' predictor and fit_logistic (the same-data
    # fit) come from make's BENCH_ENV PYTHONPATH, read at start-up
    args = parse_args()
    # the jobs see only their --py-files zip (today's or the previous one), not this process's PYTHONPATH
    os.environ.pop("PYTHONPATH", None)
    print("command:", shlex.join([os.path.relpath(sys.executable, ROOT), *sys.argv]), flush=True)
    print(f"jobs' code: {code_version()}", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    zips = build_zips(args.work_dir)
    results = [measure_size(n, zips, args) for n in args.sizes]
    report(results, args)
    print(f"\nlogs, summaries and reports: {args.work_dir}/runs/n<N>/")
    failed = [r["n"] for r in results if "summary" not in r["train"] or r.get("evaluate", {}).get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
