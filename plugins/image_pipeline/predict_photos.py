"""Predict the class of photos with a trained run's model, on this machine: no Spark, no network.

    python -m image_pipeline.predict_photos --model file:///data/runs/<run_key>/models photo1.jpg photo2.png
    python -m image_pipeline.predict_photos --model latest --json inbox/*.jpg
    python -m image_pipeline.predict_photos --model s3://bucket/prefix/runs/<run_key>/models --top 5 photo.jpg

``--model`` takes the models URI of a run (``<root>/runs/<run_key>/models``; file://, s3:// or a plain
local path), a run URI, a storage root (its ``models/latest.json`` is followed), a model.json or
latest.json file, or ``latest`` (the latest successful model under ``IMAGE_PIPELINE_ROOT_URI``).
The run's backbone is built with the run's own weights (``weights_uri`` in model.json; s3:// weights
are copied once into a local cache) and resize policy, then the run's PCA and multiclass classifier.

Prints, for each photo, the top classes with probabilities: a table, or a JSON list with ``--json``.
A photo whose top probability is under the model's answer threshold (``--threshold`` overrides it;
a model trained before thresholds has none: 0) is marked "not sure", its top classes still listed.
Exit codes: 0 every photo scored (sure or not); 1 some photo not scored (its row says why); 2 the
model cannot be used (unknown URI, malformed model.json, weights not available): one error line naming it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from image_pipeline.conventions import RANDOM_WEIGHTS, is_weights_file
from image_pipeline.planning.objects import object_path, readable_path
from image_pipeline.publishing.model_resolution import CliModelError, resolve_model
from image_pipeline.shipped import import_job_library

EXIT_OK, EXIT_NOT_SCORED, EXIT_MODEL_ERROR = 0, 1, 2
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "image-pipeline" / "weights"


def fetch_weights(weights_uri: str | None, conn_id: str | None, cache_dir: Path) -> str | None:
    """A local path of the run's weights file (None: Keras' cache or random weights need no file).

    Local weights are used in place; object-store weights are copied once into ``cache_dir`` (named by
    the URI's hash, re-fetched when the size differs) through a temporary file, so an interrupted copy
    is never mistaken for the weights.
    """
    if not is_weights_file(weights_uri):
        return None
    if weights_uri.startswith("file://") or "://" not in weights_uri:
        local = Path(weights_uri.removeprefix("file://"))
        if not local.is_file():
            raise CliModelError(f"the run's weights {weights_uri} do not exist on this machine")
        return str(local)
    try:
        remote = object_path(weights_uri, conn_id)
        size = remote.stat().st_size
        target = cache_dir / hashlib.sha256(weights_uri.encode()).hexdigest()[:16] / weights_uri.rsplit("/", 1)[-1]
        if not target.is_file() or target.stat().st_size != size:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
            with remote.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(8 << 20):
                    dst.write(chunk)
            os.replace(tmp, target)
    except CliModelError:
        raise
    except Exception as exc:
        raise CliModelError(f"cannot fetch the run's weights {weights_uri}: {type(exc).__name__}: {exc}") from None
    return str(target)


def read_photo(location: str, conn_id: str | None) -> tuple[bytes | None, str | None]:
    """A photo's bytes, or None and why it cannot be read (local path, file:// or s3://)."""
    try:
        return readable_path(location, conn_id).read_bytes(), None
    except FileNotFoundError:
        return None, "file not found"
    except IsADirectoryError:
        return None, "is a folder, not a photo"
    except PermissionError:
        return None, "permission denied"
    except Exception as exc:
        return None, f"cannot read: {type(exc).__name__}: {exc}"


def predict_photos(predictor, photos: list[str], top: int, conn_id: str | None,
                   threshold: float | None = None, model_sha256: str | None = None) -> list[dict]:
    """One result per photo, in order: ``{"photo", "top": [{"class", "probability"}] | None, "reason",
    "uncertain", "threshold", "model_sha256"}``; ``threshold`` None: the model's; ``model_sha256``: the
    digest of the model.json that answered."""
    threshold = predictor.model.threshold if threshold is None else threshold
    contents, read_reasons = zip(*(read_photo(p, conn_id) for p in photos), strict=True) if photos else ((), ())
    predictions = predictor.predict([c if c is not None else b"" for c in contents], top, threshold)
    results = []
    for photo, prediction, read_reason in zip(photos, predictions, read_reasons, strict=True):
        results.append({
            "photo": photo,
            "top": [{"class": label, "probability": round(p, 6)} for label, p in prediction.top]
            if prediction.scored else None,
            "reason": read_reason or prediction.reason,
            "uncertain": prediction.uncertain,
            "threshold": threshold,
            "model_sha256": model_sha256,
        })
    return results


def _classes(result: dict) -> list[str]:
    cells = [f"{t['class']} {100 * t['probability']:.1f}%" for t in result["top"]]
    if result["uncertain"]:
        cells[0] = f"not sure: {cells[0]}"
    return cells


def render_table(results: list[dict], top: int) -> str:
    """A table a person reads: one row per photo, the top classes with percentages, or why not."""
    header = ["photo", *[f"class {i}" for i in range(1, top + 1)]]
    scored = [[r["photo"], *_classes(r)] for r in results if r["top"] is not None]
    widths = [max([len(header[i])] + [len(row[i]) for row in scored if i < len(row)]) for i in range(len(header))]
    widths[0] = max([widths[0]] + [len(r["photo"]) for r in results])

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=False)).rstrip()

    lines = [line(header)]
    for r in results:
        if r["top"] is None:
            lines.append(f"{r['photo'].ljust(widths[0])}  not scored: {r['reason']}")
        else:
            lines.append(line([r["photo"], *_classes(r)]))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from image_pipeline.wiring.settings import load_settings

    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m image_pipeline.predict_photos",
                                     description="Predict the class of photos with a trained run's model.")
    parser.add_argument("--model", required=True,
                        help="models URI of a run (file://, s3:// or a local path), a storage root, "
                             "a model.json/latest.json, or 'latest'")
    parser.add_argument("photos", nargs="+", help="photos: local paths, file:// or s3:// URIs")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--top", type=int, default=3, help="classes shown per photo (default 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="photos per forward pass")
    parser.add_argument("--threshold", type=float, default=None,
                        help="answer threshold in [0, 1]: photos whose top probability is under it are marked "
                             "'not sure' (default: the model's own; 0 for a model without one)")
    parser.add_argument("--aws-conn-id", default=settings.aws_conn_id,
                        help=f"Airflow connection for s3:// URIs (default {settings.aws_conn_id})")
    parser.add_argument("--root-uri", default=settings.root_uri,
                        help=f"storage root of --model latest (default {settings.root_uri})")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help=f"where object-store weights are cached (default {DEFAULT_CACHE_DIR})")
    import_job_library()  # image_jobs from the Spark jobs' sources, sys.path unchanged
    from image_jobs.cli import add_inference_args, check_inference_args

    add_inference_args(parser)
    args = parser.parse_args(argv)
    check_inference_args(parser, args, random_weights=None)  # the model's weights decide the default
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    return args


def load_predictor(args: argparse.Namespace):
    """Resolve the model, fetch its weights, build the predictor; CliModelError when it cannot be used."""
    resolved = resolve_model(args.model, args.root_uri, args.aws_conn_id)
    model = resolved.model
    weights_path = fetch_weights(model.weights_uri, args.aws_conn_id, args.cache_dir)
    from image_jobs.featurize import configure_threads

    configure_threads(os.cpu_count() or 1)  # before TensorFlow's import: all of this machine's cores
    from image_jobs.backbones import WeightsUnavailableError
    from image_jobs.openvino_runtime import InferenceRuntimeError
    from image_jobs.predictor import ModelError, Predictor

    try:
        inference = inference_choice(args, model, weights_path)
        note = check_feature_identity(model, weights_path, inference)
        predictor = Predictor.load(model, weights_path, args.batch_size, inference=inference)
    except (ModelError, WeightsUnavailableError, InferenceRuntimeError, FileNotFoundError, ValueError) as exc:
        raise CliModelError(f"cannot build the model of {resolved.model_uri}: {exc}") from None
    if note:
        print(f"note: {note}", file=sys.stderr)
    return resolved, predictor


def check_feature_identity(model, weights_path: str | None, inference) -> str | None:
    """Refuse (FeatureIdentityError, a ValueError) features of another identity than the model was trained on:
    other weights (the file changed) or another precision; a note for a model that records none."""
    from image_jobs.feature_identity import check_scoring, identity_of
    from image_jobs.openvino_runtime import driver_weights_file

    weights_file = None if model.weights == RANDOM_WEIGHTS else (
        weights_path or driver_weights_file(model.backbone, model.weights))
    scoring = identity_of(model.backbone, weights_file, inference.runtime, inference.precision)
    return check_scoring(model.identity, scoring, model.source)


def inference_choice(args: argparse.Namespace, model, weights_path: str | None):
    """The forward pass's runtime: openvino on the IR next to the weights (exported now, importing
    TensorFlow this once, when it is not there yet), or tensorflow (asked for, or random weights)."""
    from image_jobs.conventions import default_runtime
    from image_jobs.featurize import TENSORFLOW, InferenceChoice

    if (args.runtime or default_runtime(model.weights == RANDOM_WEIGHTS)) == "tensorflow":
        return TENSORFLOW
    from image_jobs.openvino_runtime import driver_weights_file, export_ir, resolve_precision

    weights_file = weights_path or str(driver_weights_file(model.backbone, model.weights))
    return InferenceChoice("openvino", resolve_precision("openvino", args.precision),
                           str(export_ir(model.backbone, weights_file)))


@contextmanager
def library_log_to_stderr() -> Iterator[None]:
    """The job library's log lines (the runtime chosen, what the CPU offers) go to the current stderr
    while the command runs: stdout holds only the answers (Airflow's logging, imported with the storage
    layer, writes to stdout). Restored afterwards, for callers that run ``main`` in-process."""
    import logging

    library = logging.getLogger("image_jobs")
    before = library.level, library.propagate
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    library.propagate = False
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.setLevel(before[0])
        library.propagate = before[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with library_log_to_stderr():
        return predict(args)


def predict(args: argparse.Namespace) -> int:
    """The command once its arguments are parsed: load the model, answer for every photo."""
    started = time.perf_counter()
    try:
        resolved, predictor = load_predictor(args)
    except CliModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    model = resolved.model
    print(f"model: run {model.run_key} ({model.backbone}, {len(model.labels)} classes) from {resolved.model_uri}"
          + (f" via {resolved.via_latest}" if resolved.via_latest else "") + f" (sha256 {resolved.digest})"
          + f", loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    threshold = model.threshold_note if args.threshold is None else \
        f"{args.threshold:g} from --threshold (the model's: {model.threshold_note})"
    print(f"answer threshold: {threshold}; photos under it are marked 'not sure'", file=sys.stderr)
    results = predict_photos(predictor, args.photos, args.top, args.aws_conn_id, args.threshold, resolved.digest)
    print(json.dumps(results, indent=2) if args.json else render_table(results, min(args.top, len(model.labels))))
    return EXIT_NOT_SCORED if any(r["top"] is None for r in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
