"""Fixtures of the UI tests: one ``airflow standalone`` under a real scheduler for the session, shared by them all."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def airflow_server(tmp_path_factory, converted_weights, java_home):
    """`airflow standalone` (scheduler, LocalExecutor, REST API) on free 127.0.0.1 ports, isolated home,
    generated images; shared by the tests under tests/ui (trigger form, concurrent and killed runs)."""
    import json

    from airflow_server import UI_FAKE_SECRET, standalone_airflow
    from image_tools.sample_images import write_sample_images

    home = tmp_path_factory.mktemp("airflow-ui-home")
    root = tmp_path_factory.mktemp("ui-root")
    write_sample_images(root / "images", n_classes=4, per_class=12, seed=31)
    secrets = {
        "AWS_SECRET_ACCESS_KEY": UI_FAKE_SECRET,
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "AKIAUITESTKEY",
                                                "password": UI_FAKE_SECRET}),
    }
    with standalone_airflow(home, root, converted_weights, java_home, secrets) as server:
        yield server
