"""One-call entry points over a whole embedding matrix Z."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from rankme_fast._inputs import KernelInput, kernel_input
from rankme_fast.accumulate import GramAccumulator
from rankme_fast.backends import select_backend
from rankme_fast.conventions import get_convention
from rankme_fast.spectrum import Spectrum, spectra_of_grams, spectrum_of_gram


def spectrum(
    Z: Any, *, centered: bool = False, precision: str = "exact", backend: str = "auto"
) -> Spectrum:
    """Spectrum of an (N, D) (or (..., D)) embedding matrix, torch (any device) or numpy.

    When N < D the N x N Gram Z Zᵀ is used: it has the same nonzero eigenvalues and costs
    N²·D instead of N·D² operations.

    Args:
        Z: embeddings of any float dtype (float64, float32, float16, bfloat16), shape (..., D).
        centered: the covariance spectrum (the scatter about the mean) instead of ZᵀZ's.
        precision: "exact" (float64 products) or "fast" (float32 products within a block).
        backend: "auto", or a name of `rf.available_backends()`.

    Returns:
        A Spectrum: float64 eigenvalues, descending, top min(N, D); the metrics of the family.

    Example:
        >>> import numpy as np, rankme_fast as rf
        >>> z = np.random.default_rng(0).standard_normal((2000, 64)) * np.arange(1, 65) ** -0.5
        >>> s = rf.spectrum(z)
        >>> s.count, s.dim, s.eigenvalues.shape
        (2000, 64, (64,))
        >>> round(s.participation_ratio(), 4)
        14.1842
    """
    matrix = kernel_input(Z, name="Z")
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
    convention: str | None = None,
) -> float:
    """RankMe of Z: exp(entropy of σ/Σσ + eps), σ the singular values (ARCHITECTURE.md, "Definitions").

    Args:
        Z: embeddings of any float dtype, torch (any device) or numpy, shape (..., D).
        eps: added to each σ/Σσ, outside the fraction (the paper's 1e-7).
        centered, precision, backend: as for `spectrum`.
        convention: another library's formula by name (rankme_fast.conventions.CONVENTIONS);
            one that centres Z turns `centered` on.

    Returns:
        RankMe, a float between 1 and min(N, D) (a little above, by eps).

    Example:
        >>> import numpy as np, rankme_fast as rf
        >>> z = np.random.default_rng(0).standard_normal((2000, 64)) * np.arange(1, 65) ** -0.5
        >>> round(rf.rankme(z), 4)
        54.8356
        >>> round(rf.rankme(z, centered=True), 4)
        54.8348
    """
    if convention is not None:
        centered = centered or get_convention(convention).centered
    return spectrum(Z, centered=centered, precision=precision, backend=backend).rankme(eps, convention=convention)


def rankme_many(
    items: Iterable[Any] | Any,
    *,
    eps: float = 1e-7,
    centered: bool = False,
    precision: str = "exact",
    backend: str = "auto",
    convention: str | None = None,
) -> np.ndarray:
    """RankMe of each item of a sweep (checkpoints, models, layers): a list of embedding
    matrices, a stack of shape (B, N, D), Spectra or GramAccumulators. Grams of one size and
    device are eigensolved together in one batched float64 call. Returns a float64 array (B,)."""
    if convention is not None:
        centered = centered or get_convention(convention).centered
    sequence = list(items.unbind(0) if isinstance(items, torch.Tensor) and items.ndim == 3 else items)
    if not sequence:
        raise ValueError("rankme_many needs at least one item")
    spectra: list[Spectrum | None] = [None] * len(sequence)
    pending: dict[tuple[int, str, bool], list[tuple[int, GramAccumulator]]] = {}
    for index, item in enumerate(sequence):
        if isinstance(item, Spectrum):
            spectra[index] = item
            continue
        if isinstance(item, GramAccumulator):
            acc = item
        else:
            matrix = kernel_input(item, name=f"item {index}")
            if matrix.rows < matrix.cols:  # the N x N route of `spectrum`
                spectra[index] = spectrum(matrix.data, centered=centered, precision=precision, backend=backend)
                continue
            acc = GramAccumulator(centered=centered, precision=precision, backend=backend).update(matrix.data)
        if acc.count == 0:
            raise ValueError(f"item {index}: nothing has been accumulated")
        pending.setdefault((acc.dim, str(acc.device), acc.centered), []).append((index, acc))
    for (dim, _, is_centered), group in pending.items():
        grams = torch.stack([acc.gram() for _, acc in group])
        counts = [acc.count for _, acc in group]
        for (index, _), result in zip(group, spectra_of_grams(grams, counts=counts, dim=dim, centered=is_centered),
                                      strict=True):
            spectra[index] = result
    return np.array([s.rankme(eps, convention=convention) for s in spectra if s is not None], dtype=np.float64)


def _wide_spectrum(matrix: KernelInput, *, centered: bool, precision: str, backend: str) -> Spectrum:
    rows, cols = matrix.rows, matrix.cols
    chosen, _ = select_backend(matrix, precision, backend)
    bad = chosen.count_nonfinite_rows(matrix)
    if bad:
        raise ValueError(f"Z has {bad} of {rows} rows holding NaN or Inf")
    if centered:  # centre explicitly in float64: N·D < D² elements, smaller than a D x D state
        z = matrix.torch().to(torch.float64)
        matrix = kernel_input(z - z.mean(dim=0), name="Z")
    gram = torch.zeros(rows, rows, dtype=torch.float64, device=matrix.device)
    chosen.add_gram(matrix.transposed_copy(), gram, None, precision)  # Z Zᵀ, from a contiguous Zᵀ
    return spectrum_of_gram(gram, count=rows, dim=cols, centered=centered)
