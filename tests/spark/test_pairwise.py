"""The pairwise sweep's task table built in Spark is ``pair_tasks``' table: same pairs, indices and splits."""

from __future__ import annotations

import pytest

from image_jobs.pairwise import task_frame
from image_jobs.training import pair_tasks

pytestmark = pytest.mark.spark


@pytest.mark.parametrize("mode,focus", [("all_pairs", None), ("one_vs_each", "c3"), ("one_vs_rest", "c0")])
def test_the_task_table_is_pair_tasks_in_spark(spark, mode, focus):
    labels = [f"c{i}" for i in range(9)]
    frame, n_pairs = task_frame(spark, labels, mode, focus, [0.25, 0.5, 0.75])
    expected = [(t.pair_index, t.class_1, t.class_2, t.split, t.num_model)
                for t in pair_tasks(labels, mode, focus, [0.25, 0.5, 0.75])]
    got = sorted(tuple(row) for row in frame.collect())
    assert got == sorted(expected)
    assert n_pairs == len({t[0] for t in expected})
