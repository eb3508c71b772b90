"""Class names as users write them, through the report: CSV, summary, report.md, plots and their files."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re

import pandas as pd
import pytest

from bad_images import HOSTILE_LABELS
from image_jobs import report_tables
from image_pipeline.publishing.run_report import publish

# '$' pairs that matplotlib would parse as mathtext (and fail on), a pipe, Markdown emphasis and HTML
REPORT_LABELS = [*HOSTILE_LABELS, r"$\notacommand$", "price $5 | $6", "*bold* _it_ <b>&amp;"]


def results_frame(labels: list[str]) -> pd.DataFrame:
    """What training writes to pairwise_results: one model per pair and split."""
    rows = []
    for (i, c1), (j, c2) in itertools.combinations(enumerate(sorted(labels)), 2):
        for num_model, split in enumerate((0.3, 0.7), start=1):
            rows.append({"class_1": c1, "class_2": c2, "split": split, "iteration": 100, "num_model": num_model,
                         "predict_pct": 50.0 + (i + j) % 50, "nb_train": 7, "nb_test": 3, "nb_correct": 2,
                         "model_type": "linear_svm", "fit_seconds": 0.01, "best_of_pair": num_model == 1})
    return pd.DataFrame(rows)


def test_plot_file_stems_are_safe_and_never_collide():
    labels = [*REPORT_LABELS, "a b", "a;b", "a_b", "犬", "猫", "..", "a.b"]
    stems = [report_tables.plot_file_stem(label) for label in labels]
    assert len(set(stems)) == len(labels)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", stem) and not stem.startswith(".") for stem in stems)
    assert report_tables.plot_file_stem("american_pit_bull_terrier") == "american_pit_bull_terrier"  # plain names stay
    assert report_tables.plot_file_stem("a_b") == "a_b" != report_tables.plot_file_stem("a b")


def pair_means(metrics: pd.DataFrame) -> pd.DataFrame:
    """hardest_pairs.csv's rows (what the job computes in Spark), hardest first."""
    table = metrics.groupby(["class_1", "class_2"], as_index=False)["predict_pct"].agg(
        mean_pct="mean", min_pct="min", max_pct="max")
    return table.sort_values(["mean_pct", "class_1", "class_2"]).reset_index(drop=True)


def focus_lines(metrics: pd.DataFrame, focus: str) -> pd.DataFrame:
    """A focus class's plot's rows: other, split, predict_pct."""
    mine = metrics[(metrics["class_1"] == focus) | (metrics["class_2"] == focus)]
    other = mine["class_2"].where(mine["class_1"] == focus, mine["class_1"])
    return pd.DataFrame({"other": other, "split": mine["split"], "predict_pct": mine["predict_pct"]})


def test_plots_draw_class_names_as_plain_text():
    metrics = results_frame(REPORT_LABELS)
    counts = pd.DataFrame({"label": sorted(REPORT_LABELS), "predicted": sorted(REPORT_LABELS), "count": 1})
    _, confusion, _ = report_tables.multiclass_tables(counts, sorted(REPORT_LABELS))
    band = pd.DataFrame({"split": [0.3, 0.7], "mean": [60.0, 70.0], "min": [50.0, 55.0], "max": [90.0, 99.0],
                         "q1": [55.0, 60.0], "q3": [70.0, 80.0]})
    pngs = [report_tables.plot_pair_heatmap(pair_means(metrics), sorted(REPORT_LABELS)),
            report_tables.plot_confusion_matrix(confusion),
            *(report_tables.plot_focus_lines(focus_lines(metrics, label), label) for label in REPORT_LABELS),
            *(report_tables.plot_split_band(band, f"{label} vs each other class") for label in REPORT_LABELS)]
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000 for png in pngs)


def test_dollar_signs_in_class_names_are_not_mathtext():
    import matplotlib
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": True}):  # matplotlib's default: '$...$' is mathtext
        fig, ax = plt.subplots()
        ax.set_title(r"$\notacommand$")
        with pytest.raises(ValueError, match="Unknown symbol"):
            fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)
    metrics = results_frame(REPORT_LABELS)
    assert report_tables.plot_focus_lines(focus_lines(metrics, r"$\notacommand$"), r"$\notacommand$").startswith(
        b"\x89PNG")


def test_unrenderable_names_the_classes_no_installed_font_can_draw():
    assert report_tables.unrenderable(["chat noir é", "a;rm -rf x", "it's \"quoted\""]) == []
    has_cjk_font = report_tables.unrenderable(["柴犬"]) == []
    assert has_cjk_font == any(name in report_tables.FALLBACK_FONTS for name in report_tables._fonts())


def test_csv_summary_and_report_md_keep_class_names_exactly(tmp_path):
    from markdown_it import MarkdownIt

    labels = sorted(REPORT_LABELS)
    metrics = results_frame(labels)
    pairs = pair_means(metrics)
    (tmp_path / "metrics.csv").write_text(metrics.to_csv(index=False))
    summary = {"run_key": "r", "backbone": "mobilenet_v2", "classes": labels,
               "image_counts": {label: 10 for label in labels}, "multiclass": {"accuracy": 0.9, "macro_f1": 0.9},
               "hardest_pairs": pairs.head(10).to_dict(orient="records"), "seconds_per_step": {},
               "plots": [f"accuracy_vs_split_{report_tables.plot_file_stem(label)}.png" for label in labels]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))

    publish(f"file://{tmp_path}", 0.5)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "metrics.csv").read_text())))
    assert {r["class_1"] for r in rows} | {r["class_2"] for r in rows} == set(labels)
    html = MarkdownIt("commonmark").enable("table").render((tmp_path / "report.md").read_text())
    cells = [html_unescape(c) for c in re.findall(r"<td>(.*?)</td>", html)]
    per_class = cells[: 2 * len(labels)]
    assert per_class[0::2] == labels  # the images-per-class table, one row per class, names as written
    hardest = cells[2 * len(labels):]
    assert [(hardest[i], hardest[i + 1]) for i in range(0, len(hardest), 4)] == list(
        zip(pairs.head(10)["class_1"], pairs.head(10)["class_2"], strict=True))


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)
