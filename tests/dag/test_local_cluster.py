"""The local transient cluster: starts on free ports, registers its workers, stops without leftovers."""

from __future__ import annotations

import json
import sys

import pytest

from image_pipeline.compute.local.cluster import (
    ClusterInfo,
    _master_status,
    cluster_processes_alive,
    start_cluster,
    stop_cluster,
)

pytestmark = pytest.mark.spark


def test_two_clusters_at_once_do_not_collide_and_stop_cleanly(java_home, tmp_path):
    a = start_cluster(tmp_path / "a", workers=1, cores=1, memory_gb=1, python=sys.executable, java_home=java_home)
    try:
        b = start_cluster(tmp_path / "b", workers=2, cores=1, memory_gb=1, python=sys.executable,
                          java_home=java_home)
        try:
            assert a.master_url != b.master_url and a.master_webui != b.master_webui
            assert _master_status(a.master_webui)["aliveworkers"] == 1
            assert _master_status(b.master_webui)["aliveworkers"] == 2
            recorded = json.loads((tmp_path / "b" / "cluster.json").read_text())
            assert recorded["master_url"] == b.master_url and len(recorded["processes"]) == 3
            assert ClusterInfo.load(tmp_path / "b").processes == b.processes
            assert cluster_processes_alive(tmp_path / "b")
        finally:
            stop_cluster(tmp_path / "b")
        assert cluster_processes_alive(tmp_path / "b") == []
        assert _master_status(a.master_webui)["aliveworkers"] == 1  # the other run's cluster is untouched
    finally:
        stop_cluster(tmp_path / "a")
    assert cluster_processes_alive(tmp_path / "a") == []
    stop_cluster(tmp_path / "a")  # stopping twice is harmless
    assert cluster_processes_alive(tmp_path / "a") == []
    assert stop_cluster(tmp_path / "never_started") == []


def test_a_failed_start_leaves_nothing_running(java_home, tmp_path):
    with pytest.raises(RuntimeError, match="did not register"):
        # a worker asking for more memory than the JVM flag allows exits at once
        start_cluster(tmp_path / "c", workers=1, cores=1, memory_gb=0, python=sys.executable, java_home=java_home,
                      timeout=30)
    assert cluster_processes_alive(tmp_path / "c") == []
