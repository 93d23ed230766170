"""Effective-rank metrics as pure functions of a spectrum (never of Z)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def rankme(singular_values: ArrayLike, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023): exp of the entropy of p_k = σ_k / Σσ + eps.

    Natural log, eps added outside the fraction, k over the given singular values (min(N, D)
    of them for an N x D embedding matrix).
    """
    if not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    sigma = np.asarray(singular_values, dtype=np.float64)
    if sigma.ndim != 1 or sigma.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of singular values, got shape {sigma.shape}")
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError("singular values must be finite and non-negative")
    total = sigma.sum()
    if total == 0:
        raise ValueError("RankMe is undefined for an all-zero embedding set (every singular value is 0)")
    p = sigma / total + eps
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(np.exp(-plogp.sum()))
