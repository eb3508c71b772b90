"""What the entry scripts share: argument helpers and the session lifecycle of a job's main()."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def add_labels_args(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--labels-uri`` (a JSON file of the run's classes, written next to the run's steps by the plan) or
    ``--labels-json`` (the list itself: short lists, hand-run jobs); neither: every class found."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--labels-uri", default=None,
                       help=f"a JSON file holding the list of {help_text} (file://, s3://)")
    group.add_argument("--labels-json", default="[]",
                       help=f'JSON list of {help_text}, e.g. \'["beagle", "pug"]\'; [] = all')


class LabelsFileError(ValueError):
    """``--labels-uri`` names a file that does not hold the run's class list; the message names it."""


def load_labels(spark, args: argparse.Namespace) -> list[str]:
    """The run's classes: from ``--labels-uri`` (read through Hadoop's file system) when it was given, else
    ``--labels-json``'s (``args.labels``); LabelsFileError names the file when it is missing or does not hold a
    JSON list of names."""
    if not getattr(args, "labels_uri", None):
        return args.labels
    from image_jobs import storage

    try:
        labels = json.loads(storage.read_text(spark, args.labels_uri))
    except FileNotFoundError:
        raise LabelsFileError(f"--labels-uri {args.labels_uri} does not exist (plan_run writes it)") from None
    except ValueError:
        labels = None
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise LabelsFileError(f"--labels-uri {args.labels_uri} does not hold a JSON list of class names")
    return labels


def parse_labels_json(parser: argparse.ArgumentParser, value: str) -> list[str]:
    """``--labels-json`` as a list of class names; a parser error naming the flag otherwise.

    JSON rather than a comma list: class folder names may contain commas, spaces or quotes.
    """
    try:
        labels = json.loads(value)
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError
    except ValueError:
        parser.error(f"--labels-json must be a JSON list of strings, got {value!r}")
    return labels


def add_batch_args(parser: argparse.ArgumentParser, batch_size_default: int | None, max_pixels_help: str) -> None:
    """``--batch-size``, ``--max-pixels`` and ``--summary-uri`` (the extraction and scoring jobs); None: the
    batch size is required."""
    from image_jobs.decode import DEFAULT_MAX_PIXELS

    parser.add_argument("--batch-size", type=int, required=batch_size_default is None, default=batch_size_default,
                        help="photos per forward pass")
    parser.add_argument("--summary-uri", default=None, help="also write the job's JSON summary to this file")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"decompression-bomb guard: {max_pixels_help}")


def check_run_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A parser error naming the flag when ``--batch-size`` is under 1 or ``--run-key`` is no path segment."""
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if "/" in args.run_key or ":" in args.run_key:
        parser.error(f"--run-key must be path-safe (no '/' or ':'), got {args.run_key!r}")


def write_summary(spark, summary_uri: str | None, summary: dict, log) -> None:
    """Write a job's JSON summary to ``summary_uri`` (when given) and log it."""
    if summary_uri:
        from image_jobs import storage

        storage.write_text(spark, summary_uri, json.dumps(summary, indent=2))
    log.info("done: %s", json.dumps(summary))


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """``--runtime`` and ``--precision``: what runs the CNN forward pass (the extraction and scoring jobs)."""
    from image_jobs.conventions import PRECISIONS, RUNTIMES

    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="what runs the CNN forward pass: openvino (the default: the Keras model exported to "
                             "OpenVINO IR next to the weights, once; the Python workers import no TensorFlow), or "
                             "tensorflow (the default for random weights)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="openvino only: fp32, bf16 (CPUs with BF16), or auto (bf16 where the CPU has it)")


def add_read_args(parser: argparse.ArgumentParser) -> None:
    """``--read-concurrency``: photos each task reads at once (the extraction and scoring jobs)."""
    from image_jobs.conventions import DEFAULT_READ_CONCURRENCY

    def positive(value: str) -> int:
        number = int(value)
        if number < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
        return number

    parser.add_argument("--read-concurrency", type=positive, default=DEFAULT_READ_CONCURRENCY,
                        help="photos each task reads at once, ahead of the forward pass (object stores answer "
                             f"in tens of milliseconds; default {DEFAULT_READ_CONCURRENCY})")


def check_inference_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                         random_weights: bool | None = False) -> None:
    """A parser error naming the flags when ``--runtime`` and ``--precision`` do not go together.

    Without ``--runtime``, the default (``conventions.default_runtime``) is set now, for ``random_weights``;
    ``random_weights`` None: the weights are not known yet, ``args.runtime`` stays None for the caller.
    """
    from image_jobs.conventions import default_runtime
    from image_jobs.openvino_runtime import InferenceRuntimeError, check_choice

    if args.runtime is None and random_weights is not None:
        args.runtime = default_runtime(random_weights)
    try:
        check_choice(args.runtime or default_runtime(False), args.precision)
    except InferenceRuntimeError as exc:
        parser.error(f"--runtime {args.runtime} --precision {args.precision}: {exc}")


def run_job(name: str, args: argparse.Namespace, run: Callable, expected_errors: tuple = (),
            log=None) -> int:
    """Build the job's session, run it, always stop the session.

    Errors in ``expected_errors`` (bad input the job explains) exit with code 2 and their message,
    without a traceback; anything else propagates.
    """
    from image_jobs.session import build_session

    spark = build_session(f"{name} {args.run_key}")
    try:
        run(spark, args)
    except expected_errors as exc:
        if log is not None:
            log.error("%s", exc)
        return 2
    finally:
        spark.stop()
    return 0
