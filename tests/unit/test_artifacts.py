"""Staging the jobs' code for the local cluster: once per content, safe when runs stage at the same time."""

from __future__ import annotations

import threading

from image_pipeline.compute.staging import ENTRY_SCRIPTS, STAGED_KEYS, stage_local


def test_runs_staging_at_once_get_one_complete_copy(tmp_path):
    results, errors = [], []

    def stage():
        try:
            results.append(stage_local(f"file://{tmp_path}"))
        except Exception as exc:  # the assertion below reports any
            errors.append(exc)

    threads = [threading.Thread(target=stage) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({r["content_hash"] for r in results}) == 1 and len({r["jobs_zip_uri"] for r in results}) == 1
    staged = tmp_path / results[0]["content_hash"]
    assert sorted(p.name for p in staged.iterdir()) == sorted(["image_jobs.zip", *ENTRY_SCRIPTS])
    assert [p.name for p in tmp_path.iterdir()] == [staged.name]  # no staging folder left behind
    assert [set(r) for r in results] == [set(STAGED_KEYS)] * 12  # the same keys as the EMR backend's staging
    assert sum(bool(r["uploaded"]) for r in results) == 1  # one run copied the files, the others found them
    again = stage_local(f"file://{tmp_path}")
    assert again["uploaded"] == [] and {**again, "uploaded": None} == {**results[0], "uploaded": None}  # reused
