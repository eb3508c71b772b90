"""docker-compose.yaml, validated by Compose itself (`docker-compose config`, no engine needed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from project_paths import PROJECT_ROOT

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
    assert set(config["services"]) == {"postgres", "airflow-init", "airflow-prepare-data", *AIRFLOW_SERVICES}
    for service, command in AIRFLOW_SERVICES.items():
        assert config["services"][service]["command"] == [command] or config["services"][service]["command"] == command
        env = config["services"][service]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["IMAGE_PIPELINE_COMPUTE"] == "local" and env["IMAGE_PIPELINE_ROOT_URI"] == "file:///opt/airflow/data"
        depends = config["services"][service]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        assert depends["airflow-prepare-data"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
    init = " ".join(config["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in init and config["services"]["airflow-init"]["user"] == "0:0"
    prepare = config["services"]["airflow-prepare-data"]
    assert prepare["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert prepare["user"] == "50000:0"  # .env.example's AIRFLOW_UID: the services' user writes data/weights
    assert "image_tools.prepare_weights --dir data/weights" in " ".join(prepare["command"])


def test_health_checks(config):
    for service in ("postgres", *AIRFLOW_SERVICES):
        check = config["services"][service]["healthcheck"]
        assert check["test"] and check["retries"] >= 5, service
    assert "pg_isready" in config["services"]["postgres"]["healthcheck"]["test"]
    assert any("/api/v2/version" in part for part in config["services"]["airflow-apiserver"]["healthcheck"]["test"])


def test_project_folders_are_mounted_and_the_image_is_built(config):
    for service in ("airflow-init", "airflow-prepare-data", *AIRFLOW_SERVICES):
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
    assert "requirements/docker.txt" in dockerfile  # the runtime lock: tests/unit/test_locks.py reads it


def test_connections_are_encrypted_with_a_key_made_once(config, tmp_path, monkeypatch):
    """Every Airflow service reads the Fernet key from the file airflow-init makes before the database
    migration; the key made that way encrypts a connection's password as Airflow stores it, and a second
    init keeps it."""
    from image_tools.fernet_key import main as fernet_key

    key_file = "/opt/airflow/data/airflow/fernet_key"
    for service in ("airflow-init", *AIRFLOW_SERVICES):
        env = config["services"][service]["environment"]
        assert env["AIRFLOW__CORE__FERNET_KEY_CMD"] == f"cat {key_file}" and "AIRFLOW__CORE__FERNET_KEY" not in env
    init = " ".join(config["services"]["airflow-init"]["command"])
    assert init.index(f"image_tools.fernet_key {key_file}") < init.index("airflow db migrate")

    path = tmp_path / "airflow" / "fernet_key"
    assert fernet_key([str(path)]) == 0 and path.stat().st_mode & 0o777 == 0o600
    key = path.read_text()
    assert fernet_key([str(path)]) == 0 and path.read_text() == key  # kept: stored secrets stay readable
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY_CMD", f"cat {path}")
    monkeypatch.delenv("AIRFLOW__CORE__FERNET_KEY", raising=False)
    from airflow.configuration import conf
    from airflow.models.crypto import get_fernet

    assert conf.get("core", "fernet_key") == key
    get_fernet.cache_clear()
    try:
        from airflow.models.connection import Connection

        connection = Connection(conn_id="x", conn_type="aws", password="s3cr3t")
        assert connection.is_encrypted and "s3cr3t" not in connection._password
        assert connection.password == "s3cr3t"
    finally:
        get_fernet.cache_clear()
    path.write_text("not a key\n")
    assert fernet_key([str(path)]) == 2 and path.read_text() == "not a key\n"  # a damaged key is never replaced
