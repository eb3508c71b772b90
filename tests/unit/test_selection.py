"""Model selection's pure parts: the grid, the folds, the choice rule, the Wilson interval, the threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from image_jobs.model_selection import (
    SelectionInputError,
    choose_setting,
    curve,
    fold_count,
    parse_c_grid,
    parse_reductions,
    pick_threshold,
    precision_coverage,
    settings_grid,
    stratified_folds,
    wilson_interval,
)
from image_jobs.training import TrainingInputError


def test_reductions_and_c_grid_parse_and_name_the_bad_item():
    assert parse_reductions("none, 64,pca128,64") == [0, 64, 128]
    assert parse_c_grid("1, 0.01,0.1,0.01") == [0.01, 0.1, 1.0]
    for text, message in [("none,sixty", "reduction 'sixty'"), ("0", "reduction '0'"), ("", "no reduction")]:
        with pytest.raises(SelectionInputError, match=message):
            parse_reductions(text)
    for text, message in [("0.1,abc", "C value 'abc' is not a number"), ("-1", "C value '-1' must be a positive"),
                          ("inf", "C value 'inf'"), (" , ", "no C value")]:
        with pytest.raises(SelectionInputError, match=message):
            parse_c_grid(text)
    assert issubclass(SelectionInputError, TrainingInputError)  # the job exits 2 with the message


def test_grid_caps_pca_sizes_and_keeps_the_order():
    settings, sizes = settings_grid([0, 64, 128, 256], [0.01, 1.0], max_components=100)
    assert sizes == [0, 64, 100]
    assert [(s.index, s.reduction, s.c) for s in settings] == [
        (0, "none", 0.01), (1, "none", 1.0), (2, "pca64", 0.01), (3, "pca64", 1.0), (4, "pca100", 0.01),
        (5, "pca100", 1.0)]


def test_folds_are_stratified_balanced_and_seeded():
    y = np.repeat([0, 1, 2], [23, 17, 11])
    fold = stratified_folds(y, 5, seed=3)
    assert np.array_equal(fold, stratified_folds(y, 5, seed=3))
    assert not np.array_equal(fold, stratified_folds(y, 5, seed=4))
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(y)
    for c in range(3):  # every class spread over every fold, within one image
        per_fold = np.bincount(fold[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


def test_folds_are_fewer_for_a_small_class_and_an_error_under_2():
    assert fold_count(np.array([0] * 6 + [1] * 7), ["beagle", "pug"], 5) == 5
    assert fold_count(np.array([0] * 6 + [1] * 3), ["beagle", "pug"], 5) == 3  # pug has 3 training images
    with pytest.raises(SelectionInputError, match=r"at least 2 training images per class .*\{'pug': 1\}"):
        fold_count(np.array([0] * 6 + [1]), ["beagle", "pug"], 5)
    with pytest.raises(SelectionInputError, match="at least 2 folds, got 1"):
        fold_count(np.array([0, 0, 1, 1]), ["a", "b"], 1)


def test_choice_is_the_best_accuracy_ties_to_smaller_c_then_fewer_dimensions():
    table = pd.DataFrame({"setting_index": range(5), "components": [0, 0, 64, 64, 128],
                          "c": [0.01, 1.0, 0.01, 1.0, 0.01], "cv_accuracy": [0.8, 0.9, 0.8, 0.9, 0.7]})
    assert choose_setting(table, feature_dim=1280) == 3  # 0.9 twice at C=1: PCA 64 has fewer dimensions
    table.loc[1, "c"] = 0.1
    assert choose_setting(table, feature_dim=1280) == 1  # 0.9 at C=0.1 beats 0.9 at C=1


def test_wilson_interval_known_values():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(100, 100) == pytest.approx((0.9630, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_threshold_is_the_lowest_reaching_the_target_precision():
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, True, False, True, False])
    chosen = pick_threshold(confidence, correct, 0.75)
    assert (chosen["threshold"], chosen["precision"], chosen["coverage"], chosen["target_met"]) == (0.6, 0.75, 0.8,
                                                                                                   True)
    assert pick_threshold(confidence, correct, 1.0)["threshold"] == 0.8
    everything = pick_threshold(confidence, correct, 0.5)
    assert (everything["threshold"], everything["coverage"]) == (0.0, 1.0)  # all answered already reach 60%
    # equal confidences are answered together: the cut never falls inside them
    tied = pick_threshold(np.array([0.9, 0.9, 0.5]), np.array([True, False, True]), 0.6)
    assert (tied["threshold"], tied["coverage"]) == (0.0, 1.0)


def test_an_unreachable_target_takes_the_most_precise_threshold_and_says_so():
    chosen = pick_threshold(np.array([0.9, 0.8, 0.7]), np.array([False, True, False]), 0.95)
    assert chosen["target_met"] is False and chosen["precision"] == 0.5 and chosen["threshold"] == 0.8
    with pytest.raises(SelectionInputError, match="target precision must be in"):
        pick_threshold(np.array([0.5]), np.array([True]), 1.5)


def test_curve_has_the_fixed_thresholds_and_the_chosen_one():
    held = (np.array([0.95, 0.6, 0.3]), np.array([True, True, False]))
    test = (np.array([0.9, 0.2]), np.array([True, False]))
    rows = curve(held, test, 0.6)
    assert [r["threshold"] for r in rows if r["chosen"]] == [0.6]
    first = rows[0]
    assert first["threshold"] == 0.0 and first["held_out_coverage"] == 1.0
    assert first["held_out_precision"] == pytest.approx(2 / 3, abs=1e-6) and first["test_precision"] == 0.5
    at_chosen = next(r for r in rows if r["chosen"])
    assert (at_chosen["held_out_precision"], at_chosen["test_coverage"]) == (1.0, 0.5)
    assert precision_coverage(np.array([0.1]), np.array([False]), 0.5) == (1.0, 0.0, 0)
