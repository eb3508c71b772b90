"""Run the extraction job with ``--runtime openvino`` in a Spark session of its own, then ask its Python
workers what they imported; prints one JSON line: the job's summary and each worker's answer.

    python tests/openvino_job_probe.py <jobs zip> <images dir> <features root> <weights file> [precision]

A session of its own because Python workers live as long as their session: in the tests' shared session
earlier TensorFlow tasks would have imported it into the very workers this checks.
"""

from __future__ import annotations

import json
import sys


def worker_modules(batches):
    import os

    import pandas as pd

    for pdf in batches:
        yield pd.DataFrame({"task": pdf["id"], "pid": os.getpid(),
                            "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                            "openvino": "openvino" in sys.modules})


def main(jobs_zip: str, images: str, root: str, weights: str, precision: str = "fp32") -> int:
    import extract_features
    from image_jobs.session import build_session

    spark = build_session("openvino probe", master="local[2]",
                          conf={"spark.ui.enabled": "false", "spark.python.worker.reuse": "true"})
    spark.sparkContext.addPyFile(jobs_zip)
    args = extract_features.parse_args([
        "--images-uri", f"file://{images}", "--features-uri", f"file://{root}/features",
        "--rejects-uri", f"file://{root}/rejects", "--backbone", "mobilenet_v2", "--weights-uri", f"file://{weights}",
        "--run-key", "openvino", "--modified-before", "2100-01-01T00:00:00Z", "--batch-size", "8",
        "--runtime", "openvino", "--precision", precision])
    summary = extract_features.run(spark, args)
    # the workers that featurized are idle now and are reused for these tasks (openvino in their modules
    # says so: nothing else here imports it)
    answers = spark.range(0, 2, numPartitions=2).mapInPandas(
        worker_modules, "task long, pid long, tensorflow boolean, keras boolean, openvino boolean").collect()
    spark.stop()
    print(json.dumps({"summary": summary, "workers": [row.asDict() for row in answers]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
