"""Synthetic feature rows (as the extraction job writes them), for benchmarks and tests of training.

Each class is a Gaussian cluster around its own random centre; ``same_as`` makes a class draw from
another class's distribution, which no classifier can separate (accuracy near 50%).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def sample_feature_frame(classes: list[str], per_class: int, dim: int, seed: int, noise: float = 3.0,
                         same_as: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows with the extraction job's columns: path, label, length, modificationTime, width, height, features."""
    rng = np.random.default_rng(seed)
    centres = {label: rng.normal(0, 1, dim).astype(np.float32) for label in classes}
    for label, twin in (same_as or {}).items():
        centres[label] = centres[twin]
    rows = []
    for label in classes:
        x = centres[label] + rng.normal(0, noise, (per_class, dim)).astype(np.float32)
        rows += [(f"file:/sample/images/{label}/{i:04d}.jpg", label, x[i]) for i in range(per_class)]
    frame = pd.DataFrame(rows, columns=["path", "label", "features"])
    frame["length"] = 1000
    frame["modificationTime"] = pd.Timestamp("2020-01-01")
    frame["width"] = 224
    frame["height"] = 224
    return frame


# the feature identity of the synthetic rows (as an extraction records it: weights digest, precision class)
SAMPLE_IDENTITY = {"weights_digest": "sha256:" + "5a" * 32, "precision_class": "fp32"}


def write_sample_features(spark, features_uri: str, backbone: str, run_key: str, frame: pd.DataFrame,
                          identity: dict[str, str] | None = None) -> str:
    """Write ``frame`` as the run's feature partition, rows of ``identity`` (default ``SAMPLE_IDENTITY``);
    returns its URI."""
    uri = f"{features_uri.rstrip('/')}/backbone={backbone}/run={run_key}"
    frame = frame.assign(**(identity or SAMPLE_IDENTITY))
    spark.createDataFrame(
        frame, "path string, label string, features array<float>, length long, modificationTime timestamp, "
               "width int, height int, weights_digest string, precision_class string",
    ).write.mode("overwrite").parquet(uri)
    return uri


def write_extract_summary(folder, backbone: str, identity: dict[str, str] | None = None) -> str:
    """An extraction summary in ``folder`` recording the feature identity of ``write_sample_features``' rows
    (what the training job reads it from); returns its ``file://`` URI."""
    import json
    from pathlib import Path

    path = Path(folder) / f"extract_features-{backbone}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"feature_identity": {"backbone": backbone, **(identity or SAMPLE_IDENTITY)}}))
    return f"file://{path}"
