"""The float64 state that batches of embeddings are added into, and the rules every holder of
one follows (GramAccumulator, RankMeMetric, the cross-process reduction): the Chan/Pébay merge
of centred parts, the error for rows holding NaN or Inf, and the one format a state is saved
in (`to_state_dict`, `from_state_dict`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rankme_fast.backends.contract import PRECISIONS

STATE_FORMAT = "rankme_fast.GramAccumulator"
STATE_VERSION = 2  # 2 added "nonfinite" (rows left out for NaN/Inf); version 1 still loads


class NonFiniteRowsError(ValueError):
    """A batch holds rows with NaN or Inf and the policy is nonfinite="raise": nothing was added."""

    def __init__(self, bad: int, rows: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"batch has {bad} of {rows} rows holding NaN or Inf; nothing was added "
            "(pass nonfinite='drop' to skip such rows)"
        )
        self.bad, self.rows = bad, rows

    @classmethod
    def deferred(cls, bad: int, rows: int) -> NonFiniteRowsError:
        """The error of a state whose updates left rows out under nonfinite="defer"."""
        return cls(bad, rows, f"{bad} of the {rows} rows seen since the last reset held NaN or Inf; they were "
                   "left out of the state (nonfinite='drop' gives the RankMe of the rest, with a warning)")


@dataclass(frozen=True)
class GramState:
    """A float64 state, its tensors shared, not copied: the Gram (or centred scatter) with its
    lower triangle authoritative, the column mean when centred, and the counts of rows added
    and of rows left out for NaN/Inf (0-d int64 tensors on the Gram's device)."""

    gram: torch.Tensor
    mean: torch.Tensor | None
    count: torch.Tensor
    nonfinite: torch.Tensor
    centered: bool
    precision: str

    @property
    def dim(self) -> int:
        return int(self.gram.shape[0])

    @classmethod
    def zeros(cls, dim: int, *, centered: bool, precision: str, device: torch.device) -> GramState:
        mean = torch.zeros(dim, dtype=torch.float64, device=device) if centered else None
        counts = [torch.zeros((), dtype=torch.int64, device=device) for _ in range(2)]
        return cls(torch.zeros(dim, dim, dtype=torch.float64, device=device), mean, *counts, centered, precision)


def chan_merge(
    gram: torch.Tensor, mean: torch.Tensor, n_a: int | torch.Tensor, n_b: int | torch.Tensor, mean_b: torch.Tensor
) -> None:
    """Chan/Pébay merge of a part of n_b rows with mean mean_b (its own scatter already added
    into `gram`) into a state of n_a rows: M2 += δδᵀ·n_a·n_b/n, μ += δ·n_b/n, n = n_a + n_b.
    Counts may be host integers or 0-d device tensors (then nothing is read back to the host,
    and n = 0 leaves the state as it is)."""
    n = n_a + n_b
    if isinstance(n, torch.Tensor):
        n = n.clamp(min=1).to(torch.float64)
    elif n == 0:
        return
    delta = mean_b - mean
    gram.add_(torch.outer(delta, delta).mul_(n_a * n_b / n))
    mean.add_(delta * (n_b / n))


def merge(into: GramState, other: GramState) -> None:
    """Add `other` into `into`, in place: Grams summed, or centred parts merged by Chan."""
    device = into.gram.device
    other_gram = other.gram.to(device)
    if other_gram.data_ptr() == into.gram.data_ptr():  # merging a state into itself
        other_gram = other_gram.clone()
    other_count = other.count.to(device)
    into.gram.add_(other_gram)
    if into.centered:
        assert into.mean is not None and other.mean is not None
        chan_merge(into.gram, into.mean, into.count, other_count, other.mean.to(device).clone())
    into.count.add_(other_count)
    into.nonfinite.add_(other.nonfinite.to(device))


def symmetric(gram: torch.Tensor) -> torch.Tensor:
    """The full symmetric matrix of a state whose lower triangle is authoritative."""
    return torch.tril(gram) + torch.tril(gram, -1).T


def to_state_dict(state: GramState | None, *, centered: bool, precision: str) -> dict[str, Any]:
    """The one saved form of a state (None: nothing added yet): CPU float64 tensors and plain
    Python values."""
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "dim": None if state is None else state.dim,
        "count": 0 if state is None else int(state.count),
        "nonfinite": 0 if state is None else int(state.nonfinite),
        "centered": centered,
        "precision": precision,
        "gram": None if state is None else symmetric(state.gram).cpu(),
        "mean": None if state is None or state.mean is None else state.mean.cpu().clone(),
    }


def from_state_dict(saved: Mapping[str, Any], device: torch.device) -> tuple[GramState | None, bool, str]:
    """Check a `to_state_dict` mapping and rebuild it on `device`: (state or None, centered,
    precision). Raises TypeError/ValueError naming what is wrong."""
    if not isinstance(saved, Mapping):
        raise TypeError(f"state must be a mapping from state_dict(), got {type(saved).__name__}")
    if saved.get("format") != STATE_FORMAT or saved.get("version") not in (1, STATE_VERSION):
        raise ValueError(
            f"not a GramAccumulator state (format={saved.get('format')!r}, version={saved.get('version')!r})"
        )
    missing = {"dim", "count", "centered", "precision", "gram", "mean"} - set(saved)
    if missing:
        raise ValueError(f"state is missing keys: {sorted(missing)}")
    dim, count, centered, precision = saved["dim"], saved["count"], saved["centered"], saved["precision"]
    nonfinite = saved.get("nonfinite", 0)
    for name, value in (("count", count), ("nonfinite", nonfinite)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"state {name} must be a non-negative integer, got {value!r}")
    if not isinstance(centered, bool):
        raise ValueError(f"state centered must be a bool, got {centered!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"state precision must be one of {PRECISIONS}, got {precision!r}")
    gram, mean = saved["gram"], saved["mean"]
    if gram is None:
        if count != 0 or mean is not None:
            raise ValueError("state has no gram but a nonzero count or a mean")
        return None, centered, precision
    gram = _float64_tensor(gram, "gram")
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or (dim is not None and gram.shape[0] != dim):
        raise ValueError(f"state gram must have shape ({dim}, {dim}), got {tuple(gram.shape)}")
    if not bool(torch.isfinite(gram).all()):
        raise ValueError("state gram holds NaN or Inf")
    scale = float(gram.diagonal().abs().max()) if gram.numel() else 0.0
    if float((gram - gram.T).abs().max()) > 1e-12 * max(scale, 1e-300):
        raise ValueError("state gram is not symmetric")
    if float(gram.diagonal().min()) < 0:
        raise ValueError("state gram has a negative diagonal entry: it cannot be a Gram matrix")
    if count == 0 and bool(gram.any()):
        raise ValueError("state count is 0 but its gram is not zero")
    if centered:
        if mean is None:
            raise ValueError("centred state is missing its mean")
        mean = _float64_tensor(mean, "mean")
        if tuple(mean.shape) != (gram.shape[0],) or not bool(torch.isfinite(mean).all()):
            raise ValueError(f"state mean must be a finite vector of length {gram.shape[0]}")
    elif mean is not None:
        raise ValueError("uncentred state must not carry a mean")
    counts = [torch.tensor(int(value), dtype=torch.int64, device=device) for value in (count, nonfinite)]
    state = GramState(gram.to(device).contiguous(), None if mean is None else mean.to(device), *counts, centered,
                      precision)  # fmt: skip
    return state, centered, precision


def _float64_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or value.dtype != torch.float64:
        raise ValueError(f"state {name} must be a float64 tensor, got {getattr(value, 'dtype', type(value))}")
    return value.detach().cpu().clone()
