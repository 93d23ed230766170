"""One-call entry points over a whole embedding matrix Z."""

from __future__ import annotations

from typing import Any

import torch

from rankme_fast._inputs import Matrix, as_matrix
from rankme_fast.accumulate import GramAccumulator
from rankme_fast.backends import select_backend
from rankme_fast.spectrum import Spectrum, spectrum_of_gram


def spectrum(
    Z: Any, *, centered: bool = False, precision: str = "exact", backend: str = "auto"
) -> Spectrum:
    """Spectrum of an (N, D) (or (..., D)) embedding matrix, torch (any device) or numpy.

    When N < D the N x N Gram Z Zᵀ is used: it has the same nonzero eigenvalues and costs
    N²·D instead of N·D² operations.
    """
    matrix = as_matrix(Z, name="Z")
    if matrix.rows >= matrix.cols:
        acc = GramAccumulator(centered=centered, precision=precision, backend=backend)
        return acc.update(matrix.data).spectrum()
    return _wide_spectrum(matrix, centered=centered, precision=precision, backend=backend)


def rankme(
    Z: Any,
    *,
    eps: float = 1e-7,
    centered: bool = False,
    precision: str = "exact",
    backend: str = "auto",
) -> float:
    """RankMe of Z: exp(entropy of σ/Σσ + eps), σ the singular values (DESIGN.md §2)."""
    return spectrum(Z, centered=centered, precision=precision, backend=backend).rankme(eps)


def _wide_spectrum(matrix: Matrix, *, centered: bool, precision: str, backend: str) -> Spectrum:
    rows, cols = matrix.rows, matrix.cols
    chosen, _ = select_backend(matrix, precision, backend)
    bad = chosen.count_nonfinite_rows(matrix)
    if bad:
        raise ValueError(f"Z has {bad} of {rows} rows holding NaN or Inf")
    if centered:  # centre explicitly in float64: N·D < D² elements, smaller than a D x D state
        z = matrix.torch().to(torch.float64)
        matrix = as_matrix(z - z.mean(dim=0), name="Z")
    gram = torch.zeros(rows, rows, dtype=torch.float64, device=matrix.device)
    chosen.add_gram(matrix.transposed_copy(), gram, None, precision)  # Z Zᵀ, from a contiguous Zᵀ
    return spectrum_of_gram(gram, count=rows, dim=cols, centered=centered)
