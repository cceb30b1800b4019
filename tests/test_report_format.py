"""Numbers in reports say what was run: budgets exactly, values to three digits."""

import math

import pytest

from algzu.reports.suite import format_budget, format_value


@pytest.mark.parametrize("flops, text", [(1e4, "1e+04"), (7700, "7.7e+03"), (71000, "7.1e+04"), (3e6, "3e+06"),
                                         (123456789, "1.23456789e+08"), (1, "1e+00")])
def test_budgets_print_in_the_fewest_digits_that_give_them_back(flops, text):
    assert format_budget(flops) == text
    assert float(format_budget(flops)) == flops


@pytest.mark.parametrize("value, text", [(math.inf, "∞"), (-math.inf, "-∞"), (math.nan, "–"),
                                         (0.0123456, "0.0123")])
def test_values_print_three_digits_and_say_infinite_or_undefined(value, text):
    assert format_value(value) == text
