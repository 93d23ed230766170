"""One-call entry points over a whole embedding matrix Z."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from rankme_fast._checks import check_positive_int
from rankme_fast._inputs import KernelInput, kernel_input
from rankme_fast.accumulate import GramAccumulator
from rankme_fast.backends import select_backend
from rankme_fast.conventions import get_convention
from rankme_fast.spectrum import Spectrum, spectra_of_grams, spectrum_of_gram
from rankme_fast.uncertainty import BlockSpectra, Comparison, Estimate, compare_blocks


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
    ci: float | None = None,
    blocks: int = 10,
    groups: Any = None,
) -> float | Estimate:
    """RankMe of Z: exp(entropy of σ/Σσ + eps), σ the singular values (ARCHITECTURE.md, "Definitions").

    Args:
        Z: embeddings of any float dtype, torch (any device) or numpy, shape (..., D).
        eps: added to each σ/Σσ, outside the fraction (the paper's 1e-7).
        centered, precision, backend: as for `spectrum`.
        convention: another library's formula by name (rankme_fast.conventions.CONVENTIONS);
            one that centres Z turns `centered` on.
        ci: a confidence level (e.g. 0.95) to get an Estimate with the delete-one-block
            jackknife's standard error, bias-corrected value and interval
            (rankme_fast.uncertainty) instead of a float.
        blocks: blocks of rows for `ci` (K ≥ 2): K contiguous runs of rows (neighbouring rows,
            often the most alike, stay together), unless `groups` (one key per row) keeps the
            rows of each key in one block. Rows sorted by something that matters (a class, a
            source) make the blocks unlike each other and the interval wider than it should be:
            shuffle them first or give `groups`.

    Returns:
        RankMe, a float between 1 and min(N, D) (a little above, by eps), or an Estimate.

    Example:
        >>> import numpy as np, rankme_fast as rf
        >>> z = np.random.default_rng(0).standard_normal((2000, 64)) * np.arange(1, 65) ** -0.5
        >>> round(rf.rankme(z), 4)
        54.8356
        >>> round(rf.rankme(z, centered=True), 4)
        54.8348
        >>> estimate = rf.rankme(z, ci=0.95)
        >>> round(estimate.standard_error, 3), estimate.blocks
        (0.134, 10)
    """
    if convention is not None:
        centered = centered or get_convention(convention).centered
    if ci is not None:
        if convention is not None:
            raise ValueError("ci and convention together are not supported: an interval is for RankMe as defined")
        return block_spectra(Z, blocks=blocks, groups=groups, centered=centered, precision=precision,
                             backend=backend).estimate("rankme", ci=ci, eps=eps)  # fmt: skip
    return spectrum(Z, centered=centered, precision=precision, backend=backend).rankme(eps, convention=convention)


def block_spectra(
    Z: Any, *, blocks: int = 10, groups: Any = None, centered: bool = False, precision: str = "exact",
    backend: str = "auto",
) -> BlockSpectra:
    """The spectrum of Z and the spectra that each leave one of `blocks` blocks of rows out
    (K contiguous runs of rows, or by `groups` key), from one pass: `.estimate(metric, ci=...)`
    gives any metric of the family with its jackknife interval (rankme_fast.uncertainty)."""
    return _blocked(Z, blocks, groups, centered, precision, backend).block_spectra()


def compare(
    a: Any, b: Any, *, metric: str = "rankme", ci: float = 0.95, eps: float = 1e-7, blocks: int = 10,
    groups: Any = None, centered: bool = False, precision: str = "exact", backend: str = "auto",
) -> Comparison:
    """Is `a` above `b`? Two embedding sets of the same rows (two encoders or checkpoints on
    one set of inputs, in the same order), or two GramAccumulators / BlockSpectra that split
    such rows into blocks alike: each one's metric with its interval, and the paired jackknife
    interval of a − b; `.conclusion` says "a is above b" only when that interval excludes 0.

    Example:
        >>> import numpy as np, rankme_fast as rf
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((4000, 32))
        >>> wide, narrow = x * np.arange(1, 33) ** -0.3, x * np.arange(1, 33) ** -0.6
        >>> print(rf.compare(wide, narrow).conclusion)  # doctest: +ELLIPSIS
        a is above b: the 95 % interval of a − b, [...], excludes 0
    """
    sides = []
    for name, item in (("a", a), ("b", b)):
        if isinstance(item, BlockSpectra):
            sides.append(item)
        elif isinstance(item, GramAccumulator):
            sides.append(item.block_spectra())
        else:
            sides.append(_blocked(item, blocks, groups, centered, precision, backend, name=name).block_spectra())
    if sides[0].total.count != sides[1].total.count:
        raise ValueError(f"a has {sides[0].total.count:,} rows and b {sides[1].total.count:,}: compare needs the "
                         "same rows, scored by both")  # fmt: skip
    return compare_blocks(sides[0], sides[1], metric=metric, ci=ci, eps=eps)


def _blocked(
    Z: Any, blocks: int, groups: Any, centered: bool, precision: str, backend: str, name: str = "Z"
) -> GramAccumulator:
    """Z in a GramAccumulator of `blocks` blocks: block k holds rows ⌊kN/K⌋ up to ⌊(k+1)N/K⌋,
    or by `groups` key."""
    check_positive_int(blocks, "blocks")
    if blocks < 2:
        raise ValueError(f"an interval needs blocks >= 2 (default 10), got blocks={blocks}")
    matrix = kernel_input(Z, name=name)
    acc = GramAccumulator(centered=centered, precision=precision, backend=backend, blocks=blocks)
    if groups is not None:
        return acc.update(matrix.data, groups=groups)
    for block in range(blocks):
        start, stop = block * matrix.rows // blocks, (block + 1) * matrix.rows // blocks
        if stop > start:
            acc.update(matrix.data[start:stop], block=block)
    return acc


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
    spectra = spectra_many(items, centered=centered, precision=precision, backend=backend)
    return np.array([s.rankme(eps, convention=convention) for s in spectra], dtype=np.float64)


def spectra_many(
    items: Iterable[Any] | Any, *, centered: bool = False, precision: str = "exact", backend: str = "auto"
) -> list[Spectrum]:
    """The spectrum of each item (as for `rankme_many`): Grams of one size and device in one
    batched float64 eigensolve."""
    sequence = list(items.unbind(0) if isinstance(items, torch.Tensor) and items.ndim == 3 else items)
    if not sequence:
        raise ValueError("rankme_many and spectra_many need at least one item")
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
    return [s for s in spectra if s is not None]


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
