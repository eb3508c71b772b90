"""Deployment settings: environment variables read at DAG parse time, without any I/O.

| variable | default | meaning |
|---|---|---|
| IMAGE_PIPELINE_COMPUTE | local | ``local`` (Spark standalone cluster on this machine) or ``emr`` |
| IMAGE_PIPELINE_ROOT_URI | file://<project>/data | storage root: images/, features/, runs/, ... |
| IMAGE_PIPELINE_SCHEDULE | @weekly | the DAG's schedule (a preset, a cron expression, or "none") |
| IMAGE_PIPELINE_SCORING_SCHEDULE | @hourly | image_scoring polls the inbox (or "none"); it also runs on new models |
| IMAGE_PIPELINE_WEIGHTS_URI | <root>/weights/mobilenet_v2_imagenet.keras | default weights for mobilenet_v2 |
| IMAGE_PIPELINE_AWS_CONN_ID | aws_default | Airflow connection for s3:// URIs |
| IMAGE_PIPELINE_PYTHON | the interpreter running Airflow | Python of the local Spark driver and workers |
| IMAGE_PIPELINE_RETRIES | 1 | retries of the idempotent tasks (steps, planning, staging, teardown) |
| IMAGE_PIPELINE_RETRY_DELAY_SECONDS | 60 | wait before a retry |
| IMAGE_PIPELINE_WHEELHOUSE_DIR | <project>/.wheelhouse | where the EMR nodes' wheelhouse is built and staged from |
| IMAGE_PIPELINE_LOCAL_IDLE_TIMEOUT_MINUTES | 60 | the local cluster stops itself after this long idle (0: never) |
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from image_pipeline.planning.layout import join

PROJECT_ROOT = Path(__file__).resolve().parents[3]
COMPUTE_BACKENDS = ("local", "emr")
# the same default as the EMR backend's idle timeout (IMAGE_PIPELINE_EMR_IDLE_TIMEOUT_MINUTES)
DEFAULT_LOCAL_IDLE_TIMEOUT_MINUTES = 60.0


@dataclass(frozen=True)
class Settings:
    """The deployment's settings, as read from the environment."""

    compute: str
    root_uri: str
    schedule: str | None
    default_weights_uri: str
    aws_conn_id: str
    python: str
    retries: int
    retry_delay_seconds: int
    scoring_schedule: str | None = "@hourly"
    local_idle_timeout_minutes: float = DEFAULT_LOCAL_IDLE_TIMEOUT_MINUTES


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings; an unknown compute backend fails loudly (at parse time, visibly in the UI)."""
    env = os.environ if environ is None else environ
    compute = env.get("IMAGE_PIPELINE_COMPUTE", "local").strip().lower()
    if compute not in COMPUTE_BACKENDS:
        raise ValueError(f"IMAGE_PIPELINE_COMPUTE={compute!r}: choose one of {', '.join(COMPUTE_BACKENDS)}")
    root_uri = env.get("IMAGE_PIPELINE_ROOT_URI", f"file://{PROJECT_ROOT / 'data'}").rstrip("/")
    schedule = env.get("IMAGE_PIPELINE_SCHEDULE", "@weekly").strip()
    scoring_schedule = env.get("IMAGE_PIPELINE_SCORING_SCHEDULE", "@hourly").strip()
    return Settings(
        compute=compute,
        root_uri=root_uri,
        schedule=None if schedule.lower() in ("", "none") else schedule,
        default_weights_uri=env.get("IMAGE_PIPELINE_WEIGHTS_URI", prepared_weights_uri(root_uri, "mobilenet_v2")),
        aws_conn_id=env.get("IMAGE_PIPELINE_AWS_CONN_ID", "aws_default"),
        python=env.get("IMAGE_PIPELINE_PYTHON", sys.executable),
        retries=int(env.get("IMAGE_PIPELINE_RETRIES", "1")),
        retry_delay_seconds=int(env.get("IMAGE_PIPELINE_RETRY_DELAY_SECONDS", "60")),
        scoring_schedule=None if scoring_schedule.lower() in ("", "none") else scoring_schedule,
        local_idle_timeout_minutes=local_idle_timeout_minutes(env),
    )


def prepared_weights_uri(root_uri: str, backbone: str) -> str | None:
    """The ImageNet weights 'make weights' prepares for ``backbone``: ``<root>/weights/<PREPARED_WEIGHTS name>``
    (None for a backbone it does not prepare: Keras' cache)."""
    from image_pipeline.conventions import PREPARED_WEIGHTS  # lazily: it finds the jobs' file by PROJECT_ROOT

    return join(root_uri, "weights", PREPARED_WEIGHTS[backbone]) if backbone in PREPARED_WEIGHTS else None


def local_idle_timeout_minutes(env) -> float:
    """IMAGE_PIPELINE_LOCAL_IDLE_TIMEOUT_MINUTES: minutes, fractions allowed; 0 disables; else fails naming it."""
    name = "IMAGE_PIPELINE_LOCAL_IDLE_TIMEOUT_MINUTES"
    raw = env.get(name, f"{DEFAULT_LOCAL_IDLE_TIMEOUT_MINUTES:g}").strip()
    try:
        minutes = float(raw)
    except ValueError:
        minutes = math.nan
    if not math.isfinite(minutes) or minutes < 0:
        raise ValueError(f"{name}={raw!r}: give a number of minutes >= 0 (fractions allowed; 0 disables the idle "
                         f"timeout)")
    return minutes
