"""GramAccumulator: the float64 state (Gram, count, and for centred statistics the mean)
that a stream of batches is folded into. Nothing N x D is ever kept.

Centring is done the numerically safe way: each batch is centred on its own float64 mean
inside the kernel (fused shift), and batches are combined with the Chan/Pébay pairwise
update, so the result stays exact when |mean| >> std.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rankme_fast import slq
from rankme_fast._checks import check_positive_int
from rankme_fast._inputs import KernelInput, kernel_input
from rankme_fast.backends import check_choice, select_backend
from rankme_fast.distributed import all_reduce_state
from rankme_fast.spectrum import Spectrum, spectrum_of_gram
from rankme_fast.state import GramState, NonFiniteRowsError, from_state_dict, merge, symmetric, to_state_dict
from rankme_fast.uncertainty import (
    BlockSpectra,
    Estimate,
    Growth,
    block_spectra_of,
    blocks_of,
    growth,
    merged,
    spectra_of_states,
)
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
    D²·8 bytes (plus D·8 for a centred state's mean) per block, whatever the number of rows.

    With `blocks=K` (K ≥ 2) every row goes into one of K block states and the total is their
    merge: the kernel work is the same, the memory K·D²·8 bytes, and `rankme(ci=0.95)`,
    `estimate`, `growth` and `rf.compare` give error bars from the delete-one-block jackknife
    (rankme_fast.uncertainty). A batch goes to the next block in turn, or to the block `block=`
    names; with `groups=` (one key per row: the file a frame came from, the image a view was
    made of) the rows sharing a key go to one block, as correlated rows must. Computing an
    interval costs K more eigensolves, run as one batched call, and K·D²·8 bytes while it runs:
    at large D and small N they, not the pass over the rows, dominate.

    Args:
        dim: D, or None to take it from the first batch.
        centered: keep the scatter about the mean (merged by the Chan/Pébay formula, exact
            when |mean| ≫ std) instead of ZᵀZ.
        precision: "exact" (float64 products) or "fast" (float32 products within a block).
        backend: "auto", or a name of `rf.available_backends()`.
        device: where the state lives (default: the first batch's device).
        nonfinite: rows holding NaN or Inf: "raise" (default), "drop", "defer" or "auto"
            (rankme_fast.update).
        blocks: block states for error bars (1: none).

    Example:
        >>> import numpy as np, rankme_fast as rf
        >>> z = np.random.default_rng(0).standard_normal((2000, 64)) * np.arange(1, 65) ** -0.5
        >>> acc = rf.GramAccumulator()
        >>> for part in np.array_split(z, 4):
        ...     _ = acc.update(part)
        >>> acc.count, acc.dim, round(acc.rankme(), 4)
        (2000, 64, 54.8356)
        >>> blocked = rf.GramAccumulator(blocks=10)
        >>> for part in np.array_split(z, 20):
        ...     _ = blocked.update(part)
        >>> estimate = blocked.rankme(ci=0.95)
        >>> low, high = estimate.interval
        >>> round(estimate.value, 4), estimate.blocks, bool(low < estimate.value < high)
        (54.8356, 10, True)
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
        blocks: int = 1,
    ) -> None:
        check_choice(backend, precision)
        check_positive_int(dim, "dim", optional=True)
        check_positive_int(blocks, "blocks")
        check_nonfinite(nonfinite)
        self._dim = None if dim is None else int(dim)
        self.centered = bool(centered)
        self.precision = precision
        self.backend = backend
        self.nonfinite = nonfinite
        self._device = None if device is None else torch.device(device)
        self._parts: list[GramState | None] = [None] * int(blocks)  # made by the first batch
        self._fingerprints = [""] * int(blocks)  # how rows went to each block, for pairing
        self._next_block = 0
        self._merged: GramState | None = None  # the total of several blocks, until the next change
        self.last_backend: str | None = None
        self.last_kernel: str | None = None  # e.g. 'tiled-avx512bf16': the variant that backend ran
        self.not_chosen: dict[str, str] = {}  # backend -> why "auto" did not choose it, for the last batch

    # -- read-only views ------------------------------------------------------------------

    @property
    def blocks(self) -> int:
        return len(self._parts)

    @property
    def count(self) -> int:
        """Number of rows accumulated so far."""
        return sum(int(part.count) for part in self._parts if part is not None)

    @property
    def block_counts(self) -> tuple[int, ...]:
        """Rows in each block."""
        return tuple(0 if part is None else int(part.count) for part in self._parts)

    @property
    def nonfinite_rows(self) -> int:
        """Rows left out for holding NaN or Inf (nonfinite="drop", "defer")."""
        return sum(int(part.nonfinite) for part in self._parts if part is not None)

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
        total = self._state
        return None if total is None or total.mean is None else total.mean.clone()

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

    def update(self, batch: Any, *, groups: Any = None, block: int | None = None) -> GramAccumulator:
        """Add one batch of shape (..., D); leading dimensions are flattened. With blocks, the
        batch goes to the next block in turn, to block `block`, or row by row to the blocks of
        its `groups` keys (one key per row; rows of one key always share a block)."""
        matrix = kernel_input(batch)
        if self._dim is not None and matrix.cols != self._dim:
            raise ValueError(f"batch has D={matrix.cols} but this accumulator has dim={self._dim}")
        device = self._device if self._device is not None else matrix.device
        matrix = matrix.to(device)
        pieces = self._assign(matrix, groups, block)
        if len(pieces) > 1 and resolve_nonfinite(self.nonfinite, device) == "raise":
            chosen, _ = select_backend(matrix, self.precision, self.backend)
            bad = chosen.count_nonfinite_rows(matrix)  # checked whole first: nothing is added when any is bad
            if bad:
                raise NonFiniteRowsError(bad, matrix.rows)
        for index, (piece, fingerprint) in pieces.items():
            state = self._parts[index] or GramState.zeros(matrix.cols, centered=self.centered,
                                                          precision=self.precision, device=device)  # fmt: skip
            mean = state.mean if state.mean is not None else state.gram.new_empty(0)
            chosen, not_chosen = update_state(state.gram, state.count, state.nonfinite, mean, piece, self.centered,
                                              self.precision, self.backend, self.nonfinite)  # fmt: skip
            self._parts[index] = state
            self._fingerprints[index] = _fingerprint(self._fingerprints[index], fingerprint)
        self._dim, self._device, self._merged = matrix.cols, device, None
        if block is None and groups is None:
            self._next_block = (self._next_block + 1) % self.blocks
        self.last_backend, self.last_kernel, self.not_chosen = chosen.name, chosen.kernel_in_use(), not_chosen
        return self

    def merge(self, other: GramAccumulator) -> GramAccumulator:
        """Fold another accumulator's state into this one, block by block (sum, or Chan merge
        when centred)."""
        if not isinstance(other, GramAccumulator):
            raise TypeError(f"can only merge a GramAccumulator, got {type(other).__name__}")
        if other.centered != self.centered or other.precision != self.precision or other.blocks != self.blocks:
            raise ValueError(
                f"cannot merge centered={other.centered}, precision={other.precision!r}, blocks={other.blocks} into "
                f"centered={self.centered}, precision={self.precision!r}, blocks={self.blocks}"
            )
        if self._dim is not None and other._dim is not None and other._dim != self._dim:
            raise ValueError(f"cannot merge dim={other._dim} into dim={self._dim}")
        if other.count == 0 and other.nonfinite_rows == 0:
            return self
        device = self._device if self._device is not None else next(p for p in other._parts if p).gram.device
        for index, part in enumerate(other._parts):
            if part is None:
                continue
            if self._parts[index] is None:
                self._parts[index] = GramState.zeros(part.dim, centered=self.centered, precision=self.precision,
                                                     device=device)  # fmt: skip
            merge(self._parts[index], part)
            self._fingerprints[index] = _fingerprint(self._fingerprints[index], other._fingerprints[index])
        self._dim, self._device, self._merged = other._dim or self._dim, device, None
        return self

    def all_reduce(self, group: Any = None) -> GramAccumulator:
        """Combine this state with the same accumulator on every rank of a torch.distributed
        `group` (a collective: every rank calls it). Afterwards every rank holds the state of
        all rows seen on all ranks, block by block: Grams summed with one all_reduce each
        (never gathered), centred states merged by the Chan formula. A rank that saw no rows
        takes part with zeros. On disagreement (D, centring, precision) every rank raises
        ValueError, state unchanged."""
        reduced = [all_reduce_state(part, centered=self.centered, precision=self.precision, device=self._device,
                                    group=group) for part in self._parts]  # fmt: skip
        for index, part in enumerate(reduced):
            if part is not None:
                self._parts[index], self._dim, self._device = part, part.dim, part.gram.device
        self._merged = None
        return self

    def uncentered(self) -> GramAccumulator:
        """A new, uncentred accumulator holding ZᵀZ of the same rows (and blocks), made from
        this centred state as scatter + n·μμᵀ: one pass over the data gives both spectra. Both
        terms are positive semi-definite, so the result carries a few float64 roundings of
        ‖ZᵀZ‖, the size of the eigensolver's own error (an accumulated ZᵀZ carries up to one per
        row)."""
        if not self.centered:
            raise ValueError("uncentered() needs a centred accumulator; this one already holds ZᵀZ")
        raw = GramAccumulator(self._dim, precision=self.precision, backend=self.backend, device=self._device,
                              nonfinite=self.nonfinite, blocks=self.blocks)  # fmt: skip
        for index, part in enumerate(self._parts):
            if part is not None:
                assert part.mean is not None
                gram = part.gram + torch.outer(part.mean, part.mean).mul_(part.count)
                raw._parts[index] = GramState(gram, None, part.count.clone(), part.nonfinite.clone(), False,
                                              self.precision)  # fmt: skip
        raw._fingerprints, raw._device = list(self._fingerprints), self._device
        return raw

    def reset(self) -> None:
        """Forget everything accumulated; keeps dim, device, blocks and options."""
        for part in self._parts:
            if part is not None:
                for tensor in (part.gram, part.mean, part.count, part.nonfinite):
                    if tensor is not None:
                        tensor.zero_()
        self._fingerprints, self._next_block, self._merged = [""] * self.blocks, 0, None

    def spectrum(self) -> Spectrum:
        """Eigenvalues of the state in float64, top min(count, dim) of them, descending."""
        self._check_computable()
        assert self._state is not None and self._dim is not None
        return spectrum_of_gram(self._state.gram, count=self.count, dim=self._dim, centered=self.centered)

    def rankme(self, eps: float = 1e-7, *, method: str = "auto", ci: float | None = None) -> float | Estimate:
        """RankMe of the state: "exact" (float64 eigensolve), "slq" (the estimate of
        `estimate_rankme`), or "auto": exact below D = SLQ_THRESHOLD, the estimate above. With
        `ci` (a level such as 0.95; needs blocks) an Estimate with its jackknife interval."""
        if method not in _RANKME_METHODS:
            raise ValueError(f"method must be one of {_RANKME_METHODS}, got {method!r}")
        if ci is not None:
            return self.estimate("rankme", ci=ci, eps=eps)
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

    def estimate(self, metric: str = "rankme", *, ci: float = 0.95, eps: float = 1e-7) -> Estimate:
        """A metric of the family (Spectrum.metric names) with its delete-one-block jackknife
        standard error, bias-corrected value and `ci` interval (rankme_fast.uncertainty)."""
        return self.block_spectra().estimate(metric, ci=ci, eps=eps)

    def block_spectra(self) -> BlockSpectra:
        """The spectrum of all rows and, in the same batched eigensolve, the spectra that each
        leave one block out (blocks holding no rows aside)."""
        self._check_computable()
        return block_spectra_of(self._parts, self._fingerprints)

    def growth(self, metric: str = "rankme", *, ci: float = 0.95, eps: float = 1e-7) -> Growth:
        """The metric at N/K, 2N/K, …, N rows (the blocks merged one by one), a fitted plateau
        with its jackknife interval, and whether the value is still rising (Growth). Costs
        about K² eigensolves, batched K at a time."""
        rising = self.estimate(metric, ci=ci, eps=eps).still_rising  # checks there are blocks to use
        held = [k for k, part in enumerate(self._parts) if part is not None and int(part.count) > 0]

        def curve(order: list[int]) -> tuple[list[int], list[float]]:
            totals = [merged([self._parts[order[0]]])]
            for index in order[1:]:
                totals.append(merged([totals[-1], self._parts[index]]))
            spectra = spectra_of_states(totals)
            return [s.count for s in spectra], [s.metric(metric, eps) for s in spectra]

        return growth(curve, held, metric=metric, level=ci, still_rising=rising)

    # -- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: CPU float64 tensors and plain Python values (the block
        states too, when there are several)."""
        saved = to_state_dict(self._state, centered=self.centered, precision=self.precision)
        saved["dim"] = self._dim if self._state is None else saved["dim"]
        if self.blocks > 1:
            saved["blocks"] = [to_state_dict(part, centered=self.centered, precision=self.precision)
                               for part in self._parts]  # fmt: skip
            saved["block_fingerprints"], saved["next_block"] = list(self._fingerprints), self._next_block
        return saved

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
        saved_blocks = state.get("blocks") or [state]
        parts = [from_state_dict(part, target)[0] for part in saved_blocks]
        dim = state.get("dim") if loaded is None else loaded.dim
        acc = cls(dim, centered=centered, precision=precision, backend=backend, device=device,
                  blocks=len(saved_blocks))  # fmt: skip
        if any(part is not None and (part.dim != dim or part.centered != centered) for part in parts):
            raise ValueError("state blocks do not match the state they make up (D or centring differ)")
        if len(saved_blocks) > 1:
            if sum(0 if p is None else int(p.count) for p in parts) != (0 if loaded is None else int(loaded.count)):
                raise ValueError("state blocks do not add up to the state's count")
            acc._fingerprints = [str(f) for f in state.get("block_fingerprints", acc._fingerprints)]
            acc._next_block = int(state.get("next_block", 0)) % len(saved_blocks)
        acc._parts = parts
        if loaded is not None:
            acc._device = target
        return acc

    # -- internals ----------------------------------------------------------------------------

    @property
    def _state(self) -> GramState | None:
        """The state of all rows: the one block, or the merge of the blocks (kept until the
        next change)."""
        if self.blocks == 1:
            return self._parts[0]
        if self._merged is None:
            held = [part for part in self._parts if part is not None]
            self._merged = merged(held) if held else None
        return self._merged

    def _assign(self, matrix: KernelInput, groups: Any, block: int | None) -> dict[int, tuple[KernelInput, str]]:
        """Block index -> (the batch's rows for it, what to record of them for pairing: where
        the batch starts in the stream and its size, or the group keys it holds)."""
        if groups is not None and block is not None:
            raise ValueError("pass groups or block, not both")
        where = f"rows {matrix.rows} at {self.count + self.nonfinite_rows}"
        if block is not None:
            if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not 0 <= block < self.blocks:
                raise ValueError(f"block must be an integer in [0, {self.blocks}), got {block!r}")
            return {int(block): (matrix, where)}
        if groups is None:
            return {self._next_block: (matrix, where)}
        if self.blocks < 2:
            raise ValueError("groups assign rows to blocks: make the accumulator with blocks=K, K >= 2")
        keys = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups)
        if keys.ndim != 1 or keys.size != matrix.rows:
            raise ValueError(f"groups has shape {keys.shape} but the batch has {matrix.rows} rows: one key per row")
        assigned = blocks_of(keys, self.blocks)
        pieces = {}
        for index in np.unique(assigned):
            rows = np.flatnonzero(assigned == index)
            piece = matrix if rows.size == matrix.rows else matrix.select_rows(torch.from_numpy(rows))
            held = np.unique(keys[rows])
            named = held.astype(np.int64).tobytes().hex() if held.dtype.kind in "iub" else "\n".join(map(str, held))
            pieces[int(index)] = (piece, "groups " + named)
        return pieces

    def _check_computable(self) -> None:
        if self.count == 0:
            raise ValueError("nothing has been accumulated yet")
        skipped = self.nonfinite_rows
        if skipped and resolve_nonfinite(self.nonfinite, self._device or torch.device("cpu")) == "defer":
            raise NonFiniteRowsError.deferred(skipped, self.count + skipped)



def _fingerprint(before: str, added: str) -> str:
    return hashlib.blake2b(f"{before}|{added}".encode(), digest_size=8).hexdigest()
