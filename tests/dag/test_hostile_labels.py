"""The whole DAG on class folders named the way a shell would execute: nothing is ever run by a shell.

One dag.test() run on the local Spark cluster. The images URI itself contains `$(touch <tmp>/pwned)`
and `$(touch /tmp/pwned)`; the class folders are named with spaces, accents, CJK, quotes, a comma,
'..', a Jinja template, command substitution, backticks and `;rm -rf x`. The test process (and so
every process of the run, cluster included) works in a folder where a shell would create `pwned` or
delete `x`. Asserted: the run succeeds, the report and metrics.csv carry the class names exactly, no
`pwned` file appears anywhere and `x` is still there. Also exercised: a nested sub-folder (its images
keep the class), an empty folder and a hidden '..x' folder (no classes), a file directly under the
images URI (a reject).
"""

from __future__ import annotations

import csv
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from dag_runs import leftover_processes, set_mtime, task_states
from image_jobs.conventions import FORMULA_STARTS, csv_cell_value
from image_pipeline.compute.local.cluster import cluster_processes_alive
from image_tools.sample_images import write_sample_images
from project_paths import PROJECT_ROOT

pytestmark = pytest.mark.spark

LABELS = ["chat noir é 柴犬", "it's \"quoted\", a..b {{ 7*7 }}", "$(touch pwned) `touch pwned`", "a;rm -rf x",
          "=HYPERLINK(\"x\",\"y\")", "-x"]  # the last two: a spreadsheet formula, an option to a parser
PHOTOGRAPHED = datetime(2026, 4, 1, tzinfo=UTC)
LOGICAL_DATE = datetime(2026, 4, 15, 12, 34, tzinfo=UTC)  # its own date: no other test's run is reused
GLOBAL_PWNED = Path("/tmp/pwned")


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _stat(path: Path):
    return (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, converted_weights, java_home, airflow_db):
    """Images under a hostile URI in hostile class folders, and the DAG run over them."""
    from airflow.dag_processing.dagbag import DagBag

    root = tmp_path_factory.mktemp("hostile")
    images_uri = f"file://{root}/in $(touch {root}/pwned) and $(touch /tmp/pwned)/images"
    images = Path(images_uri.removeprefix("file://"))
    write_sample_images(images, n_classes=len(LABELS), per_class=8, seed=41)
    for folder, label in zip(sorted(p for p in images.iterdir()), LABELS, strict=True):
        folder.rename(images / label)
    nested = images / LABELS[0] / "sub" / "deeper"
    nested.mkdir(parents=True)
    for photo in sorted((images / LABELS[0]).glob("*.*"))[:2]:
        photo.rename(nested / photo.name)
    (images / "empty").mkdir()
    (images / "..x").mkdir()
    photo = next((images / LABELS[1]).iterdir()).read_bytes()
    (images / "..x" / "hidden.jpg").write_bytes(photo)
    (images / "loose.jpg").write_bytes(photo)
    set_mtime(images, PHOTOGRAPHED)
    workdir = root / "cwd"  # where a shell started by any process of the run would touch or delete
    (workdir / "x").mkdir(parents=True)
    (workdir / "x" / "keep").write_text("a shell running 'rm -rf x' here would delete this")
    global_before = _stat(GLOBAL_PWNED)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("IMAGE_PIPELINE_ROOT_URI", f"file://{root}/store")
        mp.setenv("IMAGE_PIPELINE_WEIGHTS_URI", f"file://{converted_weights}")
        mp.setenv("IMAGE_PIPELINE_RETRIES", "0")
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "image_classification.py"))
        assert not bag.import_errors, bag.import_errors
        dag_run = bag.get_dag("image_classification").test(logical_date=LOGICAL_DATE, run_conf={
            "images_uri": images_uri, "split_ratios": [0.3, 0.5, 0.7], "test_fraction": 0.25, "max_per_class": 8,
            "local_worker_cores": 2, "local_worker_memory_gb": 3, "min_accuracy": 0.0})
    from image_pipeline.planning.layout import run_key_for

    run = root / "store" / "runs" / run_key_for(dag_run.run_id)
    return {"root": root, "workdir": workdir, "dag_run": dag_run, "run": run, "global_before": global_before}


def test_the_run_succeeds(hostile):
    dag_run = hostile["dag_run"]
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success", task_states(dag_run)
    assert set(task_states(dag_run).values()) == {"success"}


def test_no_shell_ran_any_label_or_uri(hostile):
    root = hostile["root"]
    assert not (root / "pwned").exists() and not (hostile["workdir"] / "pwned").exists()
    assert [p for p in root.rglob("pwned")] == []  # not in the cluster's work folders either
    assert (hostile["workdir"] / "x" / "keep").exists()
    assert _stat(GLOBAL_PWNED) == hostile["global_before"]  # not created, not touched


def test_summary_and_metrics_carry_the_class_names_exactly(hostile):
    report = hostile["run"] / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["classes"] == sorted(LABELS)
    assert summary["image_counts"] == {label: 8 for label in LABELS}  # nested images kept their class
    assert summary["rejects"] == {"count": 1, "by_reason": {"not inside a class folder": 1}}
    metrics = pd.read_csv(report / "metrics.csv")
    assert len(metrics) == 15 * 3  # 6 classes: 15 pairs x 3 split ratios
    assert set(metrics["class_1"].map(csv_cell_value)) | set(metrics["class_2"].map(csv_cell_value)) == set(LABELS)
    assert (metrics["nb_train"] + metrics["nb_test"] == 16).all()
    confusion = pd.read_csv(report / "confusion_matrix.csv", index_col=0)
    assert [csv_cell_value(c) for c in confusion.columns] == sorted(LABELS)
    assert [csv_cell_value(c) for c in confusion.index] == sorted(LABELS)
    for name in ("metrics.csv", "hardest_pairs.csv", "multiclass.csv", "confusion_matrix.csv"):
        cells = [cell for row in csv.reader((report / name).open(newline="")) for cell in row]
        assert not [c for c in cells if c.startswith(FORMULA_STARTS) and not is_number(c)], name
    extract = json.loads((hostile["run"] / "steps" / "extract_features.json").read_text())
    assert extract["features_written"] == 8 * len(LABELS)
    assert extract["rejected_by_reason"] == {"not inside a class folder": 1}


def test_report_md_lists_the_class_names_exactly(hostile):
    import html

    from markdown_it import MarkdownIt

    markdown = (hostile["run"] / "report" / "report.md").read_text()
    rendered = MarkdownIt("commonmark").enable("table").render(markdown)
    cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", rendered)]
    assert cells[: 2 * len(LABELS)] == [x for label in sorted(LABELS) for x in (label, "8")]


def test_every_class_has_its_own_plot_file(hostile):
    from PIL import Image

    report = hostile["run"] / "report"
    class_plots = json.loads((report / "summary.json").read_text())["class_plots"]
    assert sorted(class_plots) == sorted(LABELS) and len(set(class_plots.values())) == len(LABELS)
    for name in class_plots.values():
        assert re.fullmatch(r"accuracy_vs_split_[A-Za-z0-9_.-]+\.png", name)
        with Image.open(report / "plots" / name) as img:
            img.verify()
            assert img.format == "PNG"


def test_no_process_of_the_run_is_left(hostile):
    cluster = hostile["run"] / "cluster"
    assert cluster_processes_alive(cluster) == [] and leftover_processes(str(cluster)) == []
    assert os.getcwd() != str(hostile["workdir"])  # the test process is back where it was
