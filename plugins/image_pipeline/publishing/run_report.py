"""Publishing a run's report: read it back from the object store, check it, summarise it, gate on quality.

Everything goes through Airflow's ``ObjectStoragePath``, so ``file://`` and ``s3://`` reports are one
code path. A missing, empty or malformed file fails with the file and the problem named; nothing
is ever deleted here.
"""

from __future__ import annotations

import csv
import json
import string
from typing import Any

from image_pipeline.conventions import STUDY_COLUMNS
from image_pipeline.planning.layout import join
from image_pipeline.planning.objects import object_path

REQUIRED_SUMMARY_KEYS = ("run_key", "backbone", "classes", "image_counts", "multiclass", "hardest_pairs",
                         "seconds_per_step", "plots")
METRICS_HEADER_START = list(STUDY_COLUMNS)


class ReportError(RuntimeError):
    """The report is missing, empty or malformed; the message names the file and the problem."""


class QualityGateError(RuntimeError):
    """The model is worse than the run's minimum accuracy."""


def _read(uri: str, conn_id: str | None) -> str:
    path = object_path(uri, conn_id)
    if not path.exists():
        raise ReportError(f"{uri} is missing")
    text = path.read_text()
    if not text.strip():
        raise ReportError(f"{uri} is empty")
    return text


def read_summary(report_uri: str, conn_id: str | None = None) -> dict[str, Any]:
    """summary.json, checked for the keys the summary needs."""
    uri = join(report_uri, "summary.json")
    try:
        summary = json.loads(_read(uri, conn_id))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{uri} is not valid JSON: {exc}") from exc
    if not isinstance(summary, dict):
        raise ReportError(f"{uri} holds a {type(summary).__name__}, not an object")
    missing = [k for k in REQUIRED_SUMMARY_KEYS if k not in summary]
    if missing:
        raise ReportError(f"{uri} lacks {missing}")
    accuracy = summary["multiclass"].get("accuracy") if isinstance(summary["multiclass"], dict) else None
    if not isinstance(accuracy, int | float):
        raise ReportError(f"{uri} has no numeric multiclass.accuracy")
    return summary


def read_metrics(report_uri: str, conn_id: str | None = None) -> dict[str, float | int]:
    """metrics.csv checked row by row for the study's columns and at least one model, streamed (at 1,000 classes
    it holds millions of models): the number of models and their mean accuracy."""
    uri = join(report_uri, "metrics.csv")
    path = object_path(uri, conn_id)
    if not path.exists():
        raise ReportError(f"{uri} is missing")
    models, total = 0, 0.0
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if not [name for name in header if name.strip()]:
            raise ReportError(f"{uri} is empty")
        if header[: len(METRICS_HEADER_START)] != METRICS_HEADER_START:
            raise ReportError(f"{uri} does not start with the columns {METRICS_HEADER_START} (got {header[:9]})")
        for i, row in enumerate(reader, start=2):
            try:
                total += float(row["predict_pct"])
                int(row["nb_test"])
            except (TypeError, ValueError):
                raise ReportError(f"{uri} line {i}: predict_pct/nb_test are not numbers: {row}") from None
            models += 1
    if not models:
        raise ReportError(f"{uri} holds no model")
    return {"models": models, "mean_pct": total / models}


def summarise(summary: dict, metrics: dict[str, float | int], report_uri: str) -> dict[str, Any]:
    """The run's headline numbers, for the log and the task's output."""
    return {
        "run_key": summary["run_key"],
        "backbone": summary["backbone"],
        "classes": len(summary["classes"]),
        "images": sum(summary["image_counts"].values()),
        "image_counts": summary["image_counts"],
        "rejects": summary.get("rejects", {}).get("count", 0),
        "multiclass_accuracy": summary["multiclass"]["accuracy"],
        "macro_f1": summary["multiclass"].get("macro_f1"),
        "pairwise_models": metrics["models"],
        "pairwise_mean_accuracy_pct": round(metrics["mean_pct"], 2),
        "hardest_pairs": summary["hardest_pairs"][:5],
        "seconds_per_step": summary["seconds_per_step"],
        "report_uri": report_uri,
    }


def _cell(text: object) -> str:
    """A class name as a Markdown table cell that renders literally, whatever it holds.

    Every ASCII punctuation character is backslash-escaped (CommonMark allows it for all of them):
    '|' would split the cell, '*', '_', '`', '[', '<', '&'... would become emphasis, code, links or HTML.
    """
    return "".join("\\" + ch if ch in string.punctuation else ch for ch in " ".join(str(text).split()))


def _percent(value: object) -> str:
    return f"{100 * float(value):.1f}%"


def selection_lines(multiclass: dict) -> list[str]:
    """The report's section on how the multiclass model was chosen (none for a summary without it)."""
    selection = multiclass.get("selection")
    if not selection:
        return []
    chosen, interval = selection["chosen"], multiclass.get("accuracy_ci95")
    rows = [f"| {r['reduction']} | {r['c']:g} | {_percent(r['cv_accuracy'])} | {_percent(r['fold_accuracy_std'])} |"
            f" {'**chosen**' if r['chosen'] else ''} |" for r in selection["table"]]
    return [
        "## Multiclass model selection",
        "",
        f"Chosen: **{chosen['reduction']}, C={chosen['c']:g}** ({multiclass.get('model', '')}), by "
        f"{selection['folds']}-fold stratified cross-validation on the training split (seed {selection['seed']}): "
        f"{selection['rule']}. Test accuracy **{_percent(multiclass['accuracy'])}**"
        + (f" (95% Wilson interval {_percent(interval[0])} to {_percent(interval[1])})" if interval else "") + ".",
        "",
        "| reduction | C | cross-validated accuracy | spread over folds (std) | |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def threshold_lines(multiclass: dict) -> list[str]:
    """The report's section on the answer threshold (none for a summary without it)."""
    info = multiclass.get("answer_threshold")
    if not info:
        return []
    met = "" if info["target_met"] else " (the target is not reached: the most precise threshold is used)"
    return [
        "## Answering only when sure",
        "",
        f"Photos whose top probability is under **{info['threshold']:.3f}** are answered \"not sure\" (their top "
        f"classes still listed). On the held-out photos ({info.get('held_out', 'held-out')}) it gives "
        f"{_percent(info['precision'])} precision at {_percent(info['coverage'])} coverage, for a target of "
        f"{_percent(info['target_precision'])}{met}; on the test split {_percent(info['test_precision'])} precision "
        f"at {_percent(info['test_coverage'])} coverage.",
        "",
        "| threshold | held-out precision | held-out coverage | test precision | test coverage |",
        "|---|---|---|---|---|",
        *[f"| {'**' if r['chosen'] else ''}{r['threshold']:.3f}{'**' if r['chosen'] else ''} | "
          f"{_percent(r['held_out_precision'])} | {_percent(r['held_out_coverage'])} | "
          f"{_percent(r['test_precision'])} | {_percent(r['test_coverage'])} |" for r in info.get("curve", [])],
        "",
    ]


def render_markdown(summary: dict, headline: dict) -> str:
    """report.md: the run in a page a person reads, with the plots inline (relative links)."""
    lines = [
        f"# Image classification run `{summary['run_key']}`",
        "",
        f"- Backbone: **{summary['backbone']}** ({summary.get('feature_dim', '?')}-d features, "
        f"PCA to {summary.get('pca_components', '?')} components keeping "
        f"{100 * float(summary.get('pca_explained_variance_total', 0)):.1f}% of the variance)",
        f"- Images: **{headline['images']}** in {headline['classes']} classes; rejected files: {headline['rejects']}",
        f"- Multiclass accuracy: **{100 * headline['multiclass_accuracy']:.1f}%**"
        + (f", macro-F1 {headline['macro_f1']:.3f}" if headline["macro_f1"] is not None else ""),
        f"- Pairwise models: {headline['pairwise_models']}, mean accuracy {headline['pairwise_mean_accuracy_pct']}%",
        "",
        "## Images per class",
        "",
        "| class | images |",
        "|---|---|",
        *[f"| {_cell(label)} | {n} |" for label, n in sorted(summary["image_counts"].items())],
        "",
        *selection_lines(summary["multiclass"]),
        *threshold_lines(summary["multiclass"]),
        "## Hardest pairs",
        "",
        "| class 1 | class 2 | mean accuracy (%) | min (%) |",
        "|---|---|---|---|",
        *[f"| {_cell(p['class_1'])} | {_cell(p['class_2'])} | {p['mean_pct']:.1f} | {p['min_pct']:.1f} |"
          for p in summary["hardest_pairs"]],
        "",
        "## Seconds per step",
        "",
        *[f"- {step}: {seconds}" for step, seconds in summary["seconds_per_step"].items()],
        "",
        "## Plots",
        "",
        *[f"![{name}](plots/{name})" for name in summary["plots"]],
        "",
        "Tables: [metrics.csv](metrics.csv), [multiclass.csv](multiclass.csv), "
        "[confusion_matrix.csv](confusion_matrix.csv), [hardest_pairs.csv](hardest_pairs.csv), "
        "[model_selection.csv](model_selection.csv), [precision_coverage.csv](precision_coverage.csv), "
        "[summary.json](summary.json)",
        "",
    ]
    return "\n".join(lines)


def publish(report_uri: str, min_accuracy: float, conn_id: str | None = None) -> dict[str, Any]:
    """Read and check the report, write report.md next to it, return the headline numbers.

    Raises QualityGateError (after writing report.md) when accuracy is under ``min_accuracy``.
    """
    summary = read_summary(report_uri, conn_id)
    metrics = read_metrics(report_uri, conn_id)
    headline = summarise(summary, metrics, report_uri)
    headline["report_md"] = join(report_uri, "report.md")
    object_path(headline["report_md"], conn_id).write_text(render_markdown(summary, headline))
    headline["quality_gate"] = {"min_accuracy": min_accuracy,
                                "passed": headline["multiclass_accuracy"] >= min_accuracy}
    if not headline["quality_gate"]["passed"]:
        raise QualityGateError(
            f"multiclass accuracy {headline['multiclass_accuracy']:.3f} is below min_accuracy {min_accuracy} "
            f"(report: {headline['report_md']})"
        )
    return headline


def headline_lines(headline: dict[str, Any], run_key: str) -> list[str]:
    """What ``publish_report`` logs: accuracy, hardest pairs, seconds per step, the report, the latest model."""
    latest = headline["latest"]
    if latest["replaced"]:
        model = f"latest successful model is now run {run_key} ({latest['uri']})"
    else:
        model = (f"latest successful model stays run {latest['record']['run_key']}: its data is more recent "
                 f"than this run's ({latest['uri']})")
    return [
        f"multiclass accuracy {100 * headline['multiclass_accuracy']:.1f}% on {headline['classes']} classes, "
        f"{headline['images']} images ({headline['rejects']} rejected), {headline['pairwise_models']} pairwise models",
        "hardest pairs: " + ", ".join(
            f"{p['class_1']} vs {p['class_2']} {p['mean_pct']:.1f}%" for p in headline["hardest_pairs"]),
        f"seconds per step: {json.dumps(headline['seconds_per_step'])}",
        f"report: {headline['report_md']}",
        model,
    ]
