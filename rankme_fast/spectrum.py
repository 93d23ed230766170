"""Eigenvalues of a float64 Gram state, computed in float64, and the Spectrum they make."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rankme_fast import metrics


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of ZᵀZ (or of the centred scatter), float64, descending.

    Only the top min(count, dim) are kept: an N x D matrix has min(N, D) singular values.
    """

    eigenvalues: np.ndarray
    count: int
    dim: int
    centered: bool = False

    @property
    def singular_values(self) -> np.ndarray:
        """σ_k = sqrt(max(λ_k, 0)): the singular values of Z (centred Z when centered)."""
        return np.sqrt(np.clip(self.eigenvalues, 0.0, None))

    def rankme(self, eps: float = 1e-7) -> float:
        """RankMe of this spectrum (see rankme_fast.metrics.rankme)."""
        return metrics.rankme(self.singular_values, eps)


def spectrum_of_gram(gram: torch.Tensor, *, count: int, dim: int, centered: bool) -> Spectrum:
    """Spectrum of a (n, n) float64 Gram whose lower triangle is authoritative.

    The eigensolve runs in float64 on the Gram's device and reads the lower triangle only.
    """
    if count <= 0:
        raise ValueError("no rows were accumulated: the spectrum of an empty set is undefined")
    values = torch.linalg.eigvalsh(gram.to(torch.float64), UPLO="L")
    descending = values.flip(0).cpu().numpy()
    keep = min(count, dim, descending.size)
    return Spectrum(np.ascontiguousarray(descending[:keep]), count=count, dim=dim, centered=centered)
