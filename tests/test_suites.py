"""Suites and model cases check what enters a run, once: nothing downstream checks again."""

import math

import pytest

from algzu.errors import AlgzuError
from algzu.suites import SUITES, ModelCase, Suite


def _suite(**changes) -> Suite:
    settings = dict(name="t", cases=(ModelCase("2nd_argmax-d4-n3", 0.05),), n_copies=2, budgets=(10**4,),
                    gt_samples=2**10)
    return Suite(**{**settings, **changes})


@pytest.mark.parametrize("noise_std", [-0.1, math.inf, math.nan])
def test_a_case_refuses_a_noise_std_that_is_negative_or_not_finite(noise_std):
    with pytest.raises(AlgzuError, match="noise std must be finite and >= 0"):
        ModelCase("2nd_argmax-d4-n3", noise_std)


@pytest.mark.parametrize("changes, words", [
    ({"n_copies": 0}, "copies must be >= 1"),
    ({"budgets": ()}, "budgets"),
    ({"budgets": (0,)}, "at least 1 FLOP"),
    ({"budgets": (-5, 10)}, "at least 1 FLOP"),
    ({"budgets": (1e4,)}, "whole numbers"),
    ({"gt_samples": 1}, "at least 2 inputs"),
])
def test_a_suite_refuses_what_no_run_can_use(changes, words):
    with pytest.raises(AlgzuError, match=words):
        _suite(**changes)


def test_presets_are_valid_and_each_case_is_found_by_its_model():
    assert _suite().with_overrides(seed=3).seed == 3
    assert all(s.case(c.model) is c for s in SUITES.values() for c in s.cases)
    with pytest.raises(AlgzuError, match="has no model"):
        _suite().case("argmax-d2-n2")
