"""Rank correlations with honest p-values: for a handful of points the exact permutation
p-value (every ordering counted), not the large-sample approximation, which reports ρ = 1 on
5 points as p ≈ 1e-24 where the exact two-sided value is 1/60."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy import stats

EXACT_UP_TO = 8  # points: 8! = 40 320 orderings, counted exactly


def spearman(x: Any, y: Any) -> tuple[float, float]:
    """Spearman ρ and its two-sided p-value (exact up to EXACT_UP_TO points)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rho = float(stats.spearmanr(x, y).statistic)
    if x.size > EXACT_UP_TO:
        return rho, float(stats.spearmanr(x, y).pvalue)
    a, b = stats.rankdata(x), stats.rankdata(y)
    if not np.ptp(a) or not np.ptp(b):
        return rho, float("nan")  # a constant column: no correlation to test
    orderings = np.array(list(itertools.permutations(b - b.mean())))  # every pairing of y's ranks with x's
    centred = a - a.mean()
    rhos = orderings @ centred / (np.linalg.norm(centred) * np.linalg.norm(b - b.mean()))
    return rho, float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))


def kendall(x: Any, y: Any) -> tuple[float, float]:
    """Kendall τ and its two-sided p-value (scipy's exact method for small samples without ties)."""
    result = stats.kendalltau(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)
