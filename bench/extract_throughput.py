"""Benchmark: feature-extraction throughput, model forward pass alone vs the whole Spark job.

    make bench-extract                       # 7400 images (the pets study's dataset size), 2 cores, openvino fp32
    make bench-extract BENCH_ARGS="--images 1000 --cores 2"
    make bench-extract BENCH_ARGS="--runtime tensorflow"                  # the whole job on TensorFlow
    make bench-extract BENCH_ARGS="--precision bf16"                      # where the CPU has BF16
    make bench-extract BENCH_ARGS="--no-job"                              # the forward passes only

Prints images/s per core for
  (a) the model's forward pass alone on pre-decoded batches at the model's input size (OpenVINO in requests of two
      images, as the job runs it): one single-threaded process
      per core, all running at once (the job's own parallelism), after a warm-up, for every runtime
      and precision this CPU runs (tensorflow fp32, openvino fp32, openvino bf16 where the CPU has
      BF16), and their ratios to tensorflow's, and
  (b) the whole extraction job through Spark (local[cores]) on ``--runtime``/``--precision``: listing,
      incremental selection, reading bytes, decoding, inference, Parquet writes; Spark session
      start-up excluded, Python worker start-up and model loading included,
and the ratio of (b) to (a) of the same runtime and to the fastest fp32 (a); decode + resize in ms per image
on one thread (this benchmark's 224x224 JPEGs, 500x375 and 4000x3000 photos). Then where (b)'s
time goes: the rate inside the featurizing tasks against (a) (the steady state), and the seconds of the
job not spent at that rate (start-up paid once per job: listing on a cold JVM, the runtime's import and
model load per Python worker; the JVM's share of the cores; the last wave). The ratio grows with the
number of images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int, classes: int, seed: int) -> None:
    """n photo-like JPEGs at exactly 224x224, spread over ``classes`` folders."""
    import numpy as np

    from image_tools.sample_images import class_styles, render_image

    styles = class_styles(classes)
    for i in range(n):
        style = styles[i % classes]
        rng = np.random.default_rng([seed, i])
        out = folder / style.name / f"{i:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        render_image(style, rng).resize((224, 224)).save(out, quality=90)


def forward_only(weights: str, backbone: str, batch_size: int, seconds: float, runtime: str = "tensorflow",
                 precision: str = "fp32", ir: str | None = None) -> float:
    """Images/s of one thread on pre-decoded batches (run in a child process per core)."""
    from image_jobs.featurize import configure_threads

    configure_threads(1)
    import numpy as np

    from image_jobs.featurize import InferenceChoice, load_model

    model, _ = load_model(backbone, weights, weights.removeprefix("file://") if weights != "random" else None,
                          InferenceChoice(runtime, precision, ir), threads=1)
    from image_jobs.backbones import get_backbone

    size = get_backbone(backbone).keras_resize.size  # the backbone's input (224; 260 for efficientnet_lite2)
    batch = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
    for _ in range(3):  # warm-up: graph tracing (tensorflow), first-inference allocations (both)
        model.predict_on_batch(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict_on_batch(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


def forward_configs(weights: str, backbone: str) -> list[tuple[str, str, str | None]]:
    """(runtime, precision, IR) of every forward pass to time here: the IR exported first (once, here,
    so the timed processes only load it), bf16 only where the CPU offers it."""
    if weights == "random":
        print("random weights: only tensorflow is timed (openvino runs exported weights files)", flush=True)
        return [("tensorflow", "fp32", None)]
    import openvino as ov

    from image_jobs.openvino_runtime import BF16_CAPABILITY, export_ir

    ir = str(export_ir(backbone, weights.removeprefix("file://")))
    capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    print(f"CPU capabilities seen by OpenVINO: {capabilities}", flush=True)
    configs = [("tensorflow", "fp32", None), ("openvino", "fp32", ir)]
    if BF16_CAPABILITY in capabilities:
        configs.append(("openvino", "bf16", ir))
    else:
        print("openvino bf16: not timed, this CPU offers no BF16", flush=True)
    return configs


def time_forward(args: argparse.Namespace, runtime: str, precision: str, ir: str | None) -> float:
    """(a) for one runtime: images/s per core, ``args.cores`` single-threaded processes at once."""
    # one single-threaded process per core, all at once: the same parallelism as the job's
    # Python workers, so both figures pay the same memory-bandwidth and cache sharing
    command = [sys.executable, __file__, "--forward-only", "--backbone", args.backbone,
               "--weights-uri", args.weights_uri, "--batch-size", str(args.batch_size),
               "--forward-seconds", str(args.forward_seconds), "--runtime", runtime, "--precision", precision,
               *(["--ir", ir] if ir else [])]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for _ in range(args.cores)]
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        raise RuntimeError(f"a forward-pass process for {runtime} {precision} failed: {command}")
    return sum(float(out.strip().splitlines()[-1]) for out in outputs) / args.cores


def forward_figures(args: argparse.Namespace) -> dict[tuple[str, str], float]:
    """(a) for every runtime and precision, printed with their ratios to tensorflow's."""
    from image_jobs.openvino_runtime import REQUEST_IMAGES

    rates = {}
    for runtime, precision, ir in forward_configs(args.weights_uri, args.backbone):
        rates[runtime, precision] = time_forward(args, runtime, precision, ir)
    base = rates["tensorflow", "fp32"]
    print(f"(a) forward pass alone ({args.backbone}, batch {args.batch_size}, openvino in requests of {REQUEST_IMAGES} "
          f"images, {args.cores} single-threaded processes at once, after warm-up), images/s per core:")
    for (runtime, precision), rate in rates.items():
        print(f"    {runtime:<10} {precision:<4} {rate:7.1f}   x{rate / base:.2f} tensorflow's", flush=True)
    return rates


def fastest_fp32(rates: dict[tuple[str, str], float]) -> float:
    """The fastest fp32 forward pass (a) of this run: the issue's yardstick for the whole job."""
    return max(rate for (_, precision), rate in rates.items() if precision == "fp32")


def decode_ms(paths: list[Path], backbone: str) -> float:
    """Milliseconds per image of the job's decode + resize (``decode.decode_image``, the backbone's resize
    policy) on one thread, over ``paths`` read into memory first (the job gets the bytes from Spark)."""
    from image_jobs.backbones import get_backbone
    from image_jobs.decode import decode_image

    policy = get_backbone(backbone).resize_policy("imagenet")
    contents = [p.read_bytes() for p in paths]
    for data in contents[:20]:  # warm-up
        decode_image(data, policy)
    started = time.perf_counter()
    for data in contents:
        decode_image(data, policy)
    return 1000 * (time.perf_counter() - started) / len(contents)


def decode_figures(images: Path, work: Path, backbone: str, forward_per_core: float) -> None:
    """Decode + resize per image on the benchmark's 224x224 JPEGs and on photo-sized ones (500x375, the
    pets study's typical size; 4000x3000, a phone's), against the forward pass's ms per image."""
    from PIL import Image

    generated = sorted(images.rglob("*.jpg"))[:500]
    sized = {}
    for width, height, n in ((500, 375, 200), (4000, 3000, 20)):
        folder = work / f"photos-{width}x{height}"
        folder.mkdir()
        for i, source in enumerate(generated[:n]):
            Image.open(source).resize((width, height), Image.BILINEAR).save(folder / f"{i}.jpg", quality=90)
        sized[f"{width}x{height}"] = sorted(folder.glob("*.jpg"))
    forward_ms = 1000 / forward_per_core
    print(f"decode + resize to the model's input, one thread (the forward pass: {forward_ms:.1f} ms per image):")
    for name, paths in {"224x224 (this benchmark's)": generated, **sized}.items():
        ms = decode_ms(paths, backbone)
        print(f"    {name:<28} {ms:6.2f} ms per image = {ms / forward_ms:5.1%} of the forward pass", flush=True)


def whole_job(images: Path, work: Path, weights: str, backbone: str, batch_size: int, cores: int,
              inference: tuple[str, str] = ("tensorflow", "fp32")) -> dict:
    import extract_features
    from image_jobs.session import build_session
    from image_pipeline.compute.jobs_archive import build_jobs_zip

    spark = build_session("bench-extract", master=f"local[{cores}]",
                          conf={"spark.ui.enabled": "false", "spark.driver.memory": "4g"})
    spark.sparkContext.addPyFile(str(build_jobs_zip(work / "dist")))
    argv = ["--images-uri", f"file://{images}", "--features-uri", f"file://{work}/features",
            "--rejects-uri", f"file://{work}/rejects", "--backbone", backbone, "--run-key", "bench",
            "--modified-before", "2100-01-01T00:00:00Z", "--batch-size", str(batch_size)]
    argv += ["--random-weights"] if weights == "random" else ["--weights-uri", weights]
    argv += ["--runtime", inference[0], "--precision", inference[1]]
    jvm = spark_jvm_process(spark)
    before = cpu_seconds(jvm)
    started = time.perf_counter()
    summary = extract_features.run(spark, extract_features.parse_args(argv))
    summary["wall_seconds"] = time.perf_counter() - started
    summary["cpu_seconds"] = {part: after - before[part] for part, after in cpu_seconds(jvm).items()}
    spark.stop()
    return summary


def spark_jvm_process(spark):
    """The driver's JVM (in ``local[n]``, the executors too) as a ``psutil.Process``."""
    import psutil

    return psutil.Process(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())


def cpu_seconds(jvm) -> dict[str, float]:
    """CPU seconds (user + system) so far of the JVM and of the Python processes under it (pyspark's daemon and
    workers: they live until the session stops, so their counts only grow)."""
    import psutil

    def used(process) -> float:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    return {"jvm": used(jvm), "python": sum(used(child) for child in jvm.children(recursive=True))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=7400,
                        help="images to generate and extract (default: the pets study's 7,400)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights-uri", default=f"file://{ROOT}/data/weights/mobilenet_v2_imagenet.keras",
                        help="weights file, or 'random' (timing only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--forward-seconds", type=float, default=20.0)
    parser.add_argument("--runtime", choices=("tensorflow", "openvino"), default="openvino",
                        help="runtime of the whole job (b); (a) times every runtime")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="precision of the whole job (b) (openvino only)")
    parser.add_argument("--no-job", action="store_true", help="time the forward passes (a) only")
    parser.add_argument("--forward-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward_only:
        print(json.dumps(forward_only(args.weights_uri, args.backbone, args.batch_size, args.forward_seconds,
                                      args.runtime, args.precision, args.ir)))
        return 0
    if args.weights_uri != "random" and not Path(args.weights_uri.removeprefix("file://")).exists():
        parser.error(f"{args.weights_uri} is missing: run 'make weights' first, or pass --weights-uri random")
    rates = forward_figures(args)
    if args.no_job:
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        work = Path(tmp)
        print(f"generating {args.images} images at 224x224 ...", flush=True)
        make_images(work / "images", args.images, classes=10, seed=0)
        decode_figures(work / "images", work, args.backbone, fastest_fp32(rates))
        summary = whole_job(work / "images", work, args.weights_uri, args.backbone, args.batch_size, args.cores,
                            (args.runtime, args.precision))
    assert summary["features_written"] == args.images, summary
    precision = args.precision
    if precision == "auto":  # what the workers chose: bf16 where the CPU has it
        precision = "bf16" if ("openvino", "bf16") in rates else "fp32"
    report_job(args, summary, rates[args.runtime, precision], f"{args.runtime} {precision}")
    per_core = args.images / summary["wall_seconds"] / args.cores
    print(f"ratio (b)/(fastest fp32 forward pass, {fastest_fp32(rates):.1f}): {per_core / fastest_fp32(rates):.2f}  "
          f"(targets: the whole job >= 75 images/s per core at fp32 and >= 0.85 of the fastest fp32 forward pass; "
          f">= 150 at bf16)")
    emr_cost_table(per_core, f"{args.runtime} {precision}")
    return 0


def emr_cost_table(per_core: float, runtime: str) -> None:
    """USD per million images on each instance type the trigger form offers, at ``per_core`` images/s per
    vCPU (this run's whole job), every vCPU of the worker nodes running a task (``capacity.executor_layout``)
    and the on-demand price of the EMR price table (``IMAGE_PIPELINE_EMR_PRICES_JSON`` overrides it)."""
    from image_pipeline.compute.emr.capacity import INSTANCE_TYPES, executor_layout
    from image_pipeline.compute.emr.requests import load_emr_settings

    prices = load_emr_settings().prices
    rows = []
    for instance_type in INSTANCE_TYPES:
        layout = executor_layout(instance_type)
        slots = layout.cores * layout.per_node
        price = prices.get(instance_type)
        per_hour = per_core * slots * 3600
        rows.append((instance_type, slots, price, per_hour, price / per_hour * 1e6 if price else None))
    print(f"EMR, the whole job's rate ({runtime}, {per_core:.1f} images/s per vCPU) on each offered type "
          f"(worker nodes only: the primary node, bootstrap and idle minutes are per cluster, not per image):")
    cheapest = min((r for r in rows if r[4] is not None), key=lambda r: r[4])
    for instance_type, slots, price, per_hour, per_million in rows:
        cost = f"{per_million:6.2f} USD per million images" if per_million is not None else "no price"
        mark = "   <- cheapest per image" if instance_type == cheapest[0] else ""
        print(f"    {instance_type:<11} {slots:>2} tasks  {price or 0:6.3f} USD/h  {per_hour:>9,.0f} images/h  "
              f"{cost}{mark}")
    if "bf16" in runtime:
        print("    (a bf16 rate holds only on nodes whose CPU offers BF16 to OpenVINO: with `auto` the job logs what "
              "the nodes' CPU offers and runs fp32 where BF16 is missing; see docs/benchmarks.md)")


def report_job(args: argparse.Namespace, summary: dict, forward_per_core: float, runtime: str) -> None:
    """(b), its ratio to (a) of the same runtime, and where its time goes."""
    wall = summary["wall_seconds"]
    job_per_core = args.images / wall / args.cores
    print(f"(b) whole extraction job ({runtime}): {args.images} images in {wall:.1f} s on {args.cores} cores "
          f"= {job_per_core:.1f} images/s per core")
    print(f"    phases (s): {json.dumps(summary['phase_seconds'])}; model loads inside featurizing tasks: "
          f"{summary['model_loads']}")
    print(f"ratio (b)/(a) of {runtime}: {job_per_core / forward_per_core:.2f}")
    task_ms = 1000 * summary["featurize_task_seconds"] / args.images  # per image, on one core
    steady_seconds = summary["featurize_task_seconds"] / args.cores  # the job's wall time at that rate
    print(f"    inside the featurizing tasks: {task_ms:.1f} ms per image per core (decoding, the forward pass, "
          f"its one trace per worker) against {1000 / forward_per_core:.1f} ms for (a) alone: steady state "
          f"{1000 / forward_per_core / task_ms:.2f} of the bare model")
    print(f"    the rest of the job's {wall:.1f} s: {wall - steady_seconds:.1f} s not spent at that rate (listing; "
          f"Python workers importing the runtime and loading the model, {summary['model_load_seconds']:.1f} s "
          f"summed over {summary['model_loads']}; the JVM reading files and moving Arrow batches and Parquet on "
          f"the same cores; the last wave; writes)")
    cpu = summary["cpu_seconds"]
    idle = args.cores * wall - cpu["jvm"] - cpu["python"]
    print(f"    CPU over the job ({args.cores} cores x {wall:.1f} s = {args.cores * wall:.1f} s): Python workers "
          f"{cpu['python']:.1f} s ({1000 * cpu['python'] / args.images:.1f} ms per image, the forward pass alone "
          f"{1000 / forward_per_core:.1f}), JVM {cpu['jvm']:.1f} s ({1000 * cpu['jvm'] / args.images:.2f} ms per "
          f"image), cores idle or used by other processes {idle:.1f} s")
    print(f"the original study: about {4400 / 3600:.2f} images/s per vCPU (4,400 images per vCPU-hour)")


if __name__ == "__main__":
    sys.exit(main())
