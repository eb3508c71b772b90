"""Which model a prediction uses: the model.json that ``--model`` designates, found and checked.

A run's models URI (``<root>/runs/<run_key>/models``; file://, s3:// or a plain local path), a run URI, a
storage root (its ``models/latest.json`` is followed), a model.json or latest.json file, or ``latest`` (the
latest successful model under the storage root). A model reached through a latest.json is checked against
the digest recorded there (``latest_model.verify_model``).
"""

from __future__ import annotations

from dataclasses import dataclass

from image_pipeline.planning.objects import readable_path, to_uri
from image_pipeline.shipped import import_job_library


class CliModelError(RuntimeError):
    """The model cannot be used; the message is the one line the user sees."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where the model was found and its validated content."""

    model_uri: str  # the model.json it was read from
    via_latest: str | None  # the latest.json followed to get there, if any
    model: object  # image_jobs.predictor.MulticlassModel
    digest: str = ""  # the SHA-256 of the model.json bytes read (checked against latest.json's when followed)


def _exists(uri: str, conn_id: str | None) -> bool:
    return readable_path(uri, conn_id).exists()


def _read_text(uri: str, conn_id: str | None) -> str:
    return readable_path(uri, conn_id).read_text()


def _read_model(uri: str, conn_id: str | None, expected: str | None):
    """A model.json read once: its validated model and the digest of its bytes (checked when ``expected``)."""
    from image_jobs.predictor import load_model_json
    from image_pipeline.publishing.latest_model import verify_model

    data = readable_path(uri, conn_id).read_bytes()
    digest = verify_model(data, uri, expected)
    return load_model_json(data.decode("utf-8"), uri), digest


def resolve_model(spec: str, root_uri: str, conn_id: str | None) -> ResolvedModel:
    """Find and validate the model.json that ``spec`` designates; CliModelError says why not."""
    import_job_library()  # image_jobs from the Spark jobs' sources, sys.path unchanged
    from image_jobs.predictor import ModelError
    from image_pipeline.publishing.latest_model import (
        NoModelError,
        latest_uri,
        model_json_uri,
        parse_latest,
        read_latest,
    )

    via_latest, expected = None, None
    try:
        if spec == "latest":
            via_latest = latest_uri(root_uri)
            record = read_latest(root_uri, conn_id)
            model_uri, expected = record["model_uri"], record.get("model_sha256")
        else:
            uri = to_uri(spec)
            if uri.endswith("latest.json"):
                via_latest = uri
            elif uri.endswith(".json"):
                model_uri = uri
            else:
                candidates = [model_json_uri(uri), model_json_uri(f"{uri}/models")]
                model_uri = next((c for c in candidates if _exists(c, conn_id)), None)
                if model_uri is None and _exists(latest_uri(uri), conn_id):
                    via_latest = latest_uri(uri)
                elif model_uri is None:
                    raise CliModelError(
                        f"no model at {spec}: {candidates[0]} does not exist (give the models URI of a run, "
                        f"<root>/runs/<run_key>/models, a storage root with models/latest.json, or 'latest')")
            if via_latest is not None:
                if not _exists(via_latest, conn_id):
                    raise CliModelError(f"no model at {spec}: {via_latest} does not exist")
                record = parse_latest(_read_text(via_latest, conn_id), via_latest)
                model_uri, expected = record["model_uri"], record.get("model_sha256")
        if not _exists(model_uri, conn_id):
            raise CliModelError(f"no model at {spec}: {model_uri} does not exist")
        model, digest = _read_model(model_uri, conn_id, expected)
    except (ModelError, NoModelError) as exc:
        raise CliModelError(str(exc)) from None
    except CliModelError:
        raise
    except Exception as exc:  # permissions, credentials, an unreachable store: one clear line, no traceback
        raise CliModelError(f"cannot read the model {spec}: {type(exc).__name__}: {exc}") from None
    return ResolvedModel(model_uri, via_latest, model, digest)
