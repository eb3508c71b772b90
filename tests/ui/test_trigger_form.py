"""The trigger form in a real browser: Airflow on 127.0.0.1, Debian's Chromium driven by Playwright.

Logs in, opens image_classification, checks the params and their descriptions in the trigger form,
sets the labels and a small max-per-class, triggers, waits for the run to succeed, checks the report
and saves screenshots of the form and of the finished run's graph under test-artifacts/ui/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from image_pipeline.local_cluster import free_port
from image_pipeline.sample_images import write_sample_images

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium)"),
]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "ui"
PASSWORD = "ui-test-password"
CHOSEN_LABELS = ["Abyssinian", "american_bulldog", "american_pit_bull_terrier"]


def http_json(url: str, token: str | None = None, data: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(condition, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"airflow exited with {proc.returncode} while waiting for {what}")
        time.sleep(2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory, converted_weights, java_home):
    """`airflow standalone` on free 127.0.0.1 ports with an isolated home and this test's images."""
    home = tmp_path_factory.mktemp("airflow-ui-home")
    root = tmp_path_factory.mktemp("ui-root")
    write_sample_images(root / "images", n_classes=4, per_class=12, seed=31)
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": PASSWORD}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "IMAGE_PIPELINE_ROOT_URI": f"file://{root}",
        "IMAGE_PIPELINE_WEIGHTS_URI": f"file://{converted_weights}",
        "IMAGE_PIPELINE_SCHEDULE": "none",  # only the run this test triggers
        "IMAGE_PIPELINE_RETRIES": "0",
        "JAVA_HOME": java_home,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    })
    log = (home / "standalone.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_json(f"{base}/api/v2/version"), 180, "the API server", proc)
        token = http_json(f"{base}/auth/token", data={"username": "admin", "password": PASSWORD})["access_token"]
        wait_for(lambda: http_json(f"{base}/api/v2/dags/image_classification", token), 180, "the DAG", proc)
        yield {"base": base, "token": token, "root": root, "home": home}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # standalone stops its components on SIGINT
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_trigger_form_runs_the_pipeline(airflow_server):
    from playwright.sync_api import expect, sync_playwright

    base, token, root = airflow_server["base"], airflow_server["token"], airflow_server["root"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
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
        dialog.locator("[data-testid=trigger-dag-submit]").click()

        runs = wait_for(lambda: http_json(f"{base}/api/v2/dags/image_classification/dagRuns", token)["dag_runs"],
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
    from image_pipeline.layout import run_key_for

    report = root / "runs" / run_key_for(run_id) / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["classes"] == sorted(CHOSEN_LABELS) and summary["images"] == 36
    assert (report / "report.md").exists() and (SCREENSHOTS / "trigger_form.png").stat().st_size > 10_000
