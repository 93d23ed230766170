"""RankMeMetric: RankMe as a torchmetrics Metric whose state is a float64 D x D Gram.

Instead of a queue of N x D embeddings and an SVD per evaluation, each `update` folds its
batch into the Gram (no embedding is kept) and `compute` runs one float64 eigensolve.
Across processes the Gram states are summed with one all_reduce (centred states merged by
the Chan formula), not all-gathered as torchmetrics does by default.
"""

from __future__ import annotations

from rankme_fast._extras import require

require("rankme_fast.integrations.metric", "train", "torchmetrics")

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from rankme_fast._checks import check_positive_int
from rankme_fast._inputs import check_batch, kernel_input
from rankme_fast.backends import check_choice
from rankme_fast.distributed import all_reduce_state
from rankme_fast.sample_limit import check_max_samples, room_left
from rankme_fast.spectrum import METRIC_NAMES, spectrum_of_gram
from rankme_fast.state import (
    STATE_FORMAT,
    STATE_VERSION,
    GramState,
    NonFiniteRowsError,
    from_state_dict,
    merge,
    symmetric,
)
from rankme_fast.update import check_nonfinite, resolve_nonfinite

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

    Rows holding NaN or Inf (`nonfinite`): "raise" stops `update` with a ValueError and adds
    nothing (this reads one number back from the device: a synchronisation on a GPU); "defer"
    excludes and counts them on the device and `compute` raises, naming the count; "drop"
    excludes and counts them and `compute` warns. "auto" (the default) is "raise" for a state
    on the CPU and "defer" on a GPU, where `update` then never waits for the device: it can run
    inside a compiled step (`torch.compile(step, fullgraph=True)`) or a CUDA graph.

    `dim` may be left None (fixed by the first batch). `metrics`, a sequence of METRIC_NAMES,
    makes `compute` return a dict instead of RankMe alone. `max_samples` keeps the first
    `max_samples` rows seen (over all processes: each of W processes keeps the first
    max_samples/W it sees), the cap of the RankMe paper being 25 600. States are float64 and
    stay so under `model.half()` or `.to(dtype)`; they are saved in `state_dict` (D²·8 bytes)
    unless `persistent=False`, so a resumed run loses no rows.

    Example:
        >>> import numpy as np, torch
        >>> from rankme_fast.integrations import RankMeMetric
        >>> z = np.random.default_rng(0).standard_normal((2000, 64)) * np.arange(1, 65) ** -0.5
        >>> metric = RankMeMetric(dim=64)
        >>> for part in torch.from_numpy(z).split(500):
        ...     metric.update(part)
        >>> int(metric.count), round(float(metric.compute()), 4)
        (2000, 54.8356)
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
        nonfinite: str = "auto",
        persistent: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice(backend, precision)
        check_positive_int(dim, "dim", optional=True)
        check_nonfinite(nonfinite)
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
        # rows skipped for NaN/Inf under "defer"/"drop", counted on the device
        self.add_state("nonfinite_rows", zeros((), dtype=torch.int64), dist_reduce_fx="sum", persistent=persistent)
        if self.centered:
            self.add_state("mean", zeros(size, dtype=torch.float64), dist_reduce_fx=None, persistent=persistent)

    # -- the torchmetrics contract -------------------------------------------------------------

    def update(self, embeddings: torch.Tensor | np.ndarray) -> None:
        """Fold a batch of shape (..., D) into the state; a batch with no rows is accepted
        and adds nothing (a rank or a step may have none). Bad input raises, state unchanged.
        Traceable by torch.compile for tensors (the update is the op rankme_fast::update_state_);
        with `max_samples` it reads the row count back (one synchronisation on a GPU)."""
        _, rows, dim = check_batch(embeddings, name="embeddings")
        if self.gram.numel() and dim != self.gram.shape[0]:
            raise ValueError(f"embeddings have D={dim} but this metric has D={self.gram.shape[0]}")
        if rows == 0:
            return
        if isinstance(embeddings, np.ndarray):
            embeddings = kernel_input(embeddings, name="embeddings").torch()
        z = embeddings.detach()
        if z.ndim != 2:
            z = z.reshape(rows, dim)
        if z.device != self.gram.device:
            z = z.to(self.gram.device)
        if self.max_samples is not None:
            room = room_left(self.max_samples, int(self.count), self.process_group)
            if room == 0:
                return
            z = z[:room]
        if not self.gram.numel():  # D fixed by this first batch (give `dim` to compile for CUDA graphs)
            self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=self.gram.device)
            if self.centered:
                self.mean = torch.zeros(dim, dtype=torch.float64, device=self.gram.device)
            self._static_addresses()
        mean = self.mean if self.centered else self.gram.new_empty(0)
        torch.ops.rankme_fast.update_state_(
            self.gram, self.count, self.nonfinite_rows, mean, z, self.centered, self.precision, self.backend,
            self.nonfinite,
        )  # fmt: skip

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """RankMe (float64 scalar tensor) of all rows seen, or a dict when `metrics` was given."""
        skipped, count = int(self.nonfinite_rows), int(self.count)
        if skipped and resolve_nonfinite(self.nonfinite, self.gram.device) == "defer":
            raise NonFiniteRowsError.deferred(skipped, count + skipped)
        if skipped:
            warnings.warn(f"RankMeMetric: {skipped} rows holding NaN or Inf were left out", RuntimeWarning,
                          stacklevel=2)  # fmt: skip
        if count == 0:
            raise NothingSeenError("RankMeMetric.compute(): no rows were seen since the last reset (on any process)")
        spectrum = spectrum_of_gram(self.gram, count=count, dim=self.gram.shape[0], centered=self.centered)
        if self.metric_names is None:
            return torch.tensor(spectrum.rankme(self.eps), dtype=torch.float64)
        return {
            name: torch.tensor(spectrum.metric(name, self.eps), dtype=torch.float64) for name in self.metric_names
        }

    def _wrap_update(self, update: Any) -> Any:
        """torchmetrics' bookkeeping around `update` (forget the cached result, count the call),
        written straight into the instance: nn.Module's __setattr__ cost more than a small
        update's kernel. Inside torch.compile the counter would be guarded on and recompile
        every step, so the compiled path only marks the metric as updated (a constant)."""

        @functools.wraps(update)
        def counted_or_compiled(*args: Any, **kwargs: Any) -> None:
            if torch.compiler.is_compiling():
                self._computed = None
                self._update_count = 1
                return update(*args, **kwargs)
            attributes = self.__dict__
            attributes["_computed"] = None
            attributes["_update_count"] += 1
            return update(*args, **kwargs)  # detaches its input: no grad mode to set

        return counted_or_compiled

    def forward(self, embeddings: torch.Tensor | np.ndarray) -> None:  # type: ignore[override]
        """Same as `update`: no eigensolve per step (torchmetrics' forward would run one)."""
        self.update(embeddings)

    def merge_state(self, incoming_state: Mapping[str, Any] | Metric) -> None:
        """Fold another RankMeMetric (or its states) into this one: a sum, or a Chan merge when
        centred."""
        if isinstance(incoming_state, RankMeMetric):
            other = incoming_state._state()
        elif isinstance(incoming_state, Mapping):
            other, _, _ = from_state_dict(self._as_state_dict(incoming_state), self.device)
        else:
            raise TypeError(f"expected a RankMeMetric or a dict of its states, got {type(incoming_state).__name__}")
        if other is None:
            return
        if not self.gram.numel():
            self._take(GramState.zeros(other.dim, centered=self.centered, precision=self.precision,
                                       device=self.gram.device))  # fmt: skip
        if other.dim != self.gram.shape[0]:
            raise ValueError(f"cannot merge dim={other.dim} into dim={self.gram.shape[0]}")
        merge(self._state(), other)

    def _state(self) -> GramState | None:
        """This metric's state tensors as a GramState (shared, not copied); None before D is known."""
        if not self.gram.numel():
            return None
        mean = self.mean if self.centered else None
        return GramState(self.gram, mean, self.count, self.nonfinite_rows, self.centered, self.precision)

    # -- torchmetrics internals this metric replaces ----------------------------------------------

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
        """One all_reduce of the Gram (Chan merge when centred) instead of an all-gather."""
        reduced = all_reduce_state(self._state(), centered=self.centered, precision=self.precision,
                                   device=self.gram.device, group=process_group or self.process_group)  # fmt: skip
        if reduced is not None:
            self._take(reduced)

    def _apply(self, fn: Any, exclude_state: Sequence[str] = ()) -> Metric:
        """Follow device moves, never dtype casts: the states stay float64."""
        this = super()._apply(fn, exclude_state=tuple(self._defaults))
        for name, default in self._defaults.items():
            this._defaults[name] = default.to(this.device)
            setattr(this, name, getattr(this, name).to(this.device))
        this._static_addresses()
        return this

    def reset(self) -> None:
        """torchmetrics' reset, except that a state already of its default shape (`dim` given)
        is zeroed where it is: compiled steps and CUDA graphs that write into it stay valid
        from one epoch to the next."""
        kept = {
            name: getattr(self, name)
            for name, default in self._defaults.items()
            if isinstance(default, torch.Tensor) and getattr(self, name).shape == default.shape
        }
        super().reset()
        for name, tensor in kept.items():
            setattr(self, name, tensor.zero_())
        self._static_addresses()

    def _static_addresses(self) -> None:
        """Mark GPU states as fixed addresses: torch.compile captures a step in a CUDA graph
        (mode="reduce-overhead") only when every input it writes to is one."""
        if self.gram.is_cuda and not torch.compiler.is_compiling():
            for name in self._defaults:
                torch._dynamo.mark_static_address(getattr(self, name))

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
        if present and self._persistent.get("nonfinite_rows") and prefix + "nonfinite_rows" not in state_dict:
            state_dict[prefix + "nonfinite_rows"] = torch.zeros((), dtype=torch.int64)  # saved before it existed
        if present:
            skipped = state_dict.get(prefix + "nonfinite_rows")
            saved = self._as_state_dict(present) | {"nonfinite": 0 if skipped is None else int(skipped)}
            loaded, _, _ = from_state_dict(saved, self.device)
            dim = self.gram.shape[0] if self.gram.numel() else None
            if dim is not None and loaded is not None and loaded.dim != dim:
                raise ValueError(f"cannot load a state of D={loaded.dim} into a RankMeMetric of D={dim}")
            for name in present:
                state_dict.pop(prefix + name)
            if loaded is not None:
                self._take(loaded)
                if int(loaded.count):
                    self._update_count = max(self._update_count, 1)  # compute() need not warn
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # -- helpers ----------------------------------------------------------------------------------

    def _take(self, state: GramState) -> None:
        """Make `state` this metric's state, in place where the shapes allow (compiled steps
        and CUDA graphs keep the addresses they captured)."""
        if self.gram.shape == state.gram.shape and self.gram.device == state.gram.device:
            for name, tensor in (("gram", state.gram), ("mean", state.mean), ("count", state.count),
                                 ("nonfinite_rows", state.nonfinite)):  # fmt: skip
                if tensor is not None and getattr(self, name).data_ptr() != tensor.data_ptr():
                    getattr(self, name).copy_(tensor)
        else:
            self.gram, self.count = state.gram, state.count.to(state.gram.device)
            self.nonfinite_rows = state.nonfinite.to(state.gram.device)
            if self.centered:
                self.mean = state.mean
        self._static_addresses()

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
            gram = symmetric(gram)
        mean = states.get("mean") if self.centered and sized else None
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "dim": None,
            "count": int(count),
            "centered": self.centered,
            "precision": self.precision,
            "gram": gram if sized else None,
            "mean": mean,
            "nonfinite": int(states.get("nonfinite_rows", 0)),
        }
