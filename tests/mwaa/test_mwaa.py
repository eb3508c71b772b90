"""Amazon MWAA as close as this machine gets: its Airflow, provider and constraints on Python 3.12.

``.venv-mwaa`` (built by ``make test``, cached like ``.venv-spark35``): Python 3.12, apache-airflow 3.3.1 and
``requirements/mwaa.txt`` installed under MWAA's constraints (``mwaa/airflow-3.3.1-constraints.txt`` and
``mwaa/mwaa-3.3.1-essential-constraints.txt``), plus the test tools of ``requirements/mwaa-test.txt``. The
deployment is laid out like MWAA's: the bundle's ``dags/``, and ``plugins.zip`` unpacked into ``plugins/``;
no ``spark_jobs/``, ``bootstrap/`` or checkout next to it, and the settings come from the bundle's
``startup.sh``. The runs there record which Spark-job and bootstrap files they read (``staging_reads.py``):
all of them must be the package's own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from project_paths import PROJECT_ROOT

VENV = PROJECT_ROOT / ".venv-mwaa"
CONSTRAINTS = PROJECT_ROOT / "mwaa" / "airflow-3.3.1-constraints.txt"
ESSENTIAL = PROJECT_ROOT / "mwaa" / "mwaa-3.3.1-essential-constraints.txt"
SETTINGS = """# the settings of the test deployment
IMAGE_PIPELINE_ROOT_URI=s3://pipeline/prod
IMAGE_PIPELINE_EMR_CORE_COUNT=3
export IMAGE_PIPELINE_EMR_SUBNET_ID='subnet-0123abcd'
"""


@pytest.fixture(scope="module")
def mwaa_python() -> Path:
    if (VENV / ".installed").exists():
        return VENV / "bin" / "python"
    if (VENV / ".unavailable").exists():
        pytest.skip(f"the MWAA-like environment cannot be built here: {(VENV / '.unavailable').read_text().strip()}")
    pytest.fail("the MWAA-like environment is missing: make .venv-mwaa/.installed (make test builds it)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from image_tools.mwaa_bundle import build_bundle

    settings = tmp_path_factory.mktemp("settings") / "settings.env"
    settings.write_text(SETTINGS)
    return build_bundle(tmp_path_factory.mktemp("dist") / "mwaa", settings)


@pytest.fixture(scope="module")
def deployment(bundle, tmp_path_factory) -> Path:
    """An Airflow home as MWAA lays it out: dags/ from the bucket, plugins.zip unpacked into plugins/."""
    home = tmp_path_factory.mktemp("mwaa-home")
    shutil.copytree(bundle / "dags", home / "dags")
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        archive.extractall(home / "plugins")
    return home


def sources(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def test_the_bundle_holds_the_package_the_jobs_and_the_bootstrap_and_nothing_else(bundle, tmp_path):
    from image_tools.mwaa_bundle import build_bundle

    assert sorted(p.name for p in bundle.iterdir()) == ["dags", "plugins.zip", "requirements.txt", "startup.sh"]
    assert sorted(p.name for p in (bundle / "dags").iterdir()) == ["image_classification.py", "image_scoring.py"]
    assert (bundle / "requirements.txt").read_text() == (PROJECT_ROOT / "requirements" / "mwaa.txt").read_text()
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        names = set(archive.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    package = {f"image_pipeline/{n}" for n in sources(PROJECT_ROOT / "plugins" / "image_pipeline")}
    jobs = {f"image_pipeline/shipped/spark_jobs/{n}" for n in sources(PROJECT_ROOT / "spark_jobs")}
    boot = {"image_pipeline/shipped/bootstrap/install_python_deps.sh",
            "image_pipeline/shipped/bootstrap/requirements-emr.txt"}
    assert names == {".airflowignore", *package, *jobs, *boot}  # exactly these, no tests, data, caches, venvs
    assert "image_pipeline/shipped/spark_jobs/image_jobs/conventions.py" in names
    assert not any(part in n for n in names for part in ("tests/", "__pycache__", ".pyc", "data/", ".venv"))
    assert modes["image_pipeline/shipped/bootstrap/install_python_deps.sh"] == 0o755
    startup = (bundle / "startup.sh").read_text()
    assert "export IMAGE_PIPELINE_COMPUTE=emr\n" in startup
    assert "export IMAGE_PIPELINE_ROOT_URI=s3://pipeline/prod\n" in startup
    assert "export IMAGE_PIPELINE_EMR_SUBNET_ID=subnet-0123abcd\n" in startup
    # the same sources give the same zip
    settings = tmp_path / "s.env"
    settings.write_text(SETTINGS)
    again = build_bundle(tmp_path / "again", settings)
    assert (again / "plugins.zip").read_bytes() == (bundle / "plugins.zip").read_bytes()


@pytest.mark.parametrize(("text", "message"), [
    ("IMAGE_PIPELINE_ROOT_URI=file:///data\n", "s3:// root"),
    ("IMAGE_PIPELINE_ROOT_URI=s3://b/p\nAWS_SECRET_ACCESS_KEY=x\n", ":2: expected IMAGE_PIPELINE_<NAME>=<value>"),
    ("IMAGE_PIPELINE_ROOT_URI=s3://b/p\nIMAGE_PIPELINE_ROOT_URI=s3://c/p\n", "IMAGE_PIPELINE_ROOT_URI is set twice"),
    ("IMAGE_PIPELINE_ROOT_URI=s3://b/p\nIMAGE_PIPELINE_EMR_CAPACITY=pools\n", "IMAGE_PIPELINE_EMR_CAPACITY='pools'"),
])
def test_a_bundle_refuses_settings_mwaa_could_not_run_and_writes_nothing(tmp_path, text, message):
    from image_tools.mwaa_bundle import build_bundle

    settings = tmp_path / "settings.env"
    settings.write_text(text)
    with pytest.raises(ValueError, match=message):
        build_bundle(tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_the_environment_has_mwaa_versions_and_no_spark_or_tensorflow(mwaa_python):
    script = """
import importlib.metadata as md, json, sys
names = [d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()]
print(json.dumps({"python": list(sys.version_info[:2]), "names": names,
                  "versions": {n: md.version(n) for n in names}}))
"""
    found = json.loads(subprocess.run([mwaa_python, "-c", script], check=True, capture_output=True, text=True).stdout)
    assert found["python"] == [3, 12]
    versions = found["versions"]
    assert versions["apache-airflow"] == "3.3.1" and versions["apache-airflow-providers-amazon"] == "9.34.0"
    assert not {"pyspark", "tensorflow", "tensorflow-cpu", "keras"} & set(found["names"])
    pins = [line.split("==") for line in [*ESSENTIAL.read_text().splitlines(), *CONSTRAINTS.read_text().splitlines()]
            if "==" in line and not line.startswith("#")]
    differing = {name: (version, versions[name.lower().replace("_", "-")]) for name, version in pins
                 if name.lower().replace("_", "-") in versions
                 and versions[name.lower().replace("_", "-")] != version}
    assert differing == {}  # every installed package is at MWAA's version


def mwaa_env(deployment: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "IMAGE_PIPELINE"))}
    return {**env, "PYTHONPATH": str(deployment / "plugins"), "IMAGE_PIPELINE_TEST_DEPLOYMENT": str(deployment)}


def test_both_dags_parse_from_the_deployment_with_the_emr_backend(mwaa_python, bundle, deployment, tmp_path):
    """The settings come from the bundle's startup.sh, sourced by a POSIX shell as MWAA runs it before each
    component: its IMAGE_PIPELINE_COMPUTE=emr and the settings file's values reach the parsed DAGs."""
    script = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
import image_pipeline.shipped as shipped
heavy = sorted(m for m in ("pyspark", "tensorflow", "keras", "pandas", "numpy") if m in sys.modules)
params = bag.dags["image_classification"].params.dump() if "image_classification" in bag.dags else {}
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids),
                  "spark_jobs": str(shipped.SPARK_JOBS_DIR), "bootstrap": str(shipped.BOOTSTRAP_DIR), "heavy": heavy,
                  "params": {k: params.get(k) for k in ("emr_core_instance_count", "emr_subnet_id")}}))
"""
    # no PYTHONPATH: Airflow itself puts the plugins folder on sys.path, as on MWAA; no IMAGE_PIPELINE_*
    # either: startup.sh exports them
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "IMAGE_PIPELINE"))},
           "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(deployment / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(deployment / "plugins")}
    command = ["sh", "-c", '. "$1" && shift && exec "$@"', "sh", str(bundle / "startup.sh"),
               str(mwaa_python), "-c", script, str(deployment / "dags")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {} and parsed["dags"] == ["image_classification", "image_scoring"]
    assert parsed["heavy"] == []
    assert parsed["spark_jobs"] == str(deployment / "plugins" / "image_pipeline" / "shipped" / "spark_jobs")
    assert parsed["bootstrap"] == str(deployment / "plugins" / "image_pipeline" / "shipped" / "bootstrap")
    # the EMR params exist (IMAGE_PIPELINE_COMPUTE=emr) and default to the settings file's values
    assert parsed["params"]["emr_core_instance_count"] == 3
    assert parsed["params"]["emr_subnet_id"] == "subnet-0123abcd"


def test_both_dags_run_to_success_from_the_deployment_staging_the_package_s_copy(mwaa_python, deployment, tmp_path):
    """The EMR DAG tests (moto for EMR, SeaweedFS for S3) of both DAGs in the MWAA-like environment, on the
    deployment: a training run, then a scoring run with its model. Every Spark-job and bootstrap file those
    runs read (the staged zip's sources, the entry scripts, the bootstrap) is the package's own copy under
    <deployment>/plugins/image_pipeline/shipped/, none the checkout's spark_jobs/ or bootstrap/."""
    tests = ["tests/dag/test_emr_dag.py::test_emr_run_creates_steps_publishes_and_terminates",
             "tests/dag/test_emr_dag.py::test_emr_scoring_scores_the_inbox_with_the_latest_model_then_skips"]
    reads_log = tmp_path / "reads.json"
    env = {**mwaa_env(deployment), "IMAGE_PIPELINE_TEST_S3": "seaweedfs",
           "IMAGE_PIPELINE_TEST_READS_LOG": str(reads_log),
           "PYTHONPATH": os.pathsep.join([str(deployment / "plugins"), str(Path(__file__).parent)])}
    done = subprocess.run(
        [mwaa_python, "-m", "pytest", *tests, "-p", "staging_reads", "-p", "no:cacheprovider", "-q", "-o",
         f"pythonpath={deployment / 'plugins'} {PROJECT_ROOT / 'tests'} {PROJECT_ROOT / 'tests' / 'dag'}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1100)
    assert done.returncode == 0 and "2 passed" in done.stdout, (done.stdout + done.stderr)[-6000:]
    reads = json.loads(reads_log.read_text())
    shipped = deployment / "plugins" / "image_pipeline" / "shipped"
    assert reads["spark_jobs"] == str(shipped / "spark_jobs") and reads["bootstrap"] == str(shipped / "bootstrap")
    assert [p for p in reads["read"] if not p.startswith(f"{shipped}{os.sep}")] == []  # nothing from the checkout
    read = {Path(p).relative_to(shipped).as_posix() for p in reads["read"]}
    assert {"spark_jobs/extract_features.py", "spark_jobs/train_models.py", "spark_jobs/score_inbox.py",
            "spark_jobs/image_jobs/__init__.py", "spark_jobs/image_jobs/conventions.py",
            "bootstrap/install_python_deps.sh", "bootstrap/requirements-emr.txt"} <= read
