"""The "latest successful" model: ``<root>/models/latest.json``, written only after a run's quality gate passed.

    {"run_key": ..., "run_id": ..., "models_uri": ..., "model_uri": .../models/published/sha256-<hex>/model.json,
     "model_sha256": <hex>, "trained_model_uri": .../multiclass/model.json,
     "report_uri": ..., "backbone": ..., "weights_uri": ..., "labels": [...],
     "multiclass_accuracy": 0.97, "min_accuracy": 0.5, "modified_before": ..., "published_at": ...}

Readers (the prediction CLI with ``--model latest``, the ``image_scoring`` DAG) take the model from here.
The gated model is published immutably: its bytes are copied, once, to a path named by their SHA-256
(``models/published/sha256-<hex>/model.json``) and the record names that copy and its digest, so clearing
and re-running the run's ``train_models`` (which rewrites the run's own ``model.json``) cannot change what
was gated. Readers check the digest of what they read (``verify_model``).
The file is replaced whole (never half-written), and only by a run whose data is at least as recent
as the recorded one's: a backfill of a past interval publishes its report but leaves the current
model in place. The update is a compare-and-swap (``objects.update_text``): two runs publishing at
once (``max_active_runs=2``, a backfill beside a scheduled run) never both act on the same old record,
so the more recent data always ends up recorded.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from image_pipeline.conventions import model_changed, model_sha256
from image_pipeline.planning.layout import join
from image_pipeline.planning.objects import object_path, readable_path, update_text, write_bytes_atomically

LATEST_FILE = ("models", "latest.json")
REQUIRED_KEYS = ("run_key", "models_uri", "model_uri", "backbone", "multiclass_accuracy", "modified_before")


class NoModelError(RuntimeError):
    """There is no usable latest successful model; the message says where it looked and why."""


def latest_uri(root_uri: str) -> str:
    """Where the latest successful model is recorded under a storage root."""
    return join(root_uri, *LATEST_FILE)


def model_json_uri(models_uri: str) -> str:
    """The multiclass model of a run's models folder."""
    return join(models_uri, "multiclass", "model.json")


def parse_latest(text: str, uri: str) -> dict[str, Any]:
    """A latest.json's record, checked for the keys readers need; NoModelError names the file."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NoModelError(f"{uri} is not valid JSON: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise NoModelError(f"{uri} lacks {missing}")
    return record


def read_latest(root_uri: str, conn_id: str | None = None) -> dict[str, Any]:
    """The latest successful model's record under ``root_uri``.

    Raises NoModelError when no training run has passed its quality gate yet (no latest.json).
    """
    uri = latest_uri(root_uri)
    path = readable_path(uri, conn_id)
    if not path.exists():
        raise NoModelError(f"no successful training run has published a model yet: {uri} does not exist "
                           "(run the image_classification DAG; a run records its model there once its "
                           "quality gate passed)")
    return parse_latest(path.read_text(), uri)


PUBLISHED = ("models", "published")


def published_model_uri(root_uri: str, digest: str) -> str:
    """Where a gated model is kept, named by its content: ``models/published/sha256-<hex>/model.json``."""
    return join(root_uri, *PUBLISHED, f"sha256-{digest}", "model.json")


class ModelChangedError(NoModelError):
    """A model file's bytes are not the ones its record was published with; the message names both digests."""


def verify_model(data: bytes, uri: str, expected: str | None) -> str:
    """The digest of a model file read from ``uri``; ModelChangedError when ``expected`` is given and differs."""
    digest = model_sha256(data)
    changed = model_changed(uri, digest, expected)
    if changed:
        raise ModelChangedError(changed)
    return digest


def _publish_model(plan: dict, conn_id: str | None) -> tuple[dict[str, Any], str, str]:
    """Copy the run's model.json, as it is now, to its content-named place (once: the copy never changes);
    returns its facts (backbone, weights URI, labels), its digest and the copy's URI."""
    uri = model_json_uri(plan["models_uri"])
    path = object_path(uri, conn_id)
    if not path.exists():
        raise NoModelError(f"the run's model {uri} does not exist: nothing to publish")
    data = path.read_bytes()
    try:
        model = json.loads(data)
        facts = {"backbone": model["backbone"], "weights_uri": model.get("weights_uri"), "labels": model["labels"]}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise NoModelError(f"the run's model {uri} is unreadable ({type(exc).__name__}: {exc})") from None
    digest = model_sha256(data)
    published = published_model_uri(plan["root_uri"], digest)
    target = object_path(published, conn_id)
    if not target.exists():  # content-named: an existing copy holds these very bytes
        write_bytes_atomically(published, data, conn_id)
    return facts, digest, published


def publish_latest(plan: dict, headline: dict, conn_id: str | None = None,
                   now: datetime | None = None) -> dict[str, Any]:
    """Record the run of ``plan`` as the latest successful model (call only after its quality gate passed).

    Returns ``{"record": ..., "replaced": bool, "uri": ..., "previous_run_key": ...}``. The record is
    not replaced when the current one comes from a run whose data is more recent (a backfill).
    """
    uri = latest_uri(plan["root_uri"])
    facts, digest, published = _publish_model(plan, conn_id)
    record = {
        "run_key": plan["run_key"],
        "run_id": plan["run_id"],
        "models_uri": plan["models_uri"],
        "model_uri": published,  # the gated bytes, never rewritten: a re-run of training cannot change them
        "model_sha256": digest,
        "trained_model_uri": model_json_uri(plan["models_uri"]),
        "report_uri": plan["report_uri"],
        **facts,
        "multiclass_accuracy": headline["multiclass_accuracy"],
        "min_accuracy": plan["min_accuracy"],
        "modified_before": plan["modified_before"],
        "published_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    outcome: dict[str, Any] = {}

    def decide(current: str | None) -> str | None:
        previous = None
        with contextlib.suppress(NoModelError):  # none yet, or unreadable: this run's record replaces it
            previous = parse_latest(current, uri) if current is not None else None
        keep = _keep_previous(previous, record)
        outcome.update(record=previous if keep else record, replaced=not keep, uri=uri,
                       previous_run_key=previous["run_key"] if previous else None)
        return None if keep else json.dumps(record, indent=2)

    update_text(uri, decide, conn_id)  # compare-and-swap: a run racing this one is seen, never overwritten
    return outcome


def _keep_previous(previous: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Whether the recorded model stays: its data is more recent than the new run's (a backfill)."""
    return previous is not None and previous["modified_before"] > record["modified_before"]


def publish_run(plan: dict, conn_id: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """publish_report's work: the report (read back, checked, report.md, quality gate), then latest.json.

    The quality gate raises ``run_report.QualityGateError`` before latest.json is touched, so a failed
    run never becomes the latest successful model. Returns the headline with a ``latest`` entry.
    """
    from image_pipeline.publishing.run_report import publish

    headline = publish(plan["report_uri"], plan["min_accuracy"], conn_id)
    headline["latest"] = publish_latest(plan, headline, conn_id, now)
    return headline
