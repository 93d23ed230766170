"""RankMeMetric: RankMe as a torchmetrics Metric whose state is a float64 D x D Gram.

Instead of a queue of N x D embeddings and an SVD per evaluation, each `update` folds its
batch into the Gram (no embedding is kept) and `compute` runs one float64 eigensolve.
Across processes the Gram states are summed with one all_reduce (centred states merged by
the Chan formula), not all-gathered as torchmetrics does by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from rankme_fast._inputs import SUPPORTED_DTYPES, as_matrix
from rankme_fast.accumulate import GramAccumulator, GramState
from rankme_fast.integrations.capping import check_max_samples, room_left
from rankme_fast.spectrum import METRIC_NAMES

_STATES = ("gram", "count", "mean")


class NothingSeenError(ValueError):
    """compute() before any row was seen since the last reset, on any process."""


class RankMeMetric(Metric):
    """RankMe of every embedding passed to `update` since the last `reset`, across all
    processes of a torch.distributed run.

    Log it the torchmetrics way for a reduced state: `update` every step (calling the metric,
    `forward`, is the same and returns None, so no eigensolve runs per step) and `compute` at
    the end of an epoch or an evaluation; in Lightning, `self.log(name, metric, on_step=False,
    on_epoch=True)`.

    `dim` may be left None (fixed by the first batch). `metrics`, a sequence of METRIC_NAMES,
    makes `compute` return a dict instead of RankMe alone. `max_samples` keeps the first
    `max_samples` rows seen (over all processes: each of W processes keeps the first
    max_samples/W it sees), the cap of the RankMe paper being 25 600. States are float64 and
    stay so under `model.half()` or `.to(dtype)`; they are saved in `state_dict` (D²·8 bytes)
    unless `persistent=False`, so a resumed run loses no rows.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        dim: int | None = None,
        *,
        eps: float = 1e-7,
        centered: bool = False,
        precision: str = "exact",
        backend: str = "auto",
        metrics: Sequence[str] | None = None,
        max_samples: int | None = None,
        nonfinite: str = "raise",
        persistent: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        GramAccumulator(dim, centered=centered, precision=precision, backend=backend, nonfinite=nonfinite)
        if not eps >= 0:
            raise ValueError(f"eps must be a non-negative number, got {eps!r}")
        check_max_samples(max_samples)
        if metrics is not None:
            metrics = tuple(metrics)
            unknown = [name for name in metrics if name not in METRIC_NAMES]
            if unknown or not metrics:
                raise ValueError(f"metrics must be a non-empty list among {METRIC_NAMES}, got {list(metrics)}")
            if "nesum" in metrics and not centered:
                raise ValueError("nesum is defined on the covariance spectrum: pass centered=True")
        self.eps, self.centered, self.precision, self.backend = float(eps), bool(centered), precision, backend
        self.metric_names, self.max_samples, self.nonfinite = metrics, max_samples, nonfinite
        size = 0 if dim is None else int(dim)
        # dist_reduce_fx is what torchmetrics would do; _sync_dist and merge_state replace it
        zeros = torch.zeros
        self.add_state("gram", zeros(size, size, dtype=torch.float64), dist_reduce_fx="sum", persistent=persistent)
        self.add_state("count", zeros((), dtype=torch.int64), dist_reduce_fx="sum", persistent=persistent)
        if self.centered:
            self.add_state("mean", zeros(size, dtype=torch.float64), dist_reduce_fx=None, persistent=persistent)

    # -- the torchmetrics contract -------------------------------------------------------------

    def update(self, embeddings: torch.Tensor | np.ndarray) -> None:
        """Fold a batch of shape (..., D) into the state; a batch with no rows is accepted
        and adds nothing (a rank or a step may have none). Bad input raises, state unchanged."""
        if self._is_empty(embeddings):
            return
        matrix = as_matrix(embeddings, name="embeddings")
        room = room_left(self.max_samples, int(self.count), self.process_group)
        room = matrix.rows if room is None else room
        if room == 0:
            if self.gram.numel() and matrix.cols != self.gram.shape[0]:
                raise ValueError(f"embeddings have D={matrix.cols} but this metric has D={self.gram.shape[0]}")
            return
        accumulator = self.accumulator()
        accumulator.update(matrix.data[:room] if room < matrix.rows else matrix.data)
        self._keep(accumulator)

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """RankMe (float64 scalar tensor) of all rows seen, or a dict when `metrics` was given."""
        accumulator = self.accumulator()
        if accumulator.count == 0:
            raise NothingSeenError("RankMeMetric.compute(): no rows were seen since the last reset (on any process)")
        if self.metric_names is None:
            return torch.tensor(accumulator.rankme(self.eps), dtype=torch.float64)
        spectrum = accumulator.spectrum()
        return {
            name: torch.tensor(spectrum.metric(name, self.eps), dtype=torch.float64) for name in self.metric_names
        }

    def forward(self, embeddings: torch.Tensor | np.ndarray) -> None:  # type: ignore[override]
        """Same as `update`: no eigensolve per step (torchmetrics' forward would run one)."""
        self.update(embeddings)

    def merge_state(self, incoming_state: Mapping[str, Any] | Metric) -> None:
        """Fold another RankMeMetric (or its states) into this one: a sum, or a Chan merge when
        centred."""
        if isinstance(incoming_state, RankMeMetric):
            other = incoming_state.accumulator()
        elif isinstance(incoming_state, Mapping):
            other = GramAccumulator.from_state_dict(self._as_state_dict(incoming_state))
        else:
            raise TypeError(f"expected a RankMeMetric or a dict of its states, got {type(incoming_state).__name__}")
        accumulator = self.accumulator()
        accumulator.merge(other)
        self._keep(accumulator)

    def accumulator(self) -> GramAccumulator:
        """A GramAccumulator over this metric's state tensors (updates write into them)."""
        sized = self.gram.numel() > 0
        count = int(self.count)
        state = GramState(
            self.gram if sized else None,
            (self.mean if sized else None) if self.centered else None,
            count,
            self.gram.shape[0] if sized else None,
            self.centered,
            self.precision,
        )
        return GramAccumulator.from_shared_state(
            state, backend=self.backend, device=self.device, nonfinite=self.nonfinite
        )

    # -- torchmetrics internals this metric replaces ----------------------------------------------

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
        """One all_reduce of the Gram (Chan merge when centred) instead of an all-gather."""
        accumulator = self.accumulator()
        accumulator.all_reduce(process_group or self.process_group)
        self._keep(accumulator)

    def _apply(self, fn: Any, exclude_state: Sequence[str] = ()) -> Metric:
        """Follow device moves, never dtype casts: the states stay float64."""
        this = super()._apply(fn, exclude_state=tuple(self._defaults))
        for name, default in self._defaults.items():
            this._defaults[name] = default.to(this.device)
            setattr(this, name, getattr(this, name).to(this.device))
        return this

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Check what is loaded as `GramAccumulator.from_state_dict` does; the state is left
        unchanged when it is rejected."""
        present = {name: state_dict[prefix + name] for name in _STATES if prefix + name in state_dict}
        if present:
            loaded = GramAccumulator.from_state_dict(self._as_state_dict(present), device=self.device)
            dim = self.gram.shape[0] if self.gram.numel() else None
            if dim is not None and loaded.dim is not None and loaded.dim != dim:
                raise ValueError(f"cannot load a state of D={loaded.dim} into a RankMeMetric of D={dim}")
            for name in present:
                state_dict.pop(prefix + name)
            self._keep(loaded)
            if loaded.count:
                self._update_count = max(self._update_count, 1)  # compute() need not warn
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # -- helpers ----------------------------------------------------------------------------------

    def _keep(self, accumulator: GramAccumulator) -> None:
        state = accumulator.shared_state()
        if state.gram is None:
            return
        self.gram = state.gram
        self.count = torch.tensor(state.count, dtype=torch.int64, device=self.gram.device)
        if self.centered:
            self.mean = state.mean

    def _as_state_dict(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """Metric states -> the `GramAccumulator.state_dict()` layout, lower triangle mirrored."""
        missing = [name for name in _STATES[: 3 if self.centered else 2] if name not in states]
        if missing:
            raise ValueError(f"RankMeMetric state is missing {missing}")
        gram, count = states["gram"], states["count"]
        if not isinstance(gram, torch.Tensor) or not isinstance(count, torch.Tensor):
            raise ValueError("RankMeMetric states gram and count must be tensors")
        if count.numel() != 1 or count.dtype.is_floating_point:
            raise ValueError(f"RankMeMetric state count must be one integer, got {count!r}")
        sized = gram.numel() > 0
        if gram.ndim == 2 and gram.shape[0] == gram.shape[1] and sized:
            gram = torch.tril(gram) + torch.tril(gram, -1).T
        mean = states.get("mean") if self.centered and sized else None
        return {
            "format": "rankme_fast.GramAccumulator",
            "version": 1,
            "dim": None,
            "count": int(count),
            "centered": self.centered,
            "precision": self.precision,
            "gram": gram if sized else None,
            "mean": mean,
        }

    def _is_empty(self, embeddings: Any) -> bool:
        """A well-formed batch with no rows: checked like any batch (dtype, D), then skipped."""
        shape = getattr(embeddings, "shape", None)
        if not isinstance(embeddings, (torch.Tensor, np.ndarray)) or shape is None or len(shape) < 2:
            return False
        if int(np.prod(shape[:-1])) != 0 or shape[-1] == 0:
            return False
        dtype = str(embeddings.dtype).removeprefix("torch.")
        if dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"embeddings have dtype {embeddings.dtype}; expected one of {', '.join(SUPPORTED_DTYPES)}")
        if self.gram.numel() and shape[-1] != self.gram.shape[0]:
            raise ValueError(f"embeddings have D={shape[-1]} but this metric has D={self.gram.shape[0]}")
        return True
