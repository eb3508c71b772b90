"""Report tables and plots from training results' aggregates: pure functions of pandas frames, bytes out.

Plots are rendered to PNG bytes (matplotlib's Agg backend, no display) so the job writes them
through the same file-system layer as everything else: ``file://``, ``s3://`` and ``hdfs://`` alike.
Class names are user data and are drawn as plain text: '$' never starts mathtext, and glyphs a
font lacks fall back to any installed CJK font (``unrenderable`` names the classes none can draw).
"""

from __future__ import annotations

import functools
import hashlib
import io
import re

import numpy as np
import pandas as pd

from image_jobs.conventions import csv_cell


def csv_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell, column name and index label as the product writes it into a CSV
    (``conventions.csv_cell``: neutralised where a spreadsheet would run it as a formula)."""
    def cell(value):
        return csv_cell(value) if isinstance(value, str) else value

    out = frame.copy()
    for name in out.columns:
        if not pd.api.types.is_numeric_dtype(out[name]) and not pd.api.types.is_bool_dtype(out[name]):
            out[name] = out[name].map(cell)
    out.columns = [cell(name) for name in out.columns]
    out.index = out.index.map(cell)
    out.index.name = cell(frame.index.name)
    return out


def multiclass_tables(confusion: pd.DataFrame, labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-class precision/recall/F1/support, the confusion matrix, and accuracy + macro-F1, from the counts of
    (label, predicted) pairs (``count``: aggregated in Spark; at most classes x classes rows).

    The figures of scikit-learn's ``precision_recall_fscore_support`` with ``zero_division=0``.
    """
    position = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for true, predicted, n in confusion[["label", "predicted", "count"]].itertuples(index=False):
        if true in position and predicted in position:
            counts[position[true], position[predicted]] += int(n)
    hits, support, predicted = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, hits / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.where(precision + recall > 0,
                                                                                 precision + recall, 1), 0.0)
    per_class = pd.DataFrame({"class": labels, "precision": precision, "recall": recall, "f1": f1,
                              "support": support.astype(int)})
    matrix = pd.DataFrame(counts, index=labels, columns=labels)
    matrix.index.name = "true \\ predicted"
    total = int(counts.sum())
    overall = {"accuracy": float(hits.sum() / total) if total else 0.0,
               "macro_f1": float(np.mean(f1)) if len(f1) else 0.0, "test_images": total}
    return per_class, matrix, overall


# Fonts with CJK glyphs, in order of preference, used as fallbacks behind DejaVu Sans when installed
# (e.g. Debian's fonts-noto-cjk or fonts-wqy-zenhei, Amazon Linux's google-noto-sans-cjk fonts).
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
                  "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
                  "IPAexGothic", "IPAGothic", "Unifont")


def plot_file_stem(label: str) -> str:
    """A file-name-safe, collision-free stem for a class's plot file.

    ASCII letters, digits, '.', '_' and '-' are kept; when anything else had to be replaced (spaces,
    accents, CJK, quotes, '$', ';'...), a short hash of the exact class name keeps two classes that
    differ only there apart ('a b' and 'a;b' would otherwise both be 'a_b').
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._-")[:60] or "class"
    if slug == label:
        return slug
    return f"{slug}-{hashlib.sha1(label.encode('utf-8')).hexdigest()[:8]}"


@functools.cache
def _fonts() -> tuple[str, ...]:
    """Font families the plots use: DejaVu Sans (matplotlib's own), then the installed fallbacks."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ("DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed))


def _configure_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # class names are text: 'a $x$ b' is not mathtext
    matplotlib.rcParams["text.usetex"] = False
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["font.sans-serif"] = list(_fonts())


def unrenderable(labels: list[str]) -> list[str]:
    """Class names with characters that none of the plot fonts can draw (shown as boxes in plots)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    fonts = [FT2Font(font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=True))
             for name in _fonts()]
    return [label for label in labels
            if any(not ch.isspace() and not any(f.get_char_index(ord(ch)) for f in fonts) for ch in label)]


def _figure(width: float, height: float):
    _configure_matplotlib()
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    import warnings

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # one warning per missing glyph per draw would flood the log: the job logs ``unrenderable`` once
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _label_size(n: int) -> float:
    """Tick font size that keeps up to ~40 class names legible."""
    return max(6.0, min(10.0, 220.0 / max(n, 1)))


def plot_split_band(band: pd.DataFrame, title: str) -> bytes:
    """Accuracy against split ratio as a band: mean, min-max and interquartile range per ratio (``band``: one row
    per ratio, the columns of ``pairwise_report.BAND_COLUMNS``)."""
    fig, ax = _figure(9, 5.5)
    ax.fill_between(band["split"], band["min"], band["max"], alpha=0.15, label="min-max over pairs")
    ax.fill_between(band["split"], band["q1"], band["q3"], alpha=0.3, label="interquartile range")
    ax.plot(band["split"], band["mean"], marker="o", label="mean over pairs")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return _split_axes(ax, fig)


def plot_focus_lines(rows: pd.DataFrame, focus: str) -> bytes:
    """Accuracy against split ratio of each pair of ``focus``: one line per other class (``rows``: other, split,
    predict_pct)."""
    fig, ax = _figure(9, 5.5)
    for other, pair in rows.groupby("other", sort=True):
        pair = pair.sort_values("split", kind="stable")
        ax.plot(pair["split"], pair["predict_pct"], marker=".", linewidth=1, label=other)
    ax.set_title(f"{focus} vs each other class: accuracy vs split ratio")
    n = rows["other"].nunique()
    ax.legend(title="other class", fontsize=_label_size(n), ncol=2 if n > 18 else 1,
              loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _split_axes(ax, fig)


def _split_axes(ax, fig) -> bytes:
    ax.set_xlabel("split ratio (share of the pair's sample used for training)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    return _png(fig)


# A class x class figure grows with the classes up to this many inches a side (at the report's resolution a
# 0.32-inch row per class would make 1,000 classes a 323-inch, billion-pixel image); past MAX_TICK_LABELS
# classes the names are left out of the axes (the CSV tables hold every value by name).
MAX_MATRIX_INCHES = 40.0
MAX_TICK_LABELS = 120


def _class_axes(ax, labels: list[str]) -> None:
    """Name a class x class matrix's rows and columns, or say where the names are when there are too many."""
    n = len(labels)
    if n <= MAX_TICK_LABELS:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=_label_size(n))
        ax.set_yticks(range(n), labels, fontsize=_label_size(n))
    else:
        ax.set_xticks([])
        ax.set_yticks([])


def _matrix_inches(n: int, smallest: float) -> float:
    return min(MAX_MATRIX_INCHES, max(smallest, 0.32 * n + 3))


def plot_pair_heatmap(pairs: pd.DataFrame, labels: list[str]) -> bytes:
    """Class-by-class heatmap of mean pairwise accuracy over splits: which classes get confused (``pairs``:
    class_1, class_2, mean_pct)."""
    n = len(labels)
    matrix = np.full((n, n), np.nan)
    index = {label: i for i, label in enumerate(labels)}
    for row in pairs[["class_1", "class_2", "mean_pct"]].itertuples(index=False):
        if row.class_1 in index and row.class_2 in index:
            i, j = index[row.class_1], index[row.class_2]
            matrix[i, j] = matrix[j, i] = row.mean_pct
    size = _matrix_inches(n, 6.0)
    fig, ax = _figure(size + 1.5, size)
    image = ax.imshow(matrix, cmap="viridis", vmin=np.nanmin(matrix) if np.isfinite(matrix).any() else 0, vmax=100)
    _class_axes(ax, labels)
    ax.set_title("Mean pairwise test accuracy (%) over split ratios" + (
        "" if n <= MAX_TICK_LABELS else f"\n{n} classes, in label order: hardest_pairs.csv names them"))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy (%)")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.0f}", ha="center", va="center", color="white", fontsize=8)
    return _png(fig)


def plot_confusion_matrix(matrix: pd.DataFrame) -> bytes:
    """The multiclass confusion matrix, counts per true (rows) and predicted (columns) class."""
    labels = list(matrix.columns)
    n = len(labels)
    size = _matrix_inches(n, 5.0)
    fig, ax = _figure(size + 1.5, size)
    image = ax.imshow(matrix.to_numpy(), cmap="Blues")
    _class_axes(ax, labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Multiclass confusion matrix (test images)" + (
        "" if n <= MAX_TICK_LABELS else f"\n{n} classes, in label order: confusion_matrix.csv names them"))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    if n <= 15:
        values = matrix.to_numpy()
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(values[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > values.max() / 2 else "black")
    return _png(fig)


def plot_explained_variance(ratios: list[float]) -> bytes:
    """PCA explained variance per component and cumulated."""
    ratios = np.asarray(ratios, dtype=float)
    components = np.arange(1, len(ratios) + 1)
    fig, ax = _figure(8, 4.5)
    ax.bar(components, 100 * ratios, color="tab:blue", alpha=0.6, label="per component")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance (%)")
    twin = ax.twinx()
    twin.plot(components, 100 * np.cumsum(ratios), color="tab:red", label="cumulative")
    twin.set_ylabel("cumulative explained variance (%)")
    twin.set_ylim(0, 102)
    ax.set_title(f"PCA: {len(ratios)} components keep {100 * ratios.sum():.1f}% of the variance")
    ax.legend(loc="center left")
    twin.legend(loc="center right")
    return _png(fig)


SELECTION_COLUMNS = ["reduction", "components", "c", "cv_accuracy", "fold_accuracy_std", "folds", "max_iterations",
                     "fit_seconds", "chosen"]
CURVE_COLUMNS = ["threshold", "chosen", "held_out_precision", "held_out_coverage", "test_precision", "test_coverage"]


def selection_table(selection: dict) -> pd.DataFrame:
    """model_selection.csv: the cross-validated accuracy of every (reduction, C) setting, the chosen one marked."""
    return pd.DataFrame(selection["table"]).reindex(columns=SELECTION_COLUMNS)


def precision_coverage_table(answer_threshold: dict) -> pd.DataFrame:
    """precision_coverage.csv: precision and coverage of the answered photos by threshold, held-out and test."""
    return pd.DataFrame(answer_threshold["curve"]).reindex(columns=CURVE_COLUMNS)


def plot_model_selection(table: pd.DataFrame) -> bytes:
    """Cross-validated accuracy against C (log scale), one line per reduction, the chosen setting starred."""
    fig, ax = _figure(8, 4.5)
    for reduction, rows in table.groupby("reduction", sort=False):
        rows = rows.sort_values("c")
        ax.errorbar(rows["c"], 100 * rows["cv_accuracy"], yerr=100 * rows["fold_accuracy_std"], marker="o",
                    capsize=3, label=reduction)
    chosen = table[table["chosen"]].iloc[0]
    ax.plot([chosen["c"]], [100 * chosen["cv_accuracy"]], marker="*", markersize=18, color="black", linestyle="none",
            label=f"chosen: {chosen['reduction']}, C={chosen['c']:g}")
    ax.set_xscale("log")
    ax.set_xlabel("C (inverse regularisation strength)")
    ax.set_ylabel("cross-validated accuracy (%)")
    ax.set_title(f"Multiclass model selection ({int(chosen['folds'])}-fold cross-validation, training split)")
    ax.grid(alpha=0.3)
    ax.legend(title="reduction")
    return _png(fig)


def plot_precision_coverage(curve: pd.DataFrame, threshold: dict) -> bytes:
    """Precision of the answered photos against coverage as the threshold moves, held-out and test."""
    fig, ax = _figure(8, 4.5)
    for which, style in (("held_out", "-"), ("test", "--")):
        ax.plot(100 * curve[f"{which}_coverage"], 100 * curve[f"{which}_precision"], marker=".", linestyle=style,
                label=which.replace("_", "-") + " photos")
    ax.axhline(100 * threshold["target_precision"], color="grey", linewidth=1, label="target precision")
    ax.plot([100 * threshold["coverage"]], [100 * threshold["precision"]], marker="*", markersize=16, color="black",
            linestyle="none", label=f"chosen threshold {threshold['threshold']:.3f}")
    ax.set_xlabel("coverage: photos answered (%)")
    ax.set_ylabel("precision of the answered photos (%)")
    ax.set_xlim(0, 102)
    ax.set_title("Answering only when sure: precision vs coverage")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _png(fig)
