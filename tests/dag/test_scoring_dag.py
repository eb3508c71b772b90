"""image_scoring: parses offline, its task graph on both backends, the Asset wiring between the two DAGs.

Both DAGs end to end (scoring before any model, the Asset event of a training run, the inbox scored,
nothing scored twice) are in test_dag_end_to_end.py, which shares its training runs with them.
"""

from __future__ import annotations

import pytest

from dag_parse import HEAVY, parse_in_subprocess
from project_paths import PROJECT_ROOT

SCORING_FILE = PROJECT_ROOT / "dags" / "image_scoring.py"
TRAINING_FILE = PROJECT_ROOT / "dags" / "image_classification.py"
ROOT = "file:///srv/images-store"


@pytest.fixture(scope="module")
def scoring_parse():
    return parse_in_subprocess("local", SCORING_FILE, IMAGE_PIPELINE_ROOT_URI=ROOT)


def test_scoring_dag_parses_fast_offline_without_heavy_imports(scoring_parse):
    print(f"image_scoring parse time: {scoring_parse['seconds']:.2f} s")
    assert set(scoring_parse["heavy_modules"]) & set(HEAVY) == set()
    assert scoring_parse["dag_id"] == "image_scoring"
    assert "latest successful model" in scoring_parse["doc_md"]
    assert scoring_parse["max_active_runs"] == 1 and scoring_parse["catchup"] is False
    assert set(scoring_parse["params"]) == {"batch_size", "read_concurrency", "answer_threshold", "runtime",
                                            "precision", "local_workers", "local_worker_cores",
                                            "local_worker_memory_gb"}


def test_scoring_task_graph_on_both_backends(scoring_parse):
    tasks = scoring_parse["tasks"]
    assert set(tasks) == {"plan_scoring", "stage_artifacts", "create_cluster", "score_inbox", "terminate_cluster",
                          "summarise_scoring"}
    assert tasks["create_cluster"]["is_setup"] and tasks["terminate_cluster"]["is_teardown"]
    assert tasks["terminate_cluster"]["trigger_rule"] == "all_done_setup_success"
    assert tasks["score_inbox"]["upstream"] == ["create_cluster", "plan_scoring", "stage_artifacts"]
    assert tasks["score_inbox"]["operator"] == "LocalSparkStepOperator"
    assert {"score_inbox", "create_cluster"} <= set(tasks["terminate_cluster"]["upstream"])
    assert {"terminate_cluster", "score_inbox"} <= set(tasks["summarise_scoring"]["upstream"])
    emr = parse_in_subprocess("emr", SCORING_FILE, IMAGE_PIPELINE_ROOT_URI="s3://bucket/prefix")["tasks"]
    assert set(emr) == {"plan_scoring", "stage_artifacts", "emr_requests", "create_cluster", "add_steps",
                        "score_inbox", "terminate_cluster", "summarise_scoring"}
    assert emr["score_inbox"]["operator"] == "EmrStepWithLogsSensor" and "add_steps" in emr["score_inbox"]["upstream"]
    assert emr["add_steps"]["retries"] == 0 and emr["terminate_cluster"]["is_teardown"]


def test_the_model_asset_links_training_to_scoring(scoring_parse):
    asset = {"name": f"image_classifier_model:{ROOT}", "uri": f"{ROOT}/models/latest.json"}
    training = parse_in_subprocess("local", TRAINING_FILE, IMAGE_PIPELINE_ROOT_URI=ROOT)
    assert training["tasks"]["publish_report"]["outlets"] == [asset]
    assert all(t["outlets"] == [] for name, t in training["tasks"].items() if name != "publish_report")
    assert scoring_parse["timetable"] == "AssetOrTimeSchedule"
    assert scoring_parse["schedule_assets"] == [asset] and scoring_parse["schedule_cron"] == "0 * * * *"
    events_only = parse_in_subprocess("local", SCORING_FILE, IMAGE_PIPELINE_ROOT_URI=ROOT,
                                      IMAGE_PIPELINE_SCORING_SCHEDULE="none")
    assert events_only["timetable"] == "AssetTriggeredTimetable" and events_only["schedule_assets"] == [asset]
    every_15 = parse_in_subprocess("local", SCORING_FILE, IMAGE_PIPELINE_ROOT_URI=ROOT,
                                   IMAGE_PIPELINE_SCORING_SCHEDULE="*/15 * * * *")
    assert every_15["schedule_cron"] == "*/15 * * * *"
