"""Benchmark: prediction latency on this machine, the way the field team uses the command.

    make bench-predict                                   # synthetic 6-class model on the real backbone
    make bench-predict BENCH_ARGS="--model file:///data/runs/<run_key>/models"   # a trained run
    make bench-predict BENCH_ARGS="--runtime tensorflow" # the forward pass on TensorFlow (the default: OpenVINO)

Prints
  - the whole command, cold: ``python -m image_pipeline.predict_photos`` on one photo in a fresh process
    (imports, the runtime, model load, the photo, the answer), median of a few runs;
  - model load in-process (the runtime's import + backbone + classifier), once;
  - seconds per photo after the model is loaded, one photo per call (median and worst) for
    generated photo-like images (160-480 px) and for 12-megapixel phone-sized JPEGs;
  - seconds per photo in a batch of 32 photos per call.
The classifier's arrays only add a few matrix products: the backbone's forward pass and decoding are
what cost, so a synthetic model of a trained run's shapes (1280 -> 128 PCA -> 6 classes) times
the same thing as a trained one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_model(folder: Path, weights_uri: str, classes: int = 6, k: int = 128) -> str:
    """A model.json with a trained run's shapes on the real backbone and weights; returns its models URI."""
    import numpy as np

    from image_jobs.predictor import MODEL_FORMAT
    from image_tools.sample_images import class_styles

    rng = np.random.default_rng(0)
    model = {"format": MODEL_FORMAT, "run_key": "bench", "backbone": "mobilenet_v2", "weights_uri": weights_uri,
             "feature_dim": 1280, "labels": [s.name for s in class_styles(classes)],
             "scaler_mean": rng.uniform(0, 1, 1280).tolist(), "scaler_std": rng.uniform(0.5, 1.5, 1280).tolist(),
             "pca_components": (rng.normal(0, 1, (k, 1280)) / 36).tolist(),
             "coef": rng.normal(0, 1, (classes, k)).tolist(), "intercept": [0.0] * classes}
    path = folder / "models" / "multiclass" / "model.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(model))
    return f"file://{folder / 'models'}"


def make_photos(folder: Path, n: int) -> tuple[list[Path], list[Path]]:
    """``n`` generated photo-like images (160-480 px) and ``n`` 12-megapixel JPEGs (4000 x 3000)."""
    import numpy as np

    from image_tools.sample_images import class_styles, render_image, write_sample_images

    small = write_sample_images(folder / "small", n_classes=6, per_class=max(1, n // 6 + 1), seed=99)[:n]
    large = []
    styles = class_styles(6)
    for i in range(n):
        rng = np.random.default_rng([7, i])
        path = folder / "large" / f"phone_{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        render_image(styles[i % 6], rng).resize((4000, 3000)).save(path, quality=90)
        large.append(path)
    return small, large


def cold_command(models_uri: str, photo: Path, runs: int, inference: list[str]) -> float:
    """Median wall seconds of the whole command on one photo, each time in a fresh process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "image_pipeline.predict_photos", "--model", models_uri,
                              *inference, str(photo)], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - started)
        if out.returncode != 0:
            raise SystemExit(f"the command failed: {out.stderr[-2000:]}")
    return statistics.median(times)


def export_ir_once(models_uri: str, cache: Path) -> None:
    """The model's OpenVINO IR next to its weights (found when there), exported in a child process."""
    from image_pipeline.predict_photos import fetch_weights
    from image_pipeline.publishing.model_resolution import resolve_model

    model = resolve_model(models_uri, "", None).model
    command = [sys.executable, "-m", "image_jobs.openvino_runtime", "--backbone", model.backbone,
               "--weights", fetch_weights(model.weights_uri, None, cache)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "spark_jobs")})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="models URI of a trained run (default: a synthetic model)")
    parser.add_argument("--weights-uri", default=f"file://{ROOT}/data/weights/mobilenet_v2_imagenet.keras",
                        help="weights of the synthetic model")
    parser.add_argument("--photos", type=int, default=20, help="photos of each size timed one by one")
    parser.add_argument("--batch", type=int, default=32, help="photos per call in the batch figure")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes timed for the whole command")
    parser.add_argument("--runtime", choices=("tensorflow", "openvino"), default="openvino",
                        help="what runs the forward pass (openvino: the IR is exported first, as make weights does)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32", help="openvino only")
    args = parser.parse_args()
    if args.model is None and not Path(args.weights_uri.removeprefix("file://")).exists():
        parser.error(f"{args.weights_uri} is missing: run 'make weights' first")

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        work = Path(tmp)
        models_uri = args.model or synthetic_model(work, args.weights_uri)
        small, large = make_photos(work / "photos", max(args.photos, args.batch))
        if args.runtime == "openvino":  # exported beforehand, in a process of its own: not part of the timings
            export_ir_once(models_uri, work / "cache")
        cold = cold_command(models_uri, small[0], args.cold_runs,
                            ["--runtime", args.runtime, "--precision", args.precision])
        print(f"whole command ({args.runtime} {args.precision}), one photo, fresh process: {cold:.2f} s "
              f"(median of {args.cold_runs})", flush=True)

        started = time.perf_counter()
        from image_jobs.featurize import configure_threads

        configure_threads(os.cpu_count() or 1)
        from image_pipeline.predict_photos import fetch_weights, inference_choice
        from image_pipeline.publishing.model_resolution import resolve_model

        resolved = resolve_model(models_uri, "", None)
        from image_jobs.predictor import Predictor

        weights_path = fetch_weights(resolved.model.weights_uri, None, work / "cache")
        predictor = Predictor.load(resolved.model, weights_path, batch_size=args.batch,
                                   inference=inference_choice(args, resolved.model, weights_path))
        load = time.perf_counter() - started
        print(f"model load in-process ({args.runtime} import, backbone, classifier): {load:.2f} s", flush=True)
        predictor.predict([small[0].read_bytes()])  # warm-up: the first call traces the graph
        predictor.predict([small[0].read_bytes()] * args.batch)

        for name, photos in (("generated photo (160-480 px)", small), ("12 MP JPEG (4000x3000)", large)):
            times = []
            for photo in photos[: args.photos]:
                t = time.perf_counter()
                (prediction,) = predictor.predict([photo.read_bytes()])
                times.append(time.perf_counter() - t)
                assert prediction.scored, prediction.reason
            print(f"one photo per call, {name}: median {statistics.median(times):.3f} s, "
                  f"worst {max(times):.3f} s per photo ({len(times)} photos)", flush=True)
            contents = [p.read_bytes() for p in photos[: args.batch]]
            t = time.perf_counter()
            predictions = predictor.predict(contents)
            batch = time.perf_counter() - t
            assert all(p.scored for p in predictions)
            print(f"batch of {len(contents)}, {name}: {batch / len(contents):.3f} s per photo "
                  f"({batch:.2f} s per call)", flush=True)
    print(f"machine: {os.cpu_count()} cores; target: well under 2 s per photo after the model is loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
