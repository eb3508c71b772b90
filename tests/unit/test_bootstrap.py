"""The EMR bootstrap action, run here with stand-ins for aws, sudo and the nodes' Python."""

from __future__ import annotations

import os
import stat
import subprocess

from conftest import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "bootstrap" / "install_python_deps.sh"


def stub(folder, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run(tmp_path, aws_body: str, python_body: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub(bin_dir, "aws", aws_body)
    stub(bin_dir, "sudo", 'exec "$@"')
    stub(bin_dir, "python3.11", python_body)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BOOTSTRAP_RETRY_SECONDS": "0",
           "BOOTSTRAP_PYTHON": str(bin_dir / "python3.11"), "CALLS": str(tmp_path / "calls.log")}
    return subprocess.run(["bash", str(SCRIPT), "s3://bucket/artifacts/h/requirements-emr.txt"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_installs_the_staged_requirements(tmp_path):
    out = run(tmp_path, 'echo "aws $*" >> "$CALLS"; cp /dev/null "$4"',
              'echo "python $*" >> "$CALLS"')
    assert out.returncode == 0, out.stderr
    calls = (tmp_path / "calls.log").read_text()
    assert "aws s3 cp s3://bucket/artifacts/h/requirements-emr.txt" in calls
    assert "python -m pip install --quiet --no-cache-dir -r /tmp/requirements-emr.txt" in calls
    assert "python -m pip check" in calls


def test_retries_then_fails_loudly(tmp_path):
    out = run(tmp_path, 'echo "aws $*" >> "$CALLS"; exit 1', 'exit 0')
    assert out.returncode != 0
    assert (tmp_path / "calls.log").read_text().count("aws s3 cp") == 4
    assert "failed 4 times, giving up" in out.stderr


def test_a_failed_install_fails_the_bootstrap(tmp_path):
    out = run(tmp_path, 'cp /dev/null "$4"', 'if [ "$3" = "install" ]; then exit 1; fi')
    assert out.returncode != 0 and "giving up" in out.stderr
