"""The pairwise report's tables from Spark against pandas on the same rows: metrics.csv and hardest_pairs.csv
written by Spark's tasks (hostile class names kept exactly), the statistics per split ratio, and each focus
class's plot data (named lines up to MAX_FOCUS_LINES other classes, a band past it)."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pandas as pd
import pytest

from bad_images import HOSTILE_LABELS
from image_jobs import pairwise_report, storage
from image_jobs.conventions import FORMULA_STARTS, METRICS_COLUMNS, csv_cell_value

pytestmark = pytest.mark.spark


def results(labels: list[str], splits=(0.3, 0.5, 0.7)) -> pd.DataFrame:
    """pairwise_results' rows: one model per pair and split, accuracies spread so the quartiles interpolate."""
    rng = np.random.default_rng(3)
    rows = []
    for c1, c2 in itertools.combinations(sorted(labels), 2):
        for num_model, split in enumerate(splits, start=1):
            rows.append({"class_1": c1, "class_2": c2, "split": split, "iteration": 100, "num_model": num_model,
                         "predict_pct": float(rng.uniform(40, 100)), "nb_train": 7, "nb_test": 3, "nb_correct": 2,
                         "model_type": "linear_svm", "fit_seconds": float(rng.uniform(0, 0.002)),
                         "best_of_pair": num_model == 1, "pair_index": 0})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # Spark must order them itself


def read_csv(path) -> pd.DataFrame:
    """A report table as pandas reads it, its class names back to their exact values."""
    frame = pd.read_csv(path, keep_default_na=False)
    return frame.assign(class_1=frame["class_1"].map(csv_cell_value), class_2=frame["class_2"].map(csv_cell_value))


def test_metrics_and_hardest_pairs_csv_are_pandas_tables_of_the_same_rows(spark, tmp_path):
    labels = [*HOSTILE_LABELS, "=HYPERLINK(\"x\")", "line\nbreak", "'quoted start", "@cmd", "+1"]
    frame = results(labels)
    metrics = pairwise_report.metrics_frame(spark.createDataFrame(frame).repartition(3))
    storage.write_csv_file(pairwise_report.csv_text_columns(metrics), f"file://{tmp_path}/metrics.csv")
    storage.write_csv_file(pairwise_report.csv_text_columns(pairwise_report.pair_table(metrics)),
                           f"file://{tmp_path}/hardest_pairs.csv")

    expected = frame.sort_values(["class_1", "class_2", "split"])[list(METRICS_COLUMNS)].reset_index(drop=True)
    cells = [cell for name in ("metrics.csv", "hardest_pairs.csv") for row in csv.reader(
        (tmp_path / name).open(newline="")) for cell in row]
    assert "'=HYPERLINK(\"x\")" in cells and "'-x" in cells  # a spreadsheet shows them, never runs them
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    written = read_csv(tmp_path / "metrics.csv")
    pd.testing.assert_frame_equal(written, expected, check_exact=False, rtol=1e-12)
    assert written["best_of_pair"].dtype == bool

    pairs = expected.groupby(["class_1", "class_2"], as_index=False)["predict_pct"].agg(
        mean_pct="mean", min_pct="min", max_pct="max").sort_values(["mean_pct", "class_1", "class_2"])
    pd.testing.assert_frame_equal(read_csv(tmp_path / "hardest_pairs.csv"),
                                  pairs.reset_index(drop=True), check_exact=False, rtol=1e-12)


def test_the_band_per_split_is_pandas_mean_min_max_and_quartiles(spark):
    frame = results([f"c{i}" for i in range(9)])
    band = pairwise_report.band_by_split(spark.createDataFrame(frame)).toPandas()
    by_split = frame.groupby("split")["predict_pct"]
    expected = pd.DataFrame({"split": sorted(frame["split"].unique()), "mean": by_split.mean().to_numpy(),
                             "min": by_split.min().to_numpy(), "max": by_split.max().to_numpy(),
                             "q1": by_split.quantile(0.25).to_numpy(), "q3": by_split.quantile(0.75).to_numpy()})
    assert list(band.columns) == list(pairwise_report.BAND_COLUMNS)
    pd.testing.assert_frame_equal(band, expected, check_exact=False, rtol=1e-12)


def test_a_focus_class_gets_named_lines_up_to_the_legend_limit_then_a_band(spark, monkeypatch):
    monkeypatch.setattr(pairwise_report, "MAX_FOCUS_LINES", 4)
    labels = [f"c{i}" for i in range(5)]  # 4 other classes each: lines
    frame = results(labels)
    tables = pairwise_report.focus_tables(spark.createDataFrame(frame), ["c0", "c3"])
    kind, lines = tables["c3"]
    assert kind == "lines" and set(tables) == {"c0", "c3"}
    mine = frame[(frame["class_1"] == "c3") | (frame["class_2"] == "c3")]
    assert sorted(lines["other"].unique()) == ["c0", "c1", "c2", "c4"]
    assert sorted(lines["predict_pct"]) == sorted(mine["predict_pct"])

    frame = results([f"c{i}" for i in range(7)])  # 6 other classes: a band over them
    kind, band = pairwise_report.focus_tables(spark.createDataFrame(frame), ["c3"])["c3"]
    mine = frame[(frame["class_1"] == "c3") | (frame["class_2"] == "c3")].groupby("split")["predict_pct"]
    assert kind == "band"
    np.testing.assert_allclose(band["mean"], mine.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(band["q3"], mine.quantile(0.75).to_numpy(), rtol=1e-12)
