"""The scoring plan: the latest successful model + params + run time -> one explicit scoring run.

A scoring run scores the photos under ``<root>/inbox/`` modified before its time with the model
recorded in ``<root>/models/latest.json``, into ``<root>/predictions/<model run_key>/``. Before any
cluster starts, ``unscored_photos`` compares the inbox listing with that model's predictions.csv, so
a poll that finds nothing new costs one listing, not a cluster.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from image_pipeline.conventions import PHOTO_KEY_CSV, csv_cell_value, photo_key, runtime_lacks_weights
from image_pipeline.planning import PlanError
from image_pipeline.planning.layout import ScoringLayout, join, run_key_for, scoring_layout
from image_pipeline.planning.listing import info_mtime, is_hidden, walk_images
from image_pipeline.planning.run_plan import (
    bounded,
    emr_choices,
    flat_plan,
    inference_choice,
    require_local_uris,
    utc_instant,
)
from image_pipeline.wiring.params import LOCAL_PARAMS
from image_pipeline.wiring.settings import Settings

SCORING_KIND = "scoring"


@dataclass(frozen=True)
class ScoringPlan:
    """Everything one scoring run does, as plain values (what crosses XCom)."""

    run_id: str
    compute: str
    modified_before: str  # ISO-8601 UTC: the run scores photos modified before it
    layout: ScoringLayout
    model_run_key: str
    models_uri: str
    backbone: str
    weights_uri: str | None
    labels: list[str]
    batch_size: int
    read_concurrency: int  # photos each scoring task reads at once
    local_workers: int
    local_worker_cores: int
    local_worker_memory_gb: int
    answer_threshold: float | None  # None: the model's own
    runtime: str  # what runs the CNN forward pass of scoring
    precision: str
    emr: dict[str, Any] | None = None
    # the gated model.json (published under its digest) and its SHA-256; None for a latest.json from before
    # models were published immutably: the job then reads <models_uri>/multiclass/model.json
    model_json_uri: str | None = None
    model_sha256: str | None = None
    kind: str = SCORING_KIND  # steps.steps_for builds the scoring step from such a plan

    def as_dict(self) -> dict[str, Any]:
        return flat_plan(self)


def build_scoring_plan(params: dict, run_id: str, modified_before: datetime, settings: Settings, latest: dict,
                       emr_settings=None) -> ScoringPlan:
    """Validate params and resolve them with the latest successful model into a ScoringPlan."""
    runtime, precision = inference_choice(params)
    if runtime_lacks_weights(runtime, latest.get("weights_uri")):
        raise PlanError(f"param 'runtime' openvino runs exported weights; the latest model (run "
                        f"{latest['run_key']}) was trained on random weights, a timing run: use runtime tensorflow")
    layout = scoring_layout(settings.root_uri, run_key_for(run_id), latest["run_key"])
    published = latest.get("model_sha256") is not None
    require_local_uris({**layout.as_dict(), "models_uri": latest["models_uri"],
                        **({"model_json_uri": latest["model_uri"]} if published else {})}, settings.compute)
    return ScoringPlan(
        run_id=run_id,
        compute=settings.compute,
        modified_before=utc_instant(modified_before),
        layout=layout,
        model_run_key=latest["run_key"],
        models_uri=latest["models_uri"],
        backbone=latest["backbone"],
        weights_uri=latest.get("weights_uri"),
        labels=list(latest.get("labels") or []),
        # answer_threshold: None (declared nullable) for the model's own
        **{name: bounded(params, name) for name in ("batch_size", "read_concurrency", "answer_threshold",
                                                    *LOCAL_PARAMS)},
        emr=emr_choices(params, emr_settings) if settings.compute == "emr" and emr_settings else None,
        runtime=runtime,
        precision=precision,
        model_json_uri=latest["model_uri"] if published else None,
        model_sha256=latest.get("model_sha256"),
    )


def unscored_photos(inbox_uri: str, predictions_uri: str, modified_before: datetime,
                    conn_id: str | None = None) -> tuple[int, int]:
    """(photos in the inbox modified before ``modified_before``, how many of them predictions.csv lacks).

    The inbox is listed as the scoring job lists it: recursive, image extensions, names Spark's file sources
    treat as hidden (``._IMG.jpg``, ``_tmp/``) left out. Both are streamed: the task holds one 64-bit
    fingerprint per scored photo, never the listing or the CSV. A best-effort pre-check: the scoring job
    decides exactly. An inbox that does not exist holds 0.
    """
    from image_pipeline.planning.objects import object_path

    inbox = object_path(inbox_uri, conn_id)
    if not inbox.exists():
        return 0, 0
    scored = scored_fingerprints(object_path(join(predictions_uri, "predictions.csv"), conn_id))
    top = inbox.path.rstrip("/")
    listed = unscored = 0
    for relative, info in walk_images(inbox, modified_before):
        if is_hidden(relative):
            continue
        listed += 1
        unscored += hash(photo_key(f"{top}/{relative}", info.get("size") or 0, info_mtime(info))) not in scored
    return listed, unscored


def scored_fingerprints(csv_path) -> set[int]:
    """The fingerprint (``hash`` of ``photo_key``, stable within the process) of every photo predictions.csv
    holds, read row by row."""
    scored: set[int] = set()
    if not csv_path.exists():
        return scored
    with csv_path.open("r", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            path, length, modification_time = (row[column] for column in PHOTO_KEY_CSV)
            when = datetime.fromisoformat(modification_time.replace("Z", "+00:00"))
            scored.add(hash(photo_key(csv_cell_value(path), length, when)))
    return scored
