"""Eigenvalues of a float64 Gram state, computed in float64, and the Spectrum they make."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rankme_fast import metrics
from rankme_fast.conventions import get_convention

# Metrics a Spectrum computes by name (`Spectrum.metric`): what the CLI and the training-loop
# metric offer. nesum needs a centred spectrum.
METRIC_NAMES = ("rankme", "effective_rank", "participation_ratio", "stable_rank", "numerical_rank", "nesum")


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

    def rankme(self, eps: float = 1e-7, *, convention: str | None = None) -> float:
        """RankMe of this spectrum (rankme_fast.metrics.rankme), or as the named convention
        computes it (rankme_fast.conventions; its centring must match this spectrum's)."""
        if convention is None:
            return metrics.rankme(self.singular_values, eps)
        chosen = get_convention(convention)
        if eps != 1e-7:
            raise ValueError(f"pass eps or convention, not both: convention {convention!r} fixes its own epsilon")
        if chosen.centered != self.centered:
            want = "a centred" if chosen.centered else "an uncentred"
            raise ValueError(f"convention {convention!r} needs {want} spectrum (centered={chosen.centered})")
        return chosen.rankme(self.singular_values)

    def metric(self, name: str, eps: float = 1e-7) -> float:
        """One of METRIC_NAMES by name (eps applies to rankme only)."""
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r}; choose among {', '.join(METRIC_NAMES)}")
        return self.rankme(eps) if name == "rankme" else float(getattr(self, name)())

    def effective_rank(self) -> float:
        """Roy–Vetterli effective rank (RankMe without ε)."""
        return metrics.effective_rank(self.singular_values)

    def renyi_effective_rank(self, alpha: float) -> float:
        return metrics.renyi_effective_rank(self.singular_values, alpha)

    def participation_ratio(self) -> float:
        return metrics.participation_ratio(self._eigenvalues())

    def stable_rank(self) -> float:
        return metrics.stable_rank(self._eigenvalues())

    def nesum(self) -> float:
        """NESum of the covariance spectrum: needs a centred spectrum."""
        self._require_centered("nesum")
        return metrics.nesum(self._eigenvalues())

    def numerical_rank(self, tol: float | None = None) -> int:
        """Number of σ_k > tol. The default applies numpy's matrix_rank rule to the Gram the
        eigenvalues came from (λ_k > λ_max · max(N, D) · eps), since forming ZᵀZ leaves a noise
        floor of about sqrt(eps) · σ_max on the singular values (ARCHITECTURE.md, "Numerics")."""
        if tol is None:
            sigma_max = float(self.singular_values.max()) if self.eigenvalues.size else 0.0
            tol = sigma_max * float(np.sqrt(max(self.count, self.dim) * np.finfo(np.float64).eps))
        return metrics.numerical_rank(self.singular_values, tol)

    def alpha_req(self, *, first: int = 1, last: int | None = None, weighted: bool = True) -> metrics.PowerLawDecay:
        """α-ReQ decay exponent of the covariance spectrum: needs a centred spectrum."""
        self._require_centered("alpha_req")
        return metrics.alpha_req(self._eigenvalues(), first=first, last=last, weighted=weighted)

    def _eigenvalues(self) -> np.ndarray:
        return np.clip(self.eigenvalues, 0.0, None)

    def _require_centered(self, name: str) -> None:
        if not self.centered:
            raise ValueError(f"{name} is defined on the covariance spectrum: accumulate with centered=True")


def spectra_of_grams(grams: torch.Tensor, *, counts: list[int], dim: int, centered: bool) -> list[Spectrum]:
    """Spectra of a stack (B, n, n) of float64 Grams (lower triangles authoritative) in one
    batched float64 eigensolve."""
    if any(count <= 0 for count in counts):
        raise ValueError("no rows were accumulated: the spectrum of an empty set is undefined")
    values = torch.linalg.eigvalsh(grams.to(torch.float64), UPLO="L").flip(-1).cpu().numpy()
    return [
        Spectrum(np.ascontiguousarray(row[: min(count, dim, row.size)]), count=count, dim=dim, centered=centered)
        for row, count in zip(values, counts, strict=True)
    ]


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
