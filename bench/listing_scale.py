"""Benchmark: the listing and the incremental selection over many photos: seconds and driver memory by size.

    make bench-listing                                       # 20,000 and 200,000 tiny files, half already done
    make bench-listing BENCH_ARGS="--sizes 20000,200000 --keep"   # keep the files in /tmp/bench-listing-scale

Writes N tiny files (a few bytes, .jpg names) over 131 class folders (as many as the fruits dataset), one
folder at a time, and feature-store rows for every second one (``<features>/backbone=mobilenet_v2/run=old/``,
committed, identity weights_digest sha256:abab..., fp32), written with pyarrow one folder at a time. Then, per
size, in a fresh child process (so the peaks are that size's): a local[2] session with a 2g driver, a GC and
the heap pools' peaks reset, then the calls of ``extract_features.select_new_images`` (``photo_listing.list_photos``,
``done_rows`` with that identity, ``not_done``, the counts of the listing and of the photos to process). It
prints per size: files, done, to process (must be half), seconds, the JVM heap peak (sum of the heap pools'
peak used; local mode: the executors are in the driver's JVM), the old generation's part of it, the heap
still used after a GC at the end (what the cached listing and selection hold), the Python driver's peak RSS,
each with its baseline right after session start, and the seconds of the same calls again on the warm session
("warm s": without the cold JVM's and Python workers' start-up); then the 200k/20k ratios (the issue's targets:
peak memory within 1.5x, seconds growing no faster than linearly).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 131
IDENTITY = {"weights_digest": "sha256:" + "ab" * 32, "precision_class": "fp32"}
RUN_DIR = "features/backbone=mobilenet_v2/run=old"
KEEP_DIR = Path("/tmp/bench-listing-scale")
MB = 1024 * 1024


def feature_schema():
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("label", pa.string()), ("length", pa.int64()),
                      ("modificationTime", pa.timestamp("us", tz="UTC")), ("width", pa.int32()),
                      ("height", pa.int32()), ("weights_digest", pa.string()), ("precision_class", pa.string()),
                      ("features", pa.list_(pa.float32()))])


def write_folder(images: Path, run: Path, k: int, n: int) -> int:
    """Class folder ``k``: files ``k, k + CLASSES, ...`` below ``n``, and the done rows of its even-numbered
    files (path in Spark's form, the file's own length and time) as one Parquet file; returns the done count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    label = f"Fruit {k:03d}"
    folder = images / label
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(k, n, CLASSES):
        (folder / f"{i:07d}.jpg").write_bytes(b"\xff\xd8" + bytes(i % 5))
    done = [(e.path, e.stat()) for e in os.scandir(folder) if int(e.name[:-4]) % 2 == 0]
    rows = {"path": [f"file:{p}" for p, _ in done], "label": [label] * len(done),
            "length": [s.st_size for _, s in done], "modificationTime": [s.st_mtime_ns // 1000 for _, s in done],
            "width": [1] * len(done), "height": [1] * len(done),
            "weights_digest": [IDENTITY["weights_digest"]] * len(done),
            "precision_class": [IDENTITY["precision_class"]] * len(done), "features": [[0.5, 1.5]] * len(done)}
    pq.write_table(pa.table(rows, schema=feature_schema()), run / f"part-{k:05d}.parquet")
    return len(done)


def generate(root: Path, n: int) -> int:
    """N files and half of them done under ``root`` (reused when complete); returns the done count."""
    marker = root / ".complete"
    if marker.exists():
        return int(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    run = root / RUN_DIR
    run.mkdir(parents=True)
    started = time.perf_counter()
    done = sum(write_folder(root / "images", run, k, n) for k in range(CLASSES))
    (run / "_SUCCESS").touch()
    marker.write_text(str(done))
    print(f"generated {n} files, {done} done, in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return done


def heap_pools(jvm) -> list:
    return [p for p in jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
            if p.getType().name() == "HEAP"]


def memory(jvm) -> dict:
    """The heap pools' peak used (MB, summed) and this process's peak RSS (MB)."""
    pools = heap_pools(jvm)
    return {"heap_peak": sum(p.getPeakUsage().getUsed() for p in pools) / MB,
            "old_peak": sum(p.getPeakUsage().getUsed() for p in pools if "Old" in p.getName()) / MB,
            "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def gc_and_reset(jvm) -> float:
    """A full GC, then every heap pool's peak reset to its current use; returns the heap used now (MB)."""
    jvm.java.lang.System.gc()
    for pool in heap_pools(jvm):
        pool.resetPeakUsage()
    return sum(p.getUsage().getUsed() for p in heap_pools(jvm)) / MB


def select(spark, root: Path) -> tuple:
    """The calls of ``select_new_images`` over ``root``: (seen, to process, seconds, the cached datasets)."""
    from image_jobs import photo_listing
    from image_jobs.photo_store import StoreOptions

    started = time.perf_counter()
    listing = photo_listing.list_photos(spark, f"file://{root}/images", "2100-01-01T00:00:00Z", StoreOptions())
    done = photo_listing.done_rows(spark, [f"file://{root}/{folder}/backbone=mobilenet_v2"
                                        for folder in ("features", "rejects")], "bench", IDENTITY)
    todo = photo_listing.not_done(listing, done).persist()
    n_seen, n_todo = listing.count(), todo.count()
    return n_seen, n_todo, time.perf_counter() - started, (todo, listing)


def measure(root: Path) -> dict:
    """In the child process: the selection over ``root`` timed with the memory figures (a cold session, as a
    job's), then once more on the warm session (seconds only: the per-file cost without the start-up)."""
    from image_jobs.session import build_session
    from image_pipeline.compute.jobs_archive import build_jobs_zip

    spark = build_session("bench-listing", master="local[2]",
                          conf={"spark.ui.enabled": "false", "spark.driver.memory": "2g"})
    spark.sparkContext.addPyFile(str(build_jobs_zip(root / "dist")))
    jvm = spark.sparkContext._jvm
    gc_and_reset(jvm)
    base = memory(jvm)
    n_seen, n_todo, seconds, cached = select(spark, root)
    peak = memory(jvm)
    after_gc = gc_and_reset(jvm)  # what the cached listing and selection still hold
    for frame in cached:
        frame.unpersist(blocking=True)
    warm = select(spark, root)[2]
    spark.stop()
    return {"seen": n_seen, "todo": n_todo, "seconds": seconds, "warm_seconds": warm, "heap_base": base["heap_peak"],
            "heap_peak": peak["heap_peak"], "old_peak": peak["old_peak"], "heap_after_gc": after_gc,
            "rss_base": base["rss_peak"], "rss_peak": peak["rss_peak"]}


def run_child(root: Path) -> dict:
    """``measure`` in a fresh Python process (its own JVM): the last line of its output."""
    out = subprocess.run([sys.executable, __file__, "--child", str(root)], stdout=subprocess.PIPE, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(rows: list[dict]) -> None:
    print(f"{'files':>8} {'done':>7} {'to process':>10} {'half?':>5} {'seconds':>7} {'warm s':>6} "
          f"{'heap base MB':>12} {'heap peak MB':>12} {'old gen peak MB':>15} {'heap after GC MB':>16} "
          f"{'RSS base MB':>11} {'RSS peak MB':>11}")
    for r in rows:
        print(f"{r['files']:>8} {r['done']:>7} {r['todo']:>10} {'yes' if 2 * r['todo'] == r['files'] else 'NO':>5} "
              f"{r['seconds']:>7.2f} {r['warm_seconds']:>6.2f} {r['heap_base']:>12.1f} {r['heap_peak']:>12.1f} "
              f"{r['old_peak']:>15.1f} {r['heap_after_gc']:>16.1f} {r['rss_base']:>11.1f} {r['rss_peak']:>11.1f}")
    small, large = rows[0], rows[-1]
    if small is large:
        return
    name = f"{large['files'] // 1000}k/{small['files'] // 1000}k"
    for what, key in (("JVM heap peak", "heap_peak"), ("Python RSS peak", "rss_peak")):
        ratio = large[key] / small[key]
        print(f"{what} {name}: {ratio:.2f}  (target <= 1.50: {'MET' if ratio <= 1.5 else 'NOT MET'})")
    print(f"old gen peak {name}: {large['old_peak'] / small['old_peak']:.2f}; heap after GC {name}: "
          f"{large['heap_after_gc'] / small['heap_after_gc']:.2f} (the heap peak is mostly young objects: when the "
          f"young GCs ran)")
    for label, key in (("seconds", "seconds"), ("warm seconds", "warm_seconds")):
        per_file = (large[key] / large["files"]) / (small[key] / small["files"])
        print(f"{label} {name}: {large[key] / small[key]:.2f} for {large['files'] / small['files']:.0f}x the files; "
              f"per file: {per_file:.2f}  (target <= 1.00, linear: {'MET' if per_file <= 1.0 else 'NOT MET'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,200000", help="comma list of file counts")
    parser.add_argument("--keep", action="store_true", help=f"keep (and reuse) the files in {KEEP_DIR}")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child))))
        return 0
    print("command:", shlex.join([os.path.relpath(sys.executable, ROOT), *sys.argv]), flush=True)
    base = KEEP_DIR if args.keep else Path(tempfile.mkdtemp(prefix="bench-listing-", dir="/tmp"))
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            root = Path(os.path.realpath(base / f"n{n}"))
            done = generate(root, n)
            rows.append({"files": n, "done": done, **run_child(root)})
            print(f"measured {n} files: {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nlisting + incremental selection, local files, {CLASSES} class folders, local[2], driver 2g, "
          f"each size in a fresh process:")
    report(rows)
    bad = [r["files"] for r in rows if r["seen"] != r["files"] or 2 * r["todo"] != r["files"]]
    if bad:
        print(f"WRONG COUNTS for {bad}: the listing or the selection is off (see 'to process')")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
