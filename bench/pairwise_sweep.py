"""Benchmark: the training job on the pets study's size: model selection and the full pairwise sweep.

    make bench-sweep                               # 37 classes x 200 images, 1280-d, 9 splits
    make bench-sweep BENCH_ARGS="--classes 10"

Writes synthetic 1280-d features (one Gaussian cluster per class) as a feature
dataset, runs train_models (local[cores]) with its defaults: the multiclass model's selection
(5-fold cross-validation over 3 reductions x 4 C values: 60 fits), then every pair of classes and 9
split ratios (37 classes: 666 pairs, 5,994 models). Prints the sweep's models/second and seconds,
the PCA, selection and multiclass phases apart, and the whole job's seconds. The original study
took 71 s per pair (9 models) on 5 nodes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=37)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    import train_models
    from image_jobs.session import build_session
    from image_pipeline.compute.jobs_archive import build_jobs_zip
    from sample_features import sample_feature_frame, write_extract_summary, write_sample_features

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        spark = build_session("bench-sweep", master=f"local[{args.cores}]",
                              conf={"spark.ui.enabled": "false", "spark.driver.memory": "4g",
                                    "spark.sql.shuffle.partitions": str(args.cores * 4)})
        spark.sparkContext.addPyFile(str(build_jobs_zip(Path(tmp) / "dist")))
        labels = [f"class_{c:02d}" for c in range(args.classes)]
        frame = sample_feature_frame(labels, args.per_class, args.dim, seed=0)
        write_sample_features(spark, f"file://{tmp}/features", "synthetic", "bench", frame)
        started = time.perf_counter()
        summary = train_models.run(spark, train_models.parse_args([
            "--features-uri", f"file://{tmp}/features", "--backbone", "synthetic",
            "--models-uri", f"file://{tmp}/models", "--run-key", "bench",
            "--modified-before", "2100-01-01T00:00:00Z",
            "--extract-summary-uri", write_extract_summary(tmp, "synthetic")]))
        wall = time.perf_counter() - started
        spark.stop()
    pairwise = summary["pairwise"]
    sweep = summary["seconds"]["pairwise"]
    print(f"classes {args.classes} x {args.per_class} images, {args.dim}-d features, {args.cores} cores")
    print(f"pairwise sweep: {pairwise['pairs']} pairs, {pairwise['models']} models in {sweep:.1f} s "
          f"= {pairwise['models'] / sweep:.1f} models/s, {sweep / pairwise['pairs']:.3f} s per pair "
          f"(the study: 71 s per pair)")
    multiclass, seconds = summary["multiclass"], summary["seconds"]
    selection, threshold = multiclass["selection"], multiclass["answer_threshold"]
    chosen = selection["chosen"]
    print(f"model selection: {len(selection['table'])} settings x {selection['folds']} folds = "
          f"{len(selection['table']) * selection['folds']} fits in {seconds['selection']:.1f} s; chosen "
          f"{chosen['reduction']}, C={chosen['c']:g} (cross-validated {100 * chosen['cv_accuracy']:.1f}%)")
    print(f"PCA {args.dim}->{summary['pca_components']}: {seconds['reduce']:.1f} s, "
          f"multiclass refit + threshold: {seconds['multiclass']:.1f} s, whole training job: {wall:.1f} s")
    low, high = multiclass["accuracy_ci95"]
    print(f"multiclass accuracy: {100 * multiclass['accuracy']:.1f}% (95% interval {100 * low:.1f}-{100 * high:.1f}%); "
          f"threshold {threshold['threshold']:.3f} answers {100 * threshold['test_coverage']:.1f}% of the test "
          f"photos at {100 * threshold['test_precision']:.1f}% precision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
