"""The trigger form in a real browser: Airflow on 127.0.0.1, Debian's Chromium driven by Playwright.

Logs in, opens image_classification, checks the params and their descriptions in the trigger form,
sets the labels and a small max-per-class, triggers, waits for the run to succeed, checks the report
and saves screenshots of the form and of the finished run's graph under test-artifacts/ui/.

The form's run is a manual trigger during another run (started through the REST API just before):
both run at the same time under the scheduler and both must succeed without colliding (own
cluster on own ports, own run folders and feature partitions).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from airflow_server import (
    PASSWORD,
    SMALL,
    http_json,
    intervals_overlap,
    processes_mentioning,
    task_instances,
    trigger,
    wait_finished,
    wait_for,
)
from image_pipeline.planning.layout import run_key_for
from project_paths import PROJECT_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium)"),
]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "ui"
CHOSEN_LABELS = ["Abyssinian", "american_bulldog", "american_pit_bull_terrier"]


def test_trigger_form_runs_the_pipeline_during_another_run(airflow_server):
    from playwright.sync_api import expect, sync_playwright

    base, token, root = airflow_server["base"], airflow_server["token"], airflow_server["root"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    earlier = {r["dag_run_id"] for r in http_json(f"{base}/api/v2/dags/image_classification/dagRuns",
                                                  token)["dag_runs"]}  # other tests' runs
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base)
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        # signing in ends with the UI's own redirect to the home page; a goto before it lands is cut short
        page.wait_for_url(f"{base}/", timeout=60_000)
        page.goto(f"{base}/dags/image_classification")
        page.locator("[data-testid=trigger-dag-button]").first.click()
        dialog = page.locator("[data-scope=dialog][data-part=content]")
        expect(dialog).to_be_visible(timeout=30_000)
        form = dialog.locator("[data-testid=config-form]")
        if not form.is_visible():
            dialog.get_by_text("Run Parameters").first.click()
        expect(form).to_be_visible(timeout=15_000)
        text = form.inner_text()
        for fragment in ("Class folders to train on", "Pretrained CNN used as feature extractor",
                         "Balanced sample size per class", "Quality gate", "Training shares"):
            assert fragment in text, fragment
        labels = dialog.locator("[name=element_labels]")
        labels.fill("\n".join(CHOSEN_LABELS))
        dialog.locator("[name=element_max_per_class]").fill("12")
        page.screenshot(path=str(SCREENSHOTS / "trigger_form.png"), full_page=True)
        other = trigger(airflow_server, SMALL)  # e.g. a scheduled run under way
        earlier.add(other)
        dialog.locator("[data-testid=trigger-dag-submit]").click()

        runs = wait_for(lambda: [r for r in http_json(f"{base}/api/v2/dags/image_classification/dagRuns",
                                                      token)["dag_runs"] if r["dag_run_id"] not in earlier],
                        60, "the triggered run")
        run_id = runs[0]["dag_run_id"]
        assert runs[0]["conf"]["labels"] == CHOSEN_LABELS and runs[0]["conf"]["max_per_class"] == 12
        state = wait_for(
            lambda: (s := http_json(f"{base}/api/v2/dags/image_classification/dagRuns/{run_id}", token)["state"])
            in ("success", "failed") and s, 900, "the run to finish")
        page.goto(f"{base}/dags/image_classification/runs/{run_id}")
        expect(page.locator("[data-testid=header-card] [data-testid=state-badge]").first).to_be_visible(
            timeout=30_000)
        page.locator("body").click(position={"x": 700, "y": 10})
        page.keyboard.press("g")  # the UI's own shortcut: "Show Graph (Press g)"
        page.wait_for_timeout(4000)
        page.screenshot(path=str(SCREENSHOTS / "finished_run_graph.png"), full_page=True)
        browser.close()
    assert state == "success"
    report = root / "runs" / run_key_for(run_id) / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["classes"] == sorted(CHOSEN_LABELS) and summary["images"] == 36
    assert (report / "report.md").exists() and (SCREENSHOTS / "trigger_form.png").stat().st_size > 10_000
    assert_ran_side_by_side_without_colliding(airflow_server, other, run_id)


def assert_ran_side_by_side_without_colliding(server, other: str, form: str) -> None:
    import pandas as pd

    root = Path(server["root"])
    assert wait_finished(server, other) == "success"
    a, b = (task_instances(server, r) for r in (other, form))
    assert any(intervals_overlap(a[step], b[step]) for step in ("extract_features", "train_models",
                                                               "evaluate_models")), "the two runs did not overlap"
    clusters = [json.loads((root / "runs" / run_key_for(r) / "cluster" / "cluster.json").read_text())
                for r in (other, form)]
    assert clusters[0]["master_url"] != clusters[1]["master_url"]
    summary = json.loads((root / "runs" / run_key_for(other) / "report" / "summary.json").read_text())
    assert summary["images"] == 48 and len(summary["classes"]) == 4
    assert len(pd.read_csv(root / "runs" / run_key_for(other) / "report" / "metrics.csv")) == 6  # 6 pairs x 1 ratio
    for run_id in (other, form):
        assert processes_mentioning(str(root / "runs" / run_key_for(run_id))) == []
    features = pd.read_parquet(root / "features" / "backbone=mobilenet_v2")
    runs = features["run"].astype(str).str.split("@").str[0]  # run=<key>@<attempt>: the key
    for run_id in (other, form):  # no run wrote an image twice
        mine = features[runs == run_key_for(run_id)]
        assert mine["path"].is_unique
    assert features["path"].nunique() == 48 and set(runs) <= {run_key_for(r) for r in (other, form)}
