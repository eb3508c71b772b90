"""predictions.csv formatted by pandas: the small-data reference the scoring job's Spark-written file is compared
with, byte for byte (``image_jobs.inbox.csv_frame`` is what the product writes with)."""

from __future__ import annotations

import pandas as pd

from image_jobs.conventions import csv_cell
from image_jobs.inbox import CSV_COLUMNS


def predictions_csv(rows: pd.DataFrame) -> str:
    """predictions.csv text from scored rows (``scored_schema()`` + ``scored_by_run``), ordered by path."""
    out = rows.rename(columns={"modificationTime": "modification_time"})
    texts = ["path", "top1_class", "top3", "reason", "scored_by_run"]
    out = out.assign(**{name: out[name].map(lambda v: csv_cell(v) if isinstance(v, str) else v)
                        for name in texts if name in out})
    if len(out):
        times = pd.to_datetime(out["modification_time"], utc=True)
        out = out.assign(modification_time=times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.replace(
            r"\.(\d{3})\d{3}Z$", r".\1Z", regex=True), top1_probability=out["top1_probability"].round(6))
        if "uncertain" in out:  # batches scored before thresholds existed have neither column: empty cells
            out = out.assign(uncertain=out["uncertain"].map({True: "true", False: "false"}),
                             threshold=out["threshold"].round(6))
    out = out.sort_values(["path", "modification_time"], kind="stable") if len(out) else out
    return out.reindex(columns=CSV_COLUMNS).to_csv(index=False)
