"""GramAccumulator: the float64 state (Gram, count, and for centred statistics the mean)
that a stream of batches is folded into. Nothing N x D is ever kept.

Centring is done the numerically safe way: each batch is centred on its own float64 mean
inside the kernel (fused shift), and batches are combined with the Chan/Pébay pairwise
update, so the result stays exact when |mean| >> std.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rankme_fast import slq
from rankme_fast._checks import check_positive_int
from rankme_fast._inputs import kernel_input
from rankme_fast.backends import check_choice
from rankme_fast.distributed import all_reduce_state
from rankme_fast.spectrum import Spectrum, spectrum_of_gram
from rankme_fast.state import GramState, NonFiniteRowsError, from_state_dict, merge, symmetric, to_state_dict
from rankme_fast.update import check_nonfinite, resolve_nonfinite, update_state

_RANKME_METHODS = ("auto", "exact", "slq")
# From this D on, GramAccumulator.rankme() estimates instead of eigensolving: a dense float64
# eigvalsh took 114-127 s at D=16384 on 2 CPU cores (bench/results/slq-2026-11-22.json), so
# ~15 minutes at 32768 by its D³ cost.
SLQ_THRESHOLD = 32768


class GramAccumulator:
    """Streams batches of embeddings (N, D) into a float64 D x D Gram state.

    `update` takes torch tensors (any device) or numpy arrays of any float dtype, shape
    (..., D). Bad input raises ValueError/TypeError and leaves the state unchanged. Memory is
    D²·8 bytes (plus D·8 for a centred state's mean), whatever the number of rows.

    Args:
        dim: D, or None to take it from the first batch.
        centered: keep the scatter about the mean (merged by the Chan/Pébay formula, exact
            when |mean| ≫ std) instead of ZᵀZ.
        precision: "exact" (float64 products) or "fast" (float32 products within a block).
        backend: "auto", or a name of `rf.available_backends()`.
        device: where the state lives (default: the first batch's device).
        nonfinite: rows holding NaN or Inf: "raise" (default), "drop", "defer" or "auto"
            (rankme_fast.update).

    Example:
        >>> import numpy as np, rankme_fast as rf
        >>> z = np.random.default_rng(0).standard_normal((2000, 64)) * np.arange(1, 65) ** -0.5
        >>> acc = rf.GramAccumulator()
        >>> for part in np.array_split(z, 4):
        ...     _ = acc.update(part)
        >>> acc.count, acc.dim, round(acc.rankme(), 4)
        (2000, 64, 54.8356)
    """

    def __init__(
        self,
        dim: int | None = None,
        *,
        centered: bool = False,
        precision: str = "exact",
        backend: str = "auto",
        device: str | torch.device | None = None,
        nonfinite: str = "raise",
    ) -> None:
        check_choice(backend, precision)
        check_positive_int(dim, "dim", optional=True)
        check_nonfinite(nonfinite)
        self._dim = None if dim is None else int(dim)
        self.centered = bool(centered)
        self.precision = precision
        self.backend = backend
        self.nonfinite = nonfinite
        self._device = None if device is None else torch.device(device)
        self._state: GramState | None = None  # made by the first batch
        self.last_backend: str | None = None
        self.last_kernel: str | None = None  # e.g. 'tiled-avx512bf16': the variant that backend ran
        self.not_chosen: dict[str, str] = {}  # backend -> why "auto" did not choose it, for the last batch

    # -- read-only views ------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of rows accumulated so far."""
        return 0 if self._state is None else int(self._state.count)

    @property
    def nonfinite_rows(self) -> int:
        """Rows left out for holding NaN or Inf (nonfinite="drop", "defer")."""
        return 0 if self._state is None else int(self._state.nonfinite)

    @property
    def dim(self) -> int | None:
        """Embedding dimension D (None until fixed by the constructor or the first batch)."""
        return self._dim

    @property
    def device(self) -> torch.device | None:
        return self._device

    @property
    def mean(self) -> torch.Tensor | None:
        """Float64 column mean of everything seen (centred accumulators only)."""
        return None if self._state is None or self._state.mean is None else self._state.mean.clone()

    @property
    def passed_over(self) -> dict[str, str]:
        """The earlier name of `not_chosen`."""
        return self.not_chosen

    def gram(self) -> torch.Tensor:
        """The full symmetric float64 matrix: ZᵀZ, or the centred scatter Σ(z-μ)(z-μ)ᵀ."""
        if self._state is None:
            raise ValueError("nothing has been accumulated yet")
        return symmetric(self._state.gram)

    # -- updates ----------------------------------------------------------------------------

    def update(self, batch: Any) -> GramAccumulator:
        """Add one batch of shape (..., D); leading dimensions are flattened."""
        matrix = kernel_input(batch)
        if self._dim is not None and matrix.cols != self._dim:
            raise ValueError(f"batch has D={matrix.cols} but this accumulator has dim={self._dim}")
        device = self._device if self._device is not None else matrix.device
        matrix = matrix.to(device)
        state = self._state or GramState.zeros(matrix.cols, centered=self.centered, precision=self.precision,
                                               device=device)  # fmt: skip
        mean = state.mean if state.mean is not None else state.gram.new_empty(0)
        chosen, not_chosen = update_state(state.gram, state.count, state.nonfinite, mean, matrix, self.centered,
                                          self.precision, self.backend, self.nonfinite)  # fmt: skip
        self._state, self._dim, self._device = state, matrix.cols, device
        self.last_backend, self.last_kernel, self.not_chosen = chosen.name, chosen.kernel_in_use(), not_chosen
        return self

    def merge(self, other: GramAccumulator) -> GramAccumulator:
        """Fold another accumulator's state into this one (sum, or Chan merge when centred)."""
        if not isinstance(other, GramAccumulator):
            raise TypeError(f"can only merge a GramAccumulator, got {type(other).__name__}")
        if other.centered != self.centered or other.precision != self.precision:
            raise ValueError(
                f"cannot merge centered={other.centered}, precision={other.precision!r} into "
                f"centered={self.centered}, precision={self.precision!r}"
            )
        if self._dim is not None and other._dim is not None and other._dim != self._dim:
            raise ValueError(f"cannot merge dim={other._dim} into dim={self._dim}")
        if other._state is None or (other.count == 0 and other.nonfinite_rows == 0):
            return self
        if self._state is None:
            device = self._device if self._device is not None else other._state.gram.device
            self._state = GramState.zeros(other._state.dim, centered=self.centered, precision=self.precision,
                                          device=device)  # fmt: skip
            self._dim, self._device = other._state.dim, device
        merge(self._state, other._state)
        return self

    def all_reduce(self, group: Any = None) -> GramAccumulator:
        """Combine this state with the same accumulator on every rank of a torch.distributed
        `group` (a collective: every rank calls it). Afterwards every rank holds the state of
        all rows seen on all ranks: Grams summed with one all_reduce (never gathered), centred
        states merged by the Chan formula. A rank that saw no rows takes part with zeros.
        On disagreement (D, centring, precision) every rank raises ValueError, state unchanged."""
        reduced = all_reduce_state(self._state, centered=self.centered, precision=self.precision,
                                   device=self._device, group=group)  # fmt: skip
        if reduced is not None:
            self._state, self._dim, self._device = reduced, reduced.dim, reduced.gram.device
        return self

    def uncentered(self) -> GramAccumulator:
        """A new, uncentred accumulator holding ZᵀZ of the same rows, made from this centred
        state as scatter + n·μμᵀ: one pass over the data gives both spectra. Both terms are
        positive semi-definite, so the result carries a few float64 roundings of ‖ZᵀZ‖, the
        size of the eigensolver's own error (an accumulated ZᵀZ carries up to one per row)."""
        if not self.centered:
            raise ValueError("uncentered() needs a centred accumulator; this one already holds ZᵀZ")
        raw = GramAccumulator(self._dim, precision=self.precision, backend=self.backend, device=self._device,
                              nonfinite=self.nonfinite)  # fmt: skip
        if self._state is not None:
            state = self._state
            assert state.mean is not None
            gram = state.gram + torch.outer(state.mean, state.mean).mul_(state.count)
            raw._state = GramState(gram, None, state.count.clone(), state.nonfinite.clone(), False, self.precision)
            raw._device = state.gram.device
        return raw

    def reset(self) -> None:
        """Forget everything accumulated; keeps dim, device and options."""
        if self._state is not None:
            for tensor in (self._state.gram, self._state.mean, self._state.count, self._state.nonfinite):
                if tensor is not None:
                    tensor.zero_()

    def spectrum(self) -> Spectrum:
        """Eigenvalues of the state in float64, top min(count, dim) of them, descending."""
        self._check_computable()
        assert self._state is not None and self._dim is not None
        return spectrum_of_gram(self._state.gram, count=self.count, dim=self._dim, centered=self.centered)

    def rankme(self, eps: float = 1e-7, *, method: str = "auto") -> float:
        """RankMe of the state: "exact" (float64 eigensolve), "slq" (the estimate of
        `estimate_rankme`), or "auto": exact below D = SLQ_THRESHOLD, the estimate above."""
        if method not in _RANKME_METHODS:
            raise ValueError(f"method must be one of {_RANKME_METHODS}, got {method!r}")
        if method == "slq" or (method == "auto" and (self._dim or 0) >= SLQ_THRESHOLD):
            return self.estimate_rankme(eps).value
        return self.spectrum().rankme(eps)

    def estimate_rankme(
        self, eps: float = 1e-7, *, budget: slq.Budget | None = None, seed: int = 0
    ) -> slq.RankMeEstimate:
        """RankMe without an eigensolve (deflated stochastic Lanczos quadrature, rankme_fast.slq),
        with an error bar; for D where a dense float64 eigensolve is too slow."""
        self._check_computable()
        return slq.estimate_rankme(self.gram(), count=self.count, eps=eps, budget=budget, seed=seed)

    # -- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: CPU float64 tensors and plain Python values."""
        saved = to_state_dict(self._state, centered=self.centered, precision=self.precision)
        return saved | {"dim": self._dim if self._state is None else saved["dim"]}

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, Any],
        *,
        backend: str = "auto",
        device: str | torch.device | None = None,
    ) -> GramAccumulator:
        """Rebuild an accumulator from `state_dict()` output, checking everything it loads."""
        target = torch.device("cpu") if device is None else torch.device(device)
        loaded, centered, precision = from_state_dict(state, target)
        acc = cls(state.get("dim") if loaded is None else loaded.dim, centered=centered, precision=precision,
                  backend=backend, device=device)  # fmt: skip
        if loaded is not None:
            acc._state, acc._device = loaded, target
        return acc

    # -- internals ----------------------------------------------------------------------------

    def _check_computable(self) -> None:
        if self.count == 0:
            raise ValueError("nothing has been accumulated yet")
        skipped = self.nonfinite_rows
        if skipped and resolve_nonfinite(self.nonfinite, self._state.gram.device) == "defer":
            raise NonFiniteRowsError.deferred(skipped, self.count + skipped)
