"""Rank correlations: exact permutation p-values for a handful of points (ρ = 1 on 5 points is
p = 2/5! = 1/60, not the large-sample 1e-24), scipy's beyond them."""

from __future__ import annotations

import pytest
from scipy import stats

from rankme_fast.scaling.ranks import EXACT_UP_TO, spearman


def test_exact_p_values_for_few_points():
    assert spearman([1, 2, 3, 4, 5], [2, 3, 4, 5, 9]) == pytest.approx((1.0, 1 / 60))
    assert spearman([1, 2, 3, 4, 5], [9, 5, 4, 3, 2]) == pytest.approx((-1.0, 1 / 60))
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx((0.8, 8 / 24))  # |ρ| ≥ 0.8: 8 of 24 orderings
    assert stats.spearmanr([1, 2, 3, 4, 5], [2, 3, 4, 5, 9]).pvalue < 1e-20  # what the approximation says


def test_beyond_the_exact_range_the_values_are_scipys():
    x, y = list(range(EXACT_UP_TO + 4)), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10]
    expected = stats.spearmanr(x, y)
    assert spearman(x, y) == pytest.approx((expected.statistic, expected.pvalue))
