"""The storage layout: every URI of a run, built from the root URI and the run key.

    images/<label>/...                          input, owned by the user
    features/backbone=<name>/run=<run_key>@<attempt>/   feature rows (appended per run; readers take each
                                                        run's newest committed attempt)
    rejects/backbone=<name>/run=<run_key>@<attempt>/    files that could not be featurized, with reasons
    runs/<run_key>/models/                      PCA + multiclass model, best pairwise models
    runs/<run_key>/report/                      metrics.csv, summary.json, plots/, report.md
    runs/<run_key>/steps/                       each step's own summary (timings, counts)
    runs/<run_key>/cluster/                     the local cluster's pids, ports and logs
    artifacts/<content hash>/                   code zip, entry scripts, bootstrap, weights (EMR)
    logs/                                       EMR LogUri
    models/latest.json                          the latest successful model (a run that passed its gate)
    models/published/sha256-<hex>/model.json    each gated model, as it was gated (named by its digest)
    inbox/...                                   photos to score, owned by the field team
    predictions/<model run_key>/                predictions.csv + batches/run=<scoring run_key>/
    scoring/<run_key>/steps/, cluster/          a scoring run's step summary and local cluster
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

# the run's class list, written by plan_run into the run's steps folder; the steps get its URI (--labels-uri)
LABELS_FILE = "labels.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


MAX_RUN_KEY = 200
DIGEST_CHARS = 10


def run_key_for(run_id: str) -> str:
    """A path-safe run key from an Airflow run id (valid in S3, HDFS and local paths), one per run id.

    Characters outside ``[A-Za-z0-9._-]`` fold to ``_`` and the key is cut at MAX_RUN_KEY characters; when
    folding or cutting changed the id, ``-`` and the first DIGEST_CHARS hex digits of the id's SHA-256 end
    the key, so two run ids never share a run folder (``a:b`` and ``a_b``, or two long ids alike in their
    first 200 characters). ``manual__2026-11-21T10:00:00.123+00:00`` ->
    ``manual__2026-11-21T10_00_00.123_00_00-<digest>``; a plain id such as ``nightly_1`` stays as it is.
    """
    folded = _UNSAFE.sub("_", run_id).strip("._") or "run"  # an id of no safe character: run-<digest>
    if folded == run_id and len(folded) <= MAX_RUN_KEY:
        return folded
    digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:DIGEST_CHARS]
    return f"{folded[:MAX_RUN_KEY - DIGEST_CHARS - 1]}-{digest}"


def join(base: str, *parts: str) -> str:
    """Join URI segments with single slashes."""
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts if p]])


def logs_uri(root_uri: str) -> str:
    """EMR's LogUri under the storage root: every cluster's logs, training and scoring alike."""
    return join(root_uri, "logs")


def artifacts_uri(root_uri: str) -> str:
    """Where the staged code, bootstrap, wheelhouse and weights live, by content hash."""
    return join(root_uri, "artifacts")


@dataclass(frozen=True)
class _Layout:
    """The URIs every run has, training or scoring: its root, folder, steps, cluster, artifacts and logs."""

    root_uri: str
    run_key: str
    run_uri: str
    steps_uri: str
    cluster_uri: str
    artifacts_uri: str
    logs_uri: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class RunLayout(_Layout):
    """Every URI one run reads or writes."""

    images_uri: str
    features_uri: str
    rejects_uri: str
    models_uri: str
    report_uri: str
    labels_uri: str  # the run's class list (LABELS_FILE), written by plan_run, read by the steps


def run_layout(root_uri: str, run_key: str, images_uri: str | None = None) -> RunLayout:
    """The layout of run ``run_key`` under ``root_uri`` (images may live elsewhere)."""
    root = root_uri.rstrip("/")
    run_uri = join(root, "runs", run_key)
    return RunLayout(
        root_uri=root,
        run_key=run_key,
        images_uri=(images_uri or join(root, "images")).rstrip("/"),
        features_uri=join(root, "features"),
        rejects_uri=join(root, "rejects"),
        run_uri=run_uri,
        models_uri=join(run_uri, "models"),
        report_uri=join(run_uri, "report"),
        steps_uri=join(run_uri, "steps"),
        labels_uri=join(run_uri, "steps", LABELS_FILE),
        cluster_uri=join(run_uri, "cluster"),
        artifacts_uri=artifacts_uri(root),
        logs_uri=logs_uri(root),
    )


@dataclass(frozen=True)
class ScoringLayout(_Layout):
    """Every URI one scoring run reads or writes."""

    inbox_uri: str
    predictions_uri: str


def scoring_layout(root_uri: str, run_key: str, model_run_key: str) -> ScoringLayout:
    """The layout of scoring run ``run_key`` with the model of training run ``model_run_key``.

    Scoring runs live under ``scoring/``, not ``runs/``: the two DAGs' run ids (hence keys) can be equal.
    """
    root = root_uri.rstrip("/")
    run_uri = join(root, "scoring", run_key)
    return ScoringLayout(
        root_uri=root,
        run_key=run_key,
        inbox_uri=join(root, "inbox"),
        predictions_uri=join(root, "predictions", model_run_key),
        run_uri=run_uri,
        steps_uri=join(run_uri, "steps"),
        cluster_uri=join(run_uri, "cluster"),
        artifacts_uri=artifacts_uri(root),
        logs_uri=logs_uri(root),
    )
