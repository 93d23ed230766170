"""LiDAR (Thilak et al., ICLR 2024, "LiDAR: Sensing Linear Probing Performance in Joint
Embedding SSL Architectures"): the effective rank of the linear-discriminant matrix
Σ_w^{-1/2} Σ_b Σ_w^{-1/2}, from a streaming class-conditional accumulator.

With C classes (in the paper, surrogate classes: the augmentations of one sample), class means
μ_c, their mean μ and N rows in all:

    Σ_b = Σ_c (μ_c − μ)(μ_c − μ)ᵀ / (C − 1),    Σ_w = Σ_c Σ_{i∈c} (z_i − μ_c)(z_i − μ_c)ᵀ / N + δ I,
    LiDAR = exp(−Σ_k p_k log p_k),  p_k = λ_k / Σλ + ε,  λ the eigenvalues of Σ_w^{-1/2} Σ_b Σ_w^{-1/2}.

The state is per-class counts and float64 means plus the pooled within-class scatter (D x D),
updated and merged with the Chan/Pébay pairwise formula per class: O(C·D + D²), never N x D.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rankme_fast import metrics
from rankme_fast._checks import check_positive_int
from rankme_fast._inputs import kernel_input


class ClassScatterAccumulator:
    """Streams (embeddings, labels) batches into per-class counts, means and the pooled
    within-class scatter, all float64; labels are integers in [0, num_classes)."""

    def __init__(self, num_classes: int, dim: int | None = None, *, device: str | torch.device | None = None) -> None:
        check_positive_int(num_classes, "num_classes")
        check_positive_int(dim, "dim", optional=True)
        self.num_classes = int(num_classes)
        self._dim = None if dim is None else int(dim)
        self._device = None if device is None else torch.device(device)
        self._counts: torch.Tensor | None = None
        self._means: torch.Tensor | None = None
        self._within: torch.Tensor | None = None

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def count(self) -> int:
        return 0 if self._counts is None else int(self._counts.sum())

    @property
    def class_counts(self) -> torch.Tensor:
        return torch.zeros(self.num_classes, dtype=torch.int64) if self._counts is None else self._counts.cpu().clone()

    def update(self, embeddings: Any, labels: Any) -> ClassScatterAccumulator:
        """Add a batch: embeddings (N, D) of any float dtype, labels (N,) integers."""
        matrix = kernel_input(embeddings, name="embeddings")
        if self._dim is not None and matrix.cols != self._dim:
            raise ValueError(f"embeddings have D={matrix.cols} but this accumulator has dim={self._dim}")
        device = self._device if self._device is not None else matrix.device
        x = matrix.torch().to(device=device, dtype=torch.float64)
        y = self._checked_labels(labels, matrix.rows, device)
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(dim=1).sum())
            raise ValueError(f"embeddings have {bad} of {matrix.rows} rows holding NaN or Inf; nothing was added")
        counts = torch.bincount(y, minlength=self.num_classes)
        sums = torch.zeros(self.num_classes, matrix.cols, dtype=torch.float64, device=device).index_add_(0, y, x)
        means = sums / counts.clamp(min=1)[:, None]
        centred = x - means[y]
        self._fold(counts, means, centred.T @ centred, matrix.cols, device)
        return self

    def merge(self, other: ClassScatterAccumulator) -> ClassScatterAccumulator:
        """Fold another accumulator's statistics into this one."""
        if not isinstance(other, ClassScatterAccumulator):
            raise TypeError(f"can only merge a ClassScatterAccumulator, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        if self._dim is not None and other._dim is not None and other._dim != self._dim:
            raise ValueError(f"cannot merge dim={other._dim} into dim={self._dim}")
        if other._counts is None:
            return self
        assert other._means is not None and other._within is not None
        device = self._device if self._device is not None else other._within.device
        within = other._within.to(device).clone()
        self._fold(other._counts.to(device), other._means.to(device), within, other._dim, device)
        return self

    def reset(self) -> None:
        self._counts = self._means = self._within = None

    def lidar(self, *, delta: float = 1e-4, eps: float = 1e-7) -> float:
        """LiDAR of everything seen (formula in the module docstring)."""
        if not delta > 0:
            raise ValueError(f"delta must be positive (it keeps Σ_w invertible), got {delta!r}")
        if self._counts is None:
            raise ValueError("nothing has been accumulated yet")
        assert self._means is not None and self._within is not None
        present = self._counts > 0
        classes = int(present.sum())
        if classes < 2:
            raise ValueError(f"LiDAR needs at least 2 classes with data, got {classes}")
        means = self._means[present]
        spread = means - means.mean(dim=0)
        between = spread.T @ spread / (classes - 1)
        identity = torch.eye(self._within.shape[0], dtype=torch.float64, device=self._within.device)
        within = self._within / float(self._counts.sum()) + delta * identity
        factor = torch.linalg.cholesky(within)  # Σ_w = L Lᵀ: L⁻¹ Σ_b L⁻ᵀ has the eigenvalues of Σ_w^-½ Σ_b Σ_w^-½
        half = torch.linalg.solve_triangular(factor, between, upper=False)
        lda = torch.linalg.solve_triangular(factor, half.T, upper=False)
        values = torch.linalg.eigvalsh((lda + lda.T) / 2).clamp(min=0).cpu().numpy()
        # metrics.rankme computes exp(H(v/Σv + eps)) of whatever nonnegative values it gets.
        return metrics.rankme(values, eps)

    # -- internals --------------------------------------------------------------------------

    def _checked_labels(self, labels: Any, rows: int, device: torch.device) -> torch.Tensor:
        y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(f"labels must be integers, got dtype {y.dtype}")
        if y.shape != (rows,):
            raise ValueError(f"labels must have shape ({rows},) to match the embeddings, got {tuple(y.shape)}")
        if rows and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            unknown = y[(y < 0) | (y >= self.num_classes)].unique()[:5].tolist()
            raise ValueError(f"labels {unknown} are outside [0, {self.num_classes})")
        return y.to(device=device, dtype=torch.int64)

    def _fold(
        self,
        counts_b: torch.Tensor,
        means_b: torch.Tensor,
        within_b: torch.Tensor,
        dim: int | None,
        device: torch.device,
    ) -> None:
        """Chan/Pébay per class: W += W_b + Σ_c n_a n_b / n · δ_c δ_cᵀ; μ_c += δ_c n_b / n."""
        if self._counts is None:
            self._counts = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
            self._means = torch.zeros(self.num_classes, means_b.shape[1], dtype=torch.float64, device=device)
            self._within = torch.zeros(means_b.shape[1], means_b.shape[1], dtype=torch.float64, device=device)
            self._dim, self._device = dim if dim is not None else means_b.shape[1], device
        assert self._means is not None and self._within is not None
        n_a, n_b = self._counts.to(torch.float64), counts_b.to(torch.float64)
        n = (n_a + n_b).clamp(min=1)
        delta = torch.where((n_b > 0)[:, None], means_b - self._means, 0.0)
        self._within += within_b + delta.T @ (delta * (n_a * n_b / n)[:, None])
        self._means += delta * (n_b / n)[:, None]
        self._counts += counts_b
