"""RankMe of a module's outputs in a plain PyTorch loop: a forward hook that streams what the
module returns into a float64 GramAccumulator. No embedding is kept."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import torch
from torch import nn

from rankme_fast.accumulate import GramAccumulator
from rankme_fast.distributed import initialized
from rankme_fast.sample_limit import check_max_samples, room_left

Select = Callable[[Any], torch.Tensor]


def first_tensor(output: Any) -> torch.Tensor:
    """The embedding in what a module returned: the tensor itself, or the first tensor of a
    tuple/list (as nn.LSTM and many encoders return). Anything else needs `select=`."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    kind = "a mapping" if isinstance(output, Mapping) else type(output).__name__
    raise TypeError(f"the module returned {kind}; pass select=lambda out: <the embedding tensor>")


class ForwardCapture:
    """A forward hook on `module` that hands `select(output).detach()` to `sink` while active."""

    def __init__(self, module: nn.Module, sink: Callable[[torch.Tensor], None], select: Select | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module to hook, got {type(module).__name__}")
        self.module, self.sink, self.select = module, sink, select or first_tensor
        self.active = True
        self._handle: Any = None

    def attach(self) -> None:
        if self._handle is None:
            self._handle = self.module.register_forward_hook(self._on_forward)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.active:
            self.sink(self.select(output).detach())


class RankMeRecorder:
    """RankMe of everything `module` outputs while recording (outputs of shape (..., D);
    leading dimensions are flattened, so frame-level embeddings count frame by frame).

        with RankMeRecorder(model.encoder, max_samples=25_600) as recorder:
            for x in loader:
                model(x)
        print(recorder.rankme())

    `max_samples` keeps the first rows seen, counted over all processes when torch.distributed
    is initialized (rankme_fast.sample_limit). Under torch.distributed, `rankme()`
    combines every rank's state (a collective: call it on every rank) without changing the
    local one. Options as for GramAccumulator; `select` picks the embedding from the output.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        max_samples: int | None = None,
        centered: bool = False,
        precision: str = "exact",
        backend: str = "auto",
        select: Select | None = None,
    ) -> None:
        check_max_samples(max_samples)
        self.accumulator = GramAccumulator(centered=centered, precision=precision, backend=backend)
        self.max_samples = max_samples
        self._capture = ForwardCapture(module, self._add, select)

    def __enter__(self) -> RankMeRecorder:
        self.attach()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.detach()

    def attach(self) -> None:
        """Start recording (the hook stays until `detach`)."""
        self._capture.attach()

    def detach(self) -> None:
        self._capture.detach()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Forward passes inside this block are not recorded."""
        before, self._capture.active = self._capture.active, False
        try:
            yield
        finally:
            self._capture.active = before

    @property
    def count(self) -> int:
        """Rows recorded on this process."""
        return self.accumulator.count

    def reset(self) -> None:
        self.accumulator.reset()

    def rankme(self, eps: float = 1e-7, *, sync: bool | None = None) -> float:
        """RankMe of the recorded rows; `sync` (default: when torch.distributed is initialized)
        combines all ranks' states first."""
        sync = initialized() if sync is None else sync
        if not sync:
            return self.accumulator.rankme(eps)
        combined = GramAccumulator.from_state_dict(self.accumulator.state_dict())
        return combined.all_reduce().rankme(eps)

    def _add(self, embeddings: torch.Tensor) -> None:
        if embeddings.numel() == 0:
            return
        room = room_left(self.max_samples, self.accumulator.count)
        if room == 0:
            return
        rows = embeddings.flatten(0, -2) if embeddings.ndim > 2 else embeddings
        self.accumulator.update(rows if room is None else rows[:room])
