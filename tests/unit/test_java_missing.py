"""A task on a machine without Java never installs one: it fails naming the setup command that does
(tests/dag/test_java_fallback.py runs that setup in a fresh virtual environment)."""

from __future__ import annotations

import pytest


def test_a_task_never_installs_java_it_fails_naming_the_setup_command(monkeypatch, tmp_path):
    from image_pipeline.compute.local import java

    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on PATH
    monkeypatch.setattr(java, "WRAPPER_HOME", tmp_path / "no-bundled-jdk")
    installs = []
    monkeypatch.setattr(java, "install_bundled_java", lambda: installs.append(1))
    with pytest.raises(java.JavaMissingError, match=r"no Java 17\+ found .* run `make setup`"):
        java.require_java_home()
    assert installs == []
