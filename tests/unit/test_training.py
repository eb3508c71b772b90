import numpy as np
import pytest

from image_jobs.training import (
    REST,
    TrainingInputError,
    balanced_sample,
    check_inputs,
    min_images_for_fraction,
    pair_tasks,
    split_sample,
    stratified_test_mask,
)

SPLITS = [0.1, 0.5, 0.9]
LABELS = ["a", "b", "c", "d"]


def test_pair_modes_produce_the_expected_pairs():
    all_pairs = {(t.class_1, t.class_2) for t in pair_tasks(LABELS, "all_pairs", None, SPLITS)}
    assert all_pairs == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")}
    each = {(t.class_1, t.class_2) for t in pair_tasks(LABELS, "one_vs_each", "c", SPLITS)}
    assert each == {("c", "a"), ("c", "b"), ("c", "d")}
    rest = pair_tasks(LABELS, "one_vs_rest", "b", SPLITS)
    assert {(t.class_1, t.class_2) for t in rest} == {("b", REST)}
    assert [(t.split, t.num_model) for t in rest] == [(0.1, 1), (0.5, 2), (0.9, 3)]
    assert len(pair_tasks([f"c{i}" for i in range(37)], "all_pairs", None, [0.1 * i for i in range(1, 10)])) == 5994


def test_balanced_sample_and_split_sizes():
    y = np.repeat([0, 1, 2], [50, 300, 30])
    idx, target = balanced_sample(y, 1, 0, 200, np.random.default_rng(0))
    assert len(idx) == 100 and target.sum() == 50 and set(y[idx[target == 1]]) == {1}
    idx, target = balanced_sample(y, 1, None, 40, np.random.default_rng(0))  # one vs rest: 0 and 2 pooled
    assert len(idx) == 80 and set(y[idx[target == 0]]) <= {0, 2}
    for fraction in (0.1, 0.5, 0.9):
        train = split_sample(target, fraction, np.random.default_rng(1))
        assert train.sum() == 2 * round(40 * fraction)
        assert (target[train] == 1).sum() == (target[train] == 0).sum()  # stratified


def test_stratified_test_mask_is_reproducible_and_per_class():
    labels = np.array(["x"] * 10 + ["y"] * 20)
    mask = stratified_test_mask(labels, 0.2, seed=3)
    assert mask[:10].sum() == 2 and mask[10:].sum() == 4
    assert (mask == stratified_test_mask(labels, 0.2, seed=3)).all()
    assert not (mask == stratified_test_mask(labels, 0.2, seed=4)).all()


def test_minimum_images_per_split():
    assert min_images_for_fraction(0.1) == 10
    assert min_images_for_fraction(0.9) == 10
    assert min_images_for_fraction(0.5) == 2
    assert min_images_for_fraction(0.25) == 4


@pytest.mark.parametrize("counts,requested,splits,test_fraction,mode,focus,message", [
    ({"a": 20}, [], SPLITS, 0.2, "all_pairs", None, "at least 2 classes"),
    ({"a": 20, "b": 20}, ["a", "b", "zebra"], SPLITS, 0.2, "all_pairs", None, "zebra"),
    ({"a": 20, "b": 4}, [], SPLITS, 0.2, "all_pairs", None, r"'b': 4"),
    ({"a": 20, "b": 1}, ["a", "b"], [0.5], 0.5, "all_pairs", None, r"each class needs at least 2\): \{'b': 1\}"),
    ({"a": 20, "b": 20}, [], [0.5, 1.2], 0.2, "all_pairs", None, "split ratios"),
    ({"a": 20, "b": 20}, [], [0.0], 0.2, "all_pairs", None, "split ratios"),
    ({"a": 20, "b": 20}, [], SPLITS, 1.0, "all_pairs", None, "test fraction"),
    ({"a": 20, "b": 20}, [], SPLITS, 0.2, "one_vs_each", None, "focus class"),
    ({"a": 20, "b": 20}, [], SPLITS, 0.2, "one_vs_rest", "zebra", "zebra"),
    ({"a": 20, "b": 20}, [], SPLITS, 0.2, "every_which_way", None, "pair mode"),
])
def test_bad_inputs_name_the_culprit(counts, requested, splits, test_fraction, mode, focus, message):
    with pytest.raises(TrainingInputError, match=message):
        check_inputs(counts, requested, splits, test_fraction, mode, focus)


def test_good_inputs_give_sorted_labels():
    assert check_inputs({"b": 12, "a": 12}, [], SPLITS, 0.2, "all_pairs", None) == ["a", "b"]
