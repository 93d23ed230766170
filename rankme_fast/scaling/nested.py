"""Does a variable explain anything RankMe does not? Deng et al. (2025) claim that quality
depends on size, data, compute, embedding dimension, depth, input length and architecture only
through RankMe. Tested here with nested least-squares models of log quality:

    base:  log q = a + b·log RankMe
    full:  log q = a + b·log RankMe + c·v        (v: the variable; dummy columns if categorical)

an F-test of the added columns, the variable's partial correlation with log q given log RankMe
(with a Fisher-z confidence interval; partial R² for categories of more than two levels), and
Holm's correction over the variables tested together. "Unified" means no evidence of an effect
beyond RankMe at the given level, which is not proof that there is none: the CI says how large
an effect the data leave room for, and `detectable_r2` the smallest partial R² the test would
find four times in five (at p < 0.05, before Holm's correction) with these runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class Added:
    """What one variable adds to log RankMe in explaining log quality."""

    variable: str
    points: int
    columns: int  # the F-test's numerator degrees of freedom
    f: float
    p: float
    p_holm: float
    partial_r: float  # NaN for a category of more than two levels
    partial_r_ci: tuple[float, float]
    partial_r2: float  # share of the base model's residual variance the variable explains
    r2_base: float
    r2_full: float
    detectable_r2: float  # the partial R² this test finds with POWER at LEVEL (its power)

    def unified(self, level: float = 0.05) -> bool:
        """No evidence (after Holm's correction) that the variable matters beyond RankMe."""
        return not self.p_holm < level

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "partial_r_ci": list(self.partial_r_ci)}


def design(values: Sequence[Any]) -> np.ndarray:
    """A variable's columns: itself for numbers, one dummy per level but the first (sorted) for
    anything else. Numbers should already be on the scale they act on (log N, not N)."""
    values = list(values)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.float64)[:, None]
    levels = sorted({str(v) for v in values})
    return np.array([[str(v) == level for level in levels[1:]] for v in values], dtype=np.float64)


def added_explanation(quality: Any, rankme: Any, values: Sequence[Any], variable: str = "v") -> Added:
    """The nested test of one variable (Holm's p equals p until `unification_test` corrects it)."""
    y, base = _base(quality, rankme)
    extra = design(values)
    if len(extra) != len(y):
        raise ValueError(f"{variable}: {len(extra)} values for {len(y)} runs")
    if extra.shape[1] == 0 or np.all(np.ptp(extra, axis=0) == 0):
        raise ValueError(f"{variable} takes one value over these runs: nothing to test")
    full = np.hstack([base, extra])
    rss_base, rank_base = _rss(base, y)
    rss_full, rank_full = _rss(full, y)
    columns = rank_full - rank_base
    if columns == 0:
        raise ValueError(f"{variable} is a linear function of log RankMe over these runs: it cannot be told apart")
    dof = len(y) - rank_full
    if dof <= 0:
        raise ValueError(f"{variable}: {len(y)} runs leave no degrees of freedom for the test")
    f = max((rss_base - rss_full) / columns, 0.0) / (rss_full / dof) if rss_full > 0 else math.inf
    p = float(stats.f.sf(f, columns, dof)) if math.isfinite(f) else 0.0
    total = float(np.sum((y - y.mean()) ** 2))
    partial_r, ci = math.nan, (math.nan, math.nan)
    if extra.shape[1] == 1:
        partial_r = _partial_correlation(y, extra[:, 0], base)
        ci = _fisher_interval(partial_r, len(y), controls=base.shape[1] - 1)
    return Added(variable, len(y), columns, float(f), p, p, partial_r, ci,
                 float(1 - rss_full / rss_base) if rss_base > 0 else 0.0,
                 1 - rss_base / total, 1 - rss_full / total, detectable_partial_r2(columns, dof))  # fmt: skip


LEVEL, POWER = 0.05, 0.8


def detectable_partial_r2(columns: int, dof: int, level: float = LEVEL, power: float = POWER) -> float:
    """The partial R² an F-test of `columns` added columns with `dof` residual degrees of freedom
    detects with probability `power` at `level`: noncentral F with λ = f²·(columns + dof + 1),
    f² = R²/(1 − R²) (Cohen's effect size), solved for R² (Brent's method)."""
    critical = stats.f.isf(level, columns, dof)

    def shortfall(r2: float) -> float:
        return stats.ncf.sf(critical, columns, dof, r2 / (1 - r2) * (columns + dof + 1)) - power

    return float(optimize.brentq(shortfall, 1e-12, 1 - 1e-12, xtol=1e-12))


def unification_test(quality: Any, rankme: Any, variables: Mapping[str, Sequence[Any]]) -> dict[str, Added | str]:
    """`added_explanation` for each variable, with Holm's correction over those that could be
    tested; a variable that could not be (constant, or a function of RankMe) maps to the reason."""
    results: dict[str, Added | str] = {}
    for name, values in variables.items():
        try:
            results[name] = added_explanation(quality, rankme, values, name)
        except ValueError as error:
            results[name] = str(error)
    tested = sorted((r.p, name) for name, r in results.items() if isinstance(r, Added))
    running = 0.0
    for rank, (p, name) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))  # step-down, kept monotone
        result = results[name]
        assert isinstance(result, Added)
        results[name] = Added(**{**asdict(result), "p_holm": running})
    return results


def _base(quality: Any, rankme: Any) -> tuple[np.ndarray, np.ndarray]:
    q, r = np.asarray(quality, dtype=np.float64), np.asarray(rankme, dtype=np.float64)
    if q.ndim != 1 or q.shape != r.shape:
        raise ValueError(f"quality and rankme must be 1-D of one length, got {q.shape} and {r.shape}")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(r)) and np.all(q > 0) and np.all(r > 0)):
        raise ValueError("quality and RankMe must be finite and positive (the models are on their logs)")
    if len(q) < 4:
        raise ValueError(f"{len(q)} runs: too few for a nested test")
    log_r = np.log(r)
    return np.log(q), np.column_stack([np.ones_like(log_r), log_r])


def _rss(columns: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    coefficients, _, rank, _ = np.linalg.lstsq(columns, y, rcond=None)
    residual = y - columns @ coefficients
    return float(residual @ residual), int(rank)


def _residual(columns: np.ndarray, y: np.ndarray) -> np.ndarray:
    coefficients = np.linalg.lstsq(columns, y, rcond=None)[0]
    return y - columns @ coefficients


def _partial_correlation(y: np.ndarray, v: np.ndarray, controls: np.ndarray) -> float:
    a, b = _residual(controls, y), _residual(controls, v)
    scale = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / scale) if scale > 0 else 0.0


def _fisher_interval(r: float, n: int, controls: int, level: float = 0.95) -> tuple[float, float]:
    """CI of a partial correlation with `controls` variables held fixed (Fisher's z, n − controls − 3 dof)."""
    dof = n - controls - 3
    if dof <= 0 or not math.isfinite(r):
        return (math.nan, math.nan)
    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    half = float(stats.norm.ppf(0.5 + level / 2)) / math.sqrt(dof)
    return (math.tanh(z - half), math.tanh(z + half))
