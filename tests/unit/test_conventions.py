"""One home for what the Airflow side and the Spark jobs share: the jobs' conventions module."""

from image_jobs import conventions
from image_pipeline import conventions as airflow_side
from image_pipeline.publishing.run_report import METRICS_HEADER_START
from image_pipeline.wiring.params import PAIR_MODES, dag_params
from image_pipeline.wiring.settings import load_settings


def test_the_airflow_side_reads_the_jobs_own_file():
    assert airflow_side.CONVENTIONS_FILE.resolve() == __import__("pathlib").Path(conventions.__file__).resolve()
    for name in ("BACKBONE_NAMES", "PAIR_MODES", "DEFAULT_SPLIT_RATIOS", "IMAGE_SUFFIXES", "STUDY_COLUMNS"):
        assert getattr(airflow_side, name) == getattr(conventions, name), name
    assert airflow_side.min_images_per_class([0.1, 0.5], 0.2) == conventions.min_images_per_class([0.1, 0.5], 0.2)


def test_the_form_the_report_check_and_the_jobs_use_the_same_values():
    from image_jobs.backbones import BACKBONES as REGISTRY
    from image_jobs.pairwise_report import METRICS_COLUMNS
    from image_jobs.training import PAIR_MODES as JOB_PAIR_MODES

    params = dag_params(load_settings({}))
    assert params["pair_mode"].schema["enum"] == list(conventions.PAIR_MODES) == list(PAIR_MODES)
    assert params["backbone"].schema["enum"] == list(conventions.BACKBONE_NAMES) == sorted(REGISTRY)
    assert all(f"{name} (" in params["backbone"].description for name in REGISTRY)
    assert params["split_ratios"].value == list(conventions.DEFAULT_SPLIT_RATIOS)
    assert JOB_PAIR_MODES is conventions.PAIR_MODES
    assert list(METRICS_COLUMNS[:9]) == METRICS_HEADER_START == list(conventions.STUDY_COLUMNS)
    assert tuple(f".{e}" for e in conventions.IMAGE_EXTENSIONS) == conventions.IMAGE_SUFFIXES


def test_the_backbone_registry_builds_exactly_the_backbones_the_form_offers():
    from image_jobs.backbones import BACKBONES as REGISTRY

    assert tuple(sorted(REGISTRY)) == conventions.BACKBONE_NAMES == airflow_side.BACKBONE_NAMES
    assert set(conventions.BACKBONE_NOTES) == set(REGISTRY)
    assert all(name == backbone.name for name, backbone in REGISTRY.items())


def test_named_weights_and_the_runtime_that_cannot_run_them():
    assert [conventions.is_weights_file(w) for w in (None, "", "imagenet", "random", "s3://b/w.keras")] == \
        [False] * 4 + [True]
    assert conventions.runtime_lacks_weights("openvino", conventions.RANDOM_WEIGHTS)
    assert not any(conventions.runtime_lacks_weights(runtime, weights) for runtime, weights in (
        ("tensorflow", "random"), ("openvino", "imagenet"), ("openvino", None), (None, "random")))
    assert conventions.default_runtime(True) == "tensorflow" and conventions.default_runtime(False) == "openvino"


def test_predictions_csv_holds_the_photo_key_the_scoring_plan_reads():
    from image_jobs.inbox import CSV_COLUMNS
    from image_jobs.photo_store import ListedPhoto

    assert set(conventions.PHOTO_KEY_CSV) <= set(CSV_COLUMNS)
    assert ListedPhoto._fields[:2] == conventions.PHOTO_KEY[:2] == conventions.PHOTO_KEY_CSV[:2]


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_and_read_back_exactly():
    values = ['=HYPERLINK("http://x","y")', "+1", "-x", "@SUM(A1)", "\tcmd", "\rcmd", "'quoted", "''", "pug",
              "a=b", "", None]
    cells = [conventions.csv_cell(v) for v in values]
    assert cells[:8] == ["'" + v for v in values[:8]] and cells[8:] == values[8:]
    assert [conventions.csv_cell_value(c) for c in cells] == values
    assert all(not c.startswith(conventions.FORMULA_STARTS) for c in cells if c)
    import re
    assert [bool(re.match(conventions.CSV_ESCAPED_START, v)) for v in values[:-1]] == [True] * 8 + [False] * 3
