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
import math
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
from rankme_fast.uncertainty import block_spectra_of, check_level
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

    With `ci` (a confidence level such as 0.95) each batch goes to the next of `blocks` block
    states in turn and `compute` returns a dict with, for RankMe (and each of `metrics`), the
    value, its delete-one-block jackknife standard error `<name>_se` and interval
    `<name>_low`/`<name>_high` (rankme_fast.uncertainty): log it with `self.log_dict`. The pass
    does the same kernel work; the states take `blocks`·D²·8 bytes and `compute` runs
    `blocks` + 1 eigensolves in one batched call. `count` then holds the rows of each block.

    Example:
        >>> import numpy as np, torch
        >>> from rankme_fast.integrations import RankMeMetric
        >>> z = np.random.default_rng(0).standard_normal((2000, 64)) * np.arange(1, 65) ** -0.5
        >>> metric = RankMeMetric(dim=64)
        >>> for part in torch.from_numpy(z).split(500):
        ...     metric.update(part)
        >>> int(metric.count), round(float(metric.compute()), 4)
        (2000, 54.8356)
        >>> with_error = RankMeMetric(dim=64, ci=0.95)
        >>> for part in torch.from_numpy(z).split(200):
        ...     with_error.update(part)
        >>> logged = with_error.compute()
        >>> round(float(logged["rankme"]), 4), bool(logged["rankme_low"] < logged["rankme"] < logged["rankme_high"])
        (54.8356, True)
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
        ci: float | None = None,
        blocks: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice(backend, precision)
        check_positive_int(dim, "dim", optional=True)
        check_nonfinite(nonfinite)
        if not eps >= 0:
            raise ValueError(f"eps must be a non-negative number, got {eps!r}")
        check_max_samples(max_samples)
        check_positive_int(blocks, "blocks")
        if ci is not None:
            check_level(ci)
            if blocks < 2:
                raise ValueError(f"an interval needs blocks >= 2 (default 10), got blocks={blocks}")
        if metrics is not None:
            metrics = tuple(metrics)
            unknown = [name for name in metrics if name not in METRIC_NAMES]
            if unknown or not metrics:
                raise ValueError(f"metrics must be a non-empty list among {METRIC_NAMES}, got {list(metrics)}")
            if "nesum" in metrics and not centered:
                raise ValueError("nesum is defined on the covariance spectrum: pass centered=True")
        self.eps, self.centered, self.precision, self.backend = float(eps), bool(centered), precision, backend
        self.metric_names, self.max_samples, self.nonfinite = metrics, max_samples, nonfinite
        self.ci, self.blocks = ci, (int(blocks) if ci is not None else 1)
        self._lead = (self.blocks,) if ci is not None else ()  # a leading block dimension on every state
        self._block = 0  # the block the next batch goes to (eager updates; `next_block` is its saved copy)
        size = 0 if dim is None else int(dim)
        # dist_reduce_fx is what torchmetrics would do; _sync_dist and merge_state replace it
        zeros, lead = torch.zeros, self._lead
        self.add_state("gram", zeros(*lead, size, size, dtype=torch.float64), dist_reduce_fx="sum",
                       persistent=persistent)  # fmt: skip
        self.add_state("count", zeros(lead, dtype=torch.int64), dist_reduce_fx="sum", persistent=persistent)
        # rows skipped for NaN/Inf under "defer"/"drop", counted on the device
        self.add_state("nonfinite_rows", zeros(lead, dtype=torch.int64), dist_reduce_fx="sum", persistent=persistent)
        if self.centered:
            self.add_state("mean", zeros(*lead, size, dtype=torch.float64), dist_reduce_fx=None, persistent=persistent)
        if ci is not None:
            self.add_state("next_block", zeros((), dtype=torch.int64), dist_reduce_fx=None, persistent=persistent)

    # -- the torchmetrics contract -------------------------------------------------------------

    def update(self, embeddings: torch.Tensor | np.ndarray) -> None:
        """Fold a batch of shape (..., D) into the state; a batch with no rows is accepted
        and adds nothing (a rank or a step may have none). Bad input raises, state unchanged.
        Traceable by torch.compile for tensors (the update is the op rankme_fast::update_state_);
        with `max_samples` it reads the row count back (one synchronisation on a GPU)."""
        _, rows, dim = check_batch(embeddings, name="embeddings")
        if self.gram.numel() and dim != self.gram.shape[-1]:
            raise ValueError(f"embeddings have D={dim} but this metric has D={self.gram.shape[-1]}")
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
            room = room_left(self.max_samples, int(self.count.sum()), self.process_group)
            if room == 0:
                return
            z = z[:room]
        if not self.gram.numel():  # D fixed by this first batch (give `dim` to compile for CUDA graphs)
            self._allocate(dim)
        if self.ci is None:
            self._update_state(self.gram, self.count, self.nonfinite_rows, self.mean if self.centered else None, z)
        elif torch.compiler.is_compiling():  # the block index stays a tensor: no recompilation per block
            index = self.next_block.view(1)
            states = [getattr(self, name) for name in self._state_names()]
            parts = [state.index_select(0, index).squeeze(0) for state in states]
            self._update_state(*parts[:3], parts[3] if self.centered else None, z)
            for state, part in zip(states, parts, strict=True):
                state.index_copy_(0, index, part.unsqueeze(0))
            self.next_block.add_(1).remainder_(self.blocks)
        else:  # the block's views are updated in place
            k = self._block
            self._update_state(self.gram[k], self.count[k], self.nonfinite_rows[k],
                               self.mean[k] if self.centered else None, z)  # fmt: skip
            self._block = (k + 1) % self.blocks
            self.next_block.fill_(self._block)

    def _update_state(
        self, gram: torch.Tensor, count: torch.Tensor, nonfinite: torch.Tensor, mean: torch.Tensor | None,
        z: torch.Tensor,
    ) -> None:
        torch.ops.rankme_fast.update_state_(
            gram, count, nonfinite, gram.new_empty(0) if mean is None else mean, z, self.centered, self.precision,
            self.backend, self.nonfinite,
        )  # fmt: skip

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """RankMe (float64 scalar tensor) of all rows seen, or a dict when `metrics` or `ci`
        was given."""
        skipped, count = int(self.nonfinite_rows.sum()), int(self.count.sum())
        if skipped and resolve_nonfinite(self.nonfinite, self.gram.device) == "defer":
            raise NonFiniteRowsError.deferred(skipped, count + skipped)
        if skipped:
            warnings.warn(f"RankMeMetric: {skipped} rows holding NaN or Inf were left out", RuntimeWarning,
                          stacklevel=2)  # fmt: skip
        if count == 0:
            raise NothingSeenError("RankMeMetric.compute(): no rows were seen since the last reset (on any process)")
        if self.ci is not None:
            return self._compute_with_interval()
        spectrum = spectrum_of_gram(self.gram, count=count, dim=self.gram.shape[0], centered=self.centered)
        if self.metric_names is None:
            return torch.tensor(spectrum.rankme(self.eps), dtype=torch.float64)
        return {
            name: torch.tensor(spectrum.metric(name, self.eps), dtype=torch.float64) for name in self.metric_names
        }

    def _compute_with_interval(self) -> dict[str, torch.Tensor]:
        """Each metric with its jackknife standard error and interval; NaN for those, with a
        warning, while fewer than 2 blocks hold rows (fewer batches than that since the reset)."""
        names = self.metric_names or ("rankme",)
        held = int((self.count > 0).sum())
        if held < 2:
            warnings.warn(f"RankMeMetric: rows in {held} of {self.blocks} blocks (a block per batch): an interval "
                          "needs at least 2; its bounds are NaN", RuntimeWarning, stacklevel=3)  # fmt: skip
            only = self._block_states()[int(self.count.argmax())]
            spectrum = spectrum_of_gram(only.gram, count=int(only.count), dim=only.dim, centered=self.centered)
            values = {name: (spectrum.metric(name, self.eps), math.nan, math.nan, math.nan) for name in names}
        else:
            spectra = block_spectra_of(self._block_states(), [""] * self.blocks)
            estimates = {name: spectra.estimate(name, ci=self.ci, eps=self.eps) for name in names}
            values = {name: (e.value, e.standard_error, *e.interval) for name, e in estimates.items()}
        return {
            f"{name}{suffix}": torch.tensor(number, dtype=torch.float64)
            for name, numbers in values.items()
            for suffix, number in zip(("", "_se", "_low", "_high"), numbers, strict=True)
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
        """Fold another RankMeMetric (or its states) into this one, block by block: a sum, or a
        Chan merge when centred."""
        if isinstance(incoming_state, RankMeMetric):
            if incoming_state.blocks != self.blocks:
                raise ValueError(f"cannot merge a metric of {incoming_state.blocks} blocks into one of {self.blocks}")
            others = incoming_state._block_states()
        elif isinstance(incoming_state, Mapping):
            others = [from_state_dict(saved, self.device)[0] for saved in self._saved_blocks(incoming_state)]
            others = [] if all(other is None for other in others) else others
        else:
            raise TypeError(f"expected a RankMeMetric or a dict of its states, got {type(incoming_state).__name__}")
        if not others:
            return
        dim = next(other.dim for other in others if other is not None)
        if not self.gram.numel():
            self._allocate(dim)
        if dim != self.gram.shape[-1]:
            raise ValueError(f"cannot merge dim={dim} into dim={self.gram.shape[-1]}")
        for mine, other in zip(self._block_states(), others, strict=True):
            if other is not None:
                merge(mine, other)

    def _block_states(self) -> list[GramState]:
        """This metric's states as GramStates, one per block (views, shared, not copied); empty
        before D is known."""
        if not self.gram.numel():
            return []
        mean = self.mean if self.centered else None
        if self.ci is None:
            return [GramState(self.gram, mean, self.count, self.nonfinite_rows, self.centered, self.precision)]
        return [GramState(self.gram[k], None if mean is None else mean[k], self.count[k], self.nonfinite_rows[k],
                          self.centered, self.precision) for k in range(self.blocks)]  # fmt: skip

    # -- torchmetrics internals this metric replaces ----------------------------------------------

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
        """One all_reduce of the Gram (Chan merge when centred) per block instead of an
        all-gather."""
        states = self._block_states() or [None] * self.blocks
        for block, state in enumerate(states):
            reduced = all_reduce_state(state, centered=self.centered, precision=self.precision,
                                       device=self.gram.device, group=process_group or self.process_group)  # fmt: skip
            if reduced is not None:
                self._take(reduced, block)

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
        self._block = 0
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
        """Check what is loaded as `GramAccumulator.from_state_dict` does, block by block; the
        state is left unchanged when it is rejected."""
        present = {name: state_dict[prefix + name] for name in _STATES if prefix + name in state_dict}
        if present and self._persistent.get("nonfinite_rows") and prefix + "nonfinite_rows" not in state_dict:
            # saved before it existed
            state_dict[prefix + "nonfinite_rows"] = torch.zeros(self._lead, dtype=torch.int64)
        if present:
            skipped = state_dict.get(prefix + "nonfinite_rows")
            states = present if skipped is None else present | {"nonfinite_rows": skipped}
            loaded = [from_state_dict(saved, self.device)[0] for saved in self._saved_blocks(states)]
            dim = self.gram.shape[-1] if self.gram.numel() else None
            dims = {state.dim for state in loaded if state is not None}
            if dim is not None and dims - {dim}:
                raise ValueError(f"cannot load a state of D={dims.pop()} into a RankMeMetric of D={dim}")
            for name in present:
                state_dict.pop(prefix + name)
            for block, state in enumerate(loaded):
                if state is not None:
                    self._take(state, block)
            if any(state is not None and int(state.count) for state in loaded):
                self._update_count = max(self._update_count, 1)  # compute() need not warn
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self.ci is not None:
            self._block = int(self.next_block) % self.blocks

    # -- helpers ----------------------------------------------------------------------------------

    def _state_names(self) -> list[str]:
        return ["gram", "count", "nonfinite_rows", *(["mean"] if self.centered else [])]

    def _allocate(self, dim: int) -> None:
        """Zero states of dimension `dim` (D was unknown until now)."""
        device, lead = self.gram.device, self._lead
        self.gram = torch.zeros(*lead, dim, dim, dtype=torch.float64, device=device)
        if self.centered:
            self.mean = torch.zeros(*lead, dim, dtype=torch.float64, device=device)
        self._static_addresses()

    def _take(self, state: GramState, block: int = 0) -> None:
        """Make `state` this metric's state (of block `block`), in place where the shapes allow
        (compiled steps and CUDA graphs keep the addresses they captured)."""
        if self.ci is not None:
            if not self.gram.numel() or self.gram.shape[-1] != state.dim:
                self._allocate(state.dim)
            mine = self._block_states()[block]
            for target, tensor in ((mine.gram, state.gram), (mine.mean, state.mean), (mine.count, state.count),
                                   (mine.nonfinite, state.nonfinite)):  # fmt: skip
                if tensor is not None:
                    target.copy_(tensor)
        elif self.gram.shape == state.gram.shape and self.gram.device == state.gram.device:
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

    def _saved_blocks(self, states: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Metric states -> one `GramAccumulator.state_dict()` layout per block."""
        if self.ci is None:
            return [self._as_state_dict(states)]
        gram, count = states.get("gram"), states.get("count")
        if not isinstance(gram, torch.Tensor) or not isinstance(count, torch.Tensor):
            raise ValueError("RankMeMetric states gram and count must be tensors")
        if gram.shape[:1] != (self.blocks,) or count.shape != (self.blocks,):
            raise ValueError(f"RankMeMetric states of {self.blocks} blocks must lead with that dimension, got gram "
                             f"{tuple(gram.shape)} and count {tuple(count.shape)}")  # fmt: skip
        return [self._as_state_dict({name: value[k] for name, value in states.items() if value is not None})
                for k in range(self.blocks)]  # fmt: skip

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
