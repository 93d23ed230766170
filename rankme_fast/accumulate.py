"""GramAccumulator: the float64 state (Gram, count, and for centred statistics the mean)
that a stream of batches is folded into. Nothing N x D is ever kept.

Centring is done the numerically safe way: each batch is centred on its own float64 mean
inside the kernel (fused shift), and batches are combined with the Chan/Pébay pairwise
update, so the result stays exact when |mean| >> std.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rankme_fast import slq
from rankme_fast._checks import check_positive_int
from rankme_fast._inputs import Matrix, as_matrix
from rankme_fast.backends import check_choice, select_backend
from rankme_fast.backends.base import PRECISIONS
from rankme_fast.distributed import all_reduce_state
from rankme_fast.spectrum import Spectrum, spectrum_of_gram
from rankme_fast.state import GramState, NonFiniteRowsError, chan_merge

_STATE_FORMAT = "rankme_fast.GramAccumulator"
_STATE_VERSION = 1
NONFINITE_POLICIES = ("raise", "drop")
_RANKME_METHODS = ("auto", "exact", "slq")
# From this D on, GramAccumulator.rankme() estimates instead of eigensolving: a dense float64
# eigvalsh took 114-127 s at D=16384 on 2 CPU cores (bench/results/slq-2026-11-22.json), so
# ~15 minutes at 32768 by its D³ cost.
SLQ_THRESHOLD = 32768


class GramAccumulator:
    """Streams batches of embeddings (N, D) into a float64 D x D Gram state.

    `update` takes torch tensors (any device) or numpy arrays of any float dtype, shape
    (..., D). Bad input raises ValueError/TypeError and leaves the state unchanged.
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
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        self._dim = None if dim is None else int(dim)
        self.centered = bool(centered)
        self.precision = precision
        self.backend = backend
        self.nonfinite = nonfinite
        self._device = None if device is None else torch.device(device)
        self._gram: torch.Tensor | None = None
        self._mean: torch.Tensor | None = None
        self._count = 0
        self.last_backend: str | None = None
        self.last_kernel: str | None = None  # e.g. 'tiled-avx512bf16': the variant that backend ran
        self.passed_over: dict[str, str] = {}

    # -- read-only views ------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of rows accumulated so far."""
        return self._count

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
        return None if self._mean is None else self._mean.clone()

    def gram(self) -> torch.Tensor:
        """The full symmetric float64 matrix: ZᵀZ, or the centred scatter Σ(z-μ)(z-μ)ᵀ."""
        if self._gram is None:
            raise ValueError("nothing has been accumulated yet")
        return _symmetric(self._gram)

    # -- updates ----------------------------------------------------------------------------

    def update(self, batch: Any) -> GramAccumulator:
        """Add one batch of shape (..., D); leading dimensions are flattened."""
        matrix = as_matrix(batch)
        if self._dim is not None and matrix.cols != self._dim:
            raise ValueError(f"batch has D={matrix.cols} but this accumulator has dim={self._dim}")
        device = self._device if self._device is not None else matrix.device
        matrix = matrix.to(device)
        backend, passed_over = select_backend(matrix, self.precision, self.backend)
        matrix = self._finite_rows(matrix, backend)
        if matrix is None:
            return self
        self._ensure_state(matrix.cols, device)
        assert self._gram is not None
        if not self.centered:
            backend.add_gram(matrix, self._gram, None, self.precision)
            self._count += matrix.rows
        else:
            batch_mean = backend.column_mean(matrix).to(device)
            backend.add_gram(matrix, self._gram, batch_mean, self.precision)
            self._combine_means(matrix.rows, batch_mean)
        self.last_backend, self.last_kernel, self.passed_over = backend.name, backend.kernel_in_use(), passed_over
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
        if other._count == 0:
            return self
        assert other._gram is not None
        device = self._device if self._device is not None else other._gram.device
        other_gram = other._gram.to(device)
        other_mean = None if other._mean is None else other._mean.to(device)
        self._ensure_state(other._gram.shape[0], device)
        assert self._gram is not None
        if other_gram.data_ptr() == self._gram.data_ptr():
            other_gram = other_gram.clone()
        self._gram += other_gram
        if self.centered:
            assert other_mean is not None
            self._combine_means(other._count, other_mean.clone())
        else:
            self._count += other._count
        return self

    def all_reduce(self, group: Any = None) -> GramAccumulator:
        """Combine this state with the same accumulator on every rank of a torch.distributed
        `group` (a collective: every rank calls it). Afterwards every rank holds the state of
        all rows seen on all ranks: Grams summed with one all_reduce (never gathered), centred
        states merged by the Chan formula. A rank that saw no rows takes part with zeros.
        On disagreement (D, centring, precision) every rank raises ValueError, state unchanged."""
        self._adopt(all_reduce_state(self.shared_state(), device=self._device, group=group))
        return self

    def shared_state(self) -> GramState:
        """The state tensors themselves (not copies), for code that keeps the state elsewhere,
        such as the torchmetrics metric; `from_shared_state` is the inverse."""
        return GramState(self._gram, self._mean, self._count, self._dim, self.centered, self.precision)

    @classmethod
    def from_shared_state(
        cls,
        state: GramState,
        *,
        backend: str = "auto",
        device: str | torch.device | None = None,
        nonfinite: str = "raise",
    ) -> GramAccumulator:
        """An accumulator that updates `state`'s tensors in place (no copy, no validation:
        for states this package made; `from_state_dict` checks what it loads). `device` is
        where a state is created when `state` has none yet."""
        acc = cls(
            state.dim,
            centered=state.centered,
            precision=state.precision,
            backend=backend,
            device=device,
            nonfinite=nonfinite,
        )
        acc._adopt(state)
        return acc

    def uncentered(self) -> GramAccumulator:
        """A new, uncentred accumulator holding ZᵀZ of the same rows, made from this centred
        state as scatter + n·μμᵀ: one pass over the data gives both spectra. Both terms are
        positive semi-definite, so the result carries a few float64 roundings of ‖ZᵀZ‖, the
        size of the eigensolver's own error (an accumulated ZᵀZ carries up to one per row)."""
        if not self.centered:
            raise ValueError("uncentered() needs a centred accumulator; this one already holds ZᵀZ")
        raw = GramAccumulator(self._dim, precision=self.precision, backend=self.backend, device=self._device,
                              nonfinite=self.nonfinite)  # fmt: skip
        if self._gram is not None:
            assert self._mean is not None
            raw._gram = self._gram + torch.outer(self._mean, self._mean).mul_(self._count)
            raw._count, raw._dim, raw._device = self._count, self._dim, self._gram.device
        return raw

    def reset(self) -> None:
        """Forget everything accumulated; keeps dim, device and options."""
        if self._gram is not None:
            self._gram.zero_()
        if self._mean is not None:
            self._mean.zero_()
        self._count = 0

    def spectrum(self) -> Spectrum:
        """Eigenvalues of the state in float64, top min(count, dim) of them, descending."""
        if self._gram is None or self._count == 0:
            raise ValueError("nothing has been accumulated yet")
        assert self._dim is not None
        return spectrum_of_gram(self._gram, count=self._count, dim=self._dim, centered=self.centered)

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
        if self._gram is None or self._count == 0:
            raise ValueError("nothing has been accumulated yet")
        return slq.estimate_rankme(self.gram(), count=self._count, eps=eps, budget=budget, seed=seed)

    # -- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: CPU float64 tensors and plain Python values."""
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "dim": self._dim,
            "count": self._count,
            "centered": self.centered,
            "precision": self.precision,
            "gram": None if self._gram is None else _symmetric(self._gram).cpu(),
            "mean": None if self._mean is None else self._mean.cpu().clone(),
        }

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, Any],
        *,
        backend: str = "auto",
        device: str | torch.device | None = None,
    ) -> GramAccumulator:
        """Rebuild an accumulator from `state_dict()` output, checking everything it loads."""
        checked = _check_state(state)
        acc = cls(
            checked["dim"],
            centered=checked["centered"],
            precision=checked["precision"],
            backend=backend,
            device=device,
        )
        if checked["gram"] is not None:
            target = acc._device if acc._device is not None else torch.device("cpu")
            acc._device = target
            acc._gram = checked["gram"].to(target).contiguous()
            acc._mean = None if checked["mean"] is None else checked["mean"].to(target)
            acc._count = checked["count"]
        return acc

    # -- internals ----------------------------------------------------------------------------

    def _finite_rows(self, matrix: Matrix, backend: Any) -> Matrix | None:
        bad = backend.count_nonfinite_rows(matrix)
        if bad == 0:
            return matrix
        if self.nonfinite == "raise":
            raise NonFiniteRowsError(bad, matrix.rows)
        keep = torch.isfinite(matrix.torch()).all(dim=1)
        return None if bad == matrix.rows else matrix.select_rows(keep)

    def _adopt(self, state: GramState) -> None:
        if state.gram is not None:
            self._gram, self._mean, self._count = state.gram, state.mean, state.count
            self._dim, self._device = state.dim, state.gram.device

    def _ensure_state(self, dim: int, device: torch.device) -> None:
        if self._gram is None:
            self._gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)
            if self.centered:
                self._mean = torch.zeros(dim, dtype=torch.float64, device=device)
            self._dim, self._device = dim, device

    def _combine_means(self, n_b: int, mean_b: torch.Tensor) -> None:
        assert self._gram is not None and self._mean is not None
        chan_merge(self._gram, self._mean, self._count, n_b, mean_b)
        self._count += n_b


def _symmetric(gram: torch.Tensor) -> torch.Tensor:
    lower = torch.tril(gram)
    return lower + torch.tril(gram, -1).T


def _check_state(state: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping from state_dict(), got {type(state).__name__}")
    if state.get("format") != _STATE_FORMAT or state.get("version") != _STATE_VERSION:
        raise ValueError(
            f"not a GramAccumulator state (format={state.get('format')!r}, version={state.get('version')!r})"
        )
    missing = {"dim", "count", "centered", "precision", "gram", "mean"} - set(state)
    if missing:
        raise ValueError(f"state is missing keys: {sorted(missing)}")
    dim, count, centered, precision = state["dim"], state["count"], state["centered"], state["precision"]
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 0:
        raise ValueError(f"state count must be a non-negative integer, got {count!r}")
    if not isinstance(centered, bool):
        raise ValueError(f"state centered must be a bool, got {centered!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"state precision must be one of {PRECISIONS}, got {precision!r}")
    gram, mean = state["gram"], state["mean"]
    if gram is None:
        if count != 0 or mean is not None:
            raise ValueError("state has no gram but a nonzero count or a mean")
        return {"dim": dim, "count": 0, "centered": centered, "precision": precision, "gram": None, "mean": None}
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
    return {
        "dim": int(gram.shape[0]),
        "count": int(count),
        "centered": centered,
        "precision": precision,
        "gram": gram,
        "mean": mean,
    }


def _float64_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or value.dtype != torch.float64:
        raise ValueError(f"state {name} must be a float64 tensor, got {getattr(value, 'dtype', type(value))}")
    return value.detach().cpu().clone()
