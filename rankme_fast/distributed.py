"""Summing Gram states across torch.distributed ranks with all_reduce.

Every rank ends with the state of all rows on all ranks. The D x D state is reduced with one
all_reduce, never gathered: each rank sends and receives O(D²) however many ranks there
are (torchmetrics' default sync all-gathers W states, W·D² per rank). Centred states
merge by the Chan formula: the pooled mean comes from a small all_reduce of nᵢ·μᵢ, then
each rank adds nᵢ(μᵢ-μ)(μᵢ-μ)ᵀ to its scatter before the big all_reduce. No rank ever forms
the raw ZᵀZ, so the result stays exact when |mean| >> std.

A rank that saw no rows (no state, unknown D) takes part with zeros.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from rankme_fast.backends.base import PRECISIONS
from rankme_fast.state import GramState


def initialized() -> bool:
    """True when torch.distributed is usable and a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def world(group: object | None = None) -> tuple[int, int]:
    """(rank, world size) in `group`, or (0, 1) outside torch.distributed."""
    if not initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def all_reduce_state(state: GramState, *, device: torch.device | None, group: object | None = None) -> GramState:
    """The state of all rows on all ranks of `group`, on every rank (collective: every rank
    must call it). `device` is where the result lives when this rank had no state.

    Raises ValueError on every rank alike when the ranks disagree on D, centring or
    precision; nothing is modified (the result is a new state)."""
    if not initialized():
        raise RuntimeError("all_reduce needs torch.distributed: call torch.distributed.init_process_group first")
    wire = _wire_device(group)
    dim, counts = _agree(state, wire, group)
    if dim == 0:
        return state
    total = sum(counts)
    home = state.gram.device if state.gram is not None else (device or wire)
    gram = _local(state.gram, (dim, dim), wire)
    if state.centered:
        rank_mean = _local(state.mean, (dim,), wire)
        pooled = rank_mean * state.count
        dist.all_reduce(pooled, group=group)
        pooled /= total
        delta = rank_mean - pooled
        if state.count:
            gram.addr_(delta, delta, alpha=float(state.count))
        dist.all_reduce(gram, group=group)
        return GramState(gram.to(home), pooled.to(home), total, dim, True, state.precision)
    dist.all_reduce(gram, group=group)
    return GramState(gram.to(home), None, total, dim, False, state.precision)


def _wire_device(group: object | None) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo and MPI take host tensors."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _agree(state: GramState, wire: torch.device, group: object | None) -> tuple[int, list[int]]:
    """Exchange (D, count, centred, precision) of every rank; check they agree."""
    mine = torch.tensor(
        [state.dim or 0, state.count, int(state.centered), PRECISIONS.index(state.precision)],
        dtype=torch.int64,
        device=wire,
    )
    rows = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(rows, mine, group=group)
    table = [[int(v) for v in row.tolist()] for row in rows]
    dims = {rank: row[0] for rank, row in enumerate(table) if row[0]}
    if len(set(dims.values())) > 1:
        listed = ", ".join(f"rank {rank}: D={d}" for rank, d in dims.items())
        raise ValueError(f"cannot all_reduce Gram states of different dimensions ({listed})")
    for column, what in ((2, "centered"), (3, "precision")):
        values = {row[column] for row in table}
        if len(values) > 1:
            shown = [bool(row[2]) if column == 2 else PRECISIONS[row[3]] for row in table]
            raise ValueError(f"ranks disagree on {what}: {shown} (rank by rank)")
    return (next(iter(dims.values())) if dims else 0), [row[1] for row in table]


def _local(tensor: torch.Tensor | None, shape: tuple[int, ...], wire: torch.device) -> torch.Tensor:
    """A float64 copy of this rank's tensor on the wire device (zeros when it has none)."""
    if tensor is None:
        return torch.zeros(shape, dtype=torch.float64, device=wire)
    return tensor.to(device=wire, dtype=torch.float64, copy=True)
