"""docker-compose.yaml, validated by Compose itself (`docker-compose config`, no engine needed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from conftest import PROJECT_ROOT

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose is not installed (make test installs Debian's docker-compose as root)")

AIRFLOW_SERVICES = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                    "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}


@pytest.fixture(scope="module")
def config() -> dict:
    out = subprocess.run([COMPOSE, "-f", str(PROJECT_ROOT / "docker-compose.yaml"), "--env-file",
                          str(PROJECT_ROOT / ".env.example"), "config"],
                         capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_services_and_commands(config):
    assert set(config["services"]) == {"postgres", "airflow-init", *AIRFLOW_SERVICES}
    for service, command in AIRFLOW_SERVICES.items():
        assert config["services"][service]["command"] == [command] or config["services"][service]["command"] == command
        env = config["services"][service]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["IMAGE_PIPELINE_COMPUTE"] == "local" and env["IMAGE_PIPELINE_ROOT_URI"] == "file:///opt/airflow/data"
        depends = config["services"][service]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
    init = " ".join(config["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in init and "image_tools.weights" in init


def test_health_checks(config):
    for service in ("postgres", *AIRFLOW_SERVICES):
        check = config["services"][service]["healthcheck"]
        assert check["test"] and check["retries"] >= 5, service
    assert "pg_isready" in config["services"]["postgres"]["healthcheck"]["test"]
    assert any("/api/v2/version" in part for part in config["services"]["airflow-apiserver"]["healthcheck"]["test"])


def test_project_folders_are_mounted_and_the_image_is_built(config):
    for service in ("airflow-init", *AIRFLOW_SERVICES):
        spec = config["services"][service]
        targets = {}
        for volume in spec["volumes"]:
            if isinstance(volume, dict):
                targets[volume["target"]] = volume["source"]
            else:
                source, target = volume.split(":")[:2]
                targets[target] = source
        for folder in ("dags", "plugins", "spark_jobs", "data", "conf", "bootstrap"):
            assert targets[f"/opt/airflow/{folder}"] == str(PROJECT_ROOT / folder), (service, folder)
        assert spec["build"]["context"] == str(PROJECT_ROOT)
    ports = config["services"]["airflow-apiserver"]["ports"]
    assert any("127.0.0.1" in str(p) and "8080" in str(p) for p in ports)
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2" in dockerfile and "openjdk-17" in dockerfile
    assert "requirements.txt" in dockerfile and "constraints.txt" in dockerfile
