"""Effective-rank metrics as pure functions of a spectrum (never of Z).

Every function takes the singular values σ of Z (descending or not; rankme_fast.Spectrum
gives them, or its eigenvalues λ = σ²) in float64 and documents its formula and source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def checked_spectrum(values: ArrayLike, what: str = "singular values") -> np.ndarray:
    """`values` as a float64 1-D array, or ValueError unless non-empty, finite, non-negative
    and not all zero (every metric here is undefined for an all-zero embedding set)."""
    sigma = np.asarray(values, dtype=np.float64)
    if sigma.ndim != 1 or sigma.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of {what}, got shape {sigma.shape}")
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError(f"{what} must be finite and non-negative")
    if sigma.sum() == 0:
        raise ValueError(f"undefined for an all-zero embedding set (every one of the {what} is 0)")
    return sigma


def entropy(p: np.ndarray) -> float:
    """Shannon entropy -Σ p log p (natural log, 0 log 0 = 0)."""
    safe = np.where(p > 0, p, 1.0)
    return float(-(p * np.log(safe)).sum())


def rankme(singular_values: ArrayLike, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023): exp of the entropy of p_k = σ_k / Σσ + eps.

    Natural log, eps added outside the fraction, k over the given singular values (min(N, D)
    of them for an N x D embedding matrix).
    """
    if not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    sigma = checked_spectrum(singular_values)
    return float(np.exp(entropy(sigma / sigma.sum() + eps)))


def effective_rank(singular_values: ArrayLike) -> float:
    """Effective rank (Roy & Vetterli, EUSIPCO 2007): exp(H(p)), p_k = σ_k / Σσ, no ε."""
    return rankme(singular_values, eps=0.0)


def renyi_effective_rank(singular_values: ArrayLike, alpha: float) -> float:
    """Rényi effective rank: exp(H_α(p)), p_k = σ_k / Σσ, H_α = log(Σ p^α) / (1 - α).

    α = 1 is the Roy–Vetterli effective rank (the limit), α = 0 the number of nonzero σ,
    α = ∞ gives 1 / max p. Rényi (1961); used as an effective rank e.g. by Zhang et al. (2023,
    "KernelInput information theory for self-supervised learning").
    """
    if not (isinstance(alpha, (int, float)) and alpha >= 0) or np.isnan(alpha):
        raise ValueError(f"alpha must be a number >= 0 (inf allowed), got {alpha!r}")
    sigma = checked_spectrum(singular_values)
    p = sigma / sigma.sum()
    if alpha == 1:
        return float(np.exp(entropy(p)))
    if np.isinf(alpha):
        return float(1.0 / p.max())
    if alpha == 0:
        return float(np.count_nonzero(p))
    positive = p[p > 0]
    return float(np.exp(np.log(np.sum(positive**alpha)) / (1.0 - alpha)))


def participation_ratio(eigenvalues: ArrayLike) -> float:
    """Participation ratio (Σλ)² / Σλ² of eigenvalues λ = σ² (Gao et al. 2017; Recanatesi
    et al. 2019 for neural representations). Between 1 and the number of nonzero λ."""
    lam = checked_spectrum(eigenvalues, "eigenvalues")
    return float(lam.sum() ** 2 / np.sum(lam**2))


def stable_rank(eigenvalues: ArrayLike) -> float:
    """Stable rank Σλ / λ_max = ‖Z‖_F² / ‖Z‖₂² (Rudelson & Vershynin 2007), λ = σ²."""
    lam = checked_spectrum(eigenvalues, "eigenvalues")
    return float(lam.sum() / lam.max())


def nesum(covariance_eigenvalues: ArrayLike) -> float:
    """NESum Σ_k λ_k / λ_1 of the *covariance* eigenvalues (He & Ozay, ICML 2022): the stable
    rank of the centred embeddings."""
    return stable_rank(covariance_eigenvalues)


def numerical_rank(
    singular_values: ArrayLike, tol: float | None = None, *, shape: tuple[int, int] | None = None
) -> int:
    """Number of σ_k > tol. Default tol = σ_max · max(N, D) · eps(float64), numpy's
    matrix_rank rule (shape = (N, D); without it the number of values stands in for max(N, D))."""
    sigma = np.asarray(singular_values, dtype=np.float64)
    if sigma.ndim != 1 or sigma.size == 0 or not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError("expected a non-empty 1-D array of finite, non-negative singular values")
    if tol is None:
        size = max(shape) if shape is not None else sigma.size
        tol = float(sigma.max()) * size * np.finfo(np.float64).eps
    elif not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    return int(np.count_nonzero(sigma > tol))


@dataclass(frozen=True)
class PowerLawDecay:
    """λ_k ≈ c · k^(-alpha) fitted over indices first..last (1-based, inclusive)."""

    alpha: float
    log_c: float
    r_squared: float  # weighted R² of the log–log fit
    first: int
    last: int


def alpha_req(
    covariance_eigenvalues: ArrayLike, *, first: int = 1, last: int | None = None, weighted: bool = True
) -> PowerLawDecay:
    """α-ReQ (Agrawal et al., NeurIPS 2022): the decay exponent α of the covariance eigenspectrum,
    λ_k ∝ k^(-α), by least squares of log λ_k on log k over k = first..last.

    With `weighted` each point has weight 1/k, so every decade of k counts about equally
    (the dense tail would otherwise dominate). Zero eigenvalues in the range are an error:
    choose `last` below the numerical rank.
    """
    lam = np.sort(np.asarray(covariance_eigenvalues, dtype=np.float64))[::-1]
    if lam.ndim != 1 or lam.size < 2 or not np.all(np.isfinite(lam)):
        raise ValueError("alpha_req needs at least 2 finite eigenvalues")
    last = lam.size if last is None else last
    if not (1 <= first < last <= lam.size):
        raise ValueError(f"need 1 <= first < last <= {lam.size}, got first={first}, last={last}")
    k = np.arange(first, last + 1, dtype=np.float64)
    y = lam[first - 1 : last]
    if np.any(y <= 0):
        raise ValueError(f"eigenvalues {first}..{last} include zeros; lower `last` below the numerical rank")
    x, y = np.log(k), np.log(y)
    w = 1.0 / k if weighted else np.ones_like(k)
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    slope = np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2)
    intercept = ym - slope * xm
    residual = np.sum(w * (y - intercept - slope * x) ** 2)
    total = np.sum(w * (y - ym) ** 2)
    r_squared = 1.0 - residual / total if total > 0 else 1.0
    return PowerLawDecay(float(-slope), float(intercept), float(r_squared), first, last)
