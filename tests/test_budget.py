"""Fitting a run's epochs into `train --time-budget` (wbc/budget.py)."""
import pytest

from wbc.budget import epochs_that_fit, typical_epoch_seconds


def test_the_first_epoch_counts_only_until_others_are_timed():
    assert typical_epoch_seconds([90.0]) == 90.0                 # includes compiling
    assert typical_epoch_seconds([90.0, 40.0, 50.0]) == 45.0     # the first left out
    with pytest.raises(ValueError):
        typical_epoch_seconds([])


def test_whole_epochs_that_fit_with_a_margin():
    # 3 epochs done, 45 s each after the first (49.5 s with the margin): 100 s holds 2 more
    assert epochs_that_fit(3, [90.0, 40.0, 50.0], 100.0) == 5
    assert epochs_that_fit(3, [90.0, 40.0, 50.0], 98.0) == 4
    assert epochs_that_fit(3, [90.0, 40.0, 50.0], 10_000.0) == 3 + 202     # --epochs aside
    # a resumed run counts its earlier epochs: 22 done, 2 of them timed in this process
    assert epochs_that_fit(22, [60.0, 30.0], 100.0) == 25


def test_nothing_more_when_the_deadline_is_near_or_past():
    assert epochs_that_fit(4, [90.0, 40.0], 39.0) == 4
    assert epochs_that_fit(4, [90.0, 40.0], -5.0) == 4
