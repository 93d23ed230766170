"""The float64 state that batches of embeddings are folded into, and the rules every holder of
one follows (GramAccumulator, the torch op rankme_fast::fold_, the cross-process reduction):
the Chan/Pébay merge of centred parts, and the error for rows holding NaN or Inf."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
        """The error of a RankMeMetric whose updates left rows out under nonfinite="defer"."""
        return cls(bad, rows, f"{bad} of the {rows} rows seen since the last reset held NaN or Inf; they were "
                   "left out of the state (nonfinite='drop' gives the RankMe of the rest, with a warning)")


@dataclass(frozen=True)
class GramState:
    """The float64 state of an accumulator, shared not copied: the Gram (or centred scatter)
    with its lower triangle authoritative, the column mean when centred, and the row count."""

    gram: torch.Tensor | None
    mean: torch.Tensor | None
    count: int
    dim: int | None
    centered: bool
    precision: str


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
