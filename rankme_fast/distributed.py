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

import os

import torch
import torch.distributed as dist

from rankme_fast.backends.contract import PRECISIONS
from rankme_fast.state import GramState


def join_from_environment() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True when this call did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or initialized():
        return False
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def initialized() -> bool:
    """True when torch.distributed is usable and a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def world(group: object | None = None) -> tuple[int, int]:
    """(rank, world size) in `group`, or (0, 1) outside torch.distributed."""
    if not initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def all_reduce_state(
    state: GramState | None, *, centered: bool, precision: str, device: torch.device | None, group: object | None = None
) -> GramState | None:
    """The state of all rows on all ranks of `group`, on every rank (collective: every rank
    must call it); None when no rank had any. A rank that saw no rows passes None; `device` is
    where the result lives on such a rank. Counts of rows left out for NaN/Inf are summed too.

    Raises ValueError on every rank alike when the ranks disagree on D, centring or
    precision; nothing is modified (the result is a new state)."""
    if not initialized():
        raise RuntimeError("all_reduce needs torch.distributed: call torch.distributed.init_process_group first")
    wire = _wire_device(group)
    dim, counts, skipped = _agree(state, centered, precision, wire, group)
    if dim == 0:
        return state
    total = sum(counts)
    home = state.gram.device if state is not None else (device or wire)
    count = 0 if state is None else int(state.count)
    gram = _local(None if state is None else state.gram, (dim, dim), wire)
    mean = None
    if centered:
        rank_mean = _local(None if state is None else state.mean, (dim,), wire)
        mean = rank_mean * count
        dist.all_reduce(mean, group=group)
        mean /= total
        delta = rank_mean - mean
        if count:
            gram.addr_(delta, delta, alpha=float(count))
        mean = mean.to(home)
    dist.all_reduce(gram, group=group)
    total_rows, left_out = (torch.tensor(n, dtype=torch.int64, device=home) for n in (total, skipped))
    return GramState(gram.to(home), mean, total_rows, left_out, centered, precision)


def _wire_device(group: object | None) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo and MPI take host tensors."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _agree(
    state: GramState | None, centered: bool, precision: str, wire: torch.device, group: object | None
) -> tuple[int, list[int], int]:
    """Exchange (D, count, rows left out, centred, precision) of every rank; check they agree.
    Returns D (0: no rank has a state), the counts rank by rank, and the rows left out in all."""
    mine = torch.tensor(
        [0 if state is None else state.dim, 0 if state is None else int(state.count),
         0 if state is None else int(state.nonfinite), int(centered), PRECISIONS.index(precision)],
        dtype=torch.int64,
        device=wire,
    )  # fmt: skip
    rows = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(rows, mine, group=group)
    table = [[int(v) for v in row.tolist()] for row in rows]
    dims = {rank: row[0] for rank, row in enumerate(table) if row[0]}
    if len(set(dims.values())) > 1:
        listed = ", ".join(f"rank {rank}: D={d}" for rank, d in dims.items())
        raise ValueError(f"cannot all_reduce Gram states of different dimensions ({listed})")
    for column, what in ((3, "centered"), (4, "precision")):
        values = {row[column] for row in table}
        if len(values) > 1:
            shown = [bool(row[3]) if column == 3 else PRECISIONS[row[4]] for row in table]
            raise ValueError(f"ranks disagree on {what}: {shown} (rank by rank)")
    return (next(iter(dims.values())) if dims else 0), [row[1] for row in table], sum(row[2] for row in table)


def _local(tensor: torch.Tensor | None, shape: tuple[int, ...], wire: torch.device) -> torch.Tensor:
    """A float64 copy of this rank's tensor on the wire device (zeros when it has none)."""
    if tensor is None:
        return torch.zeros(shape, dtype=torch.float64, device=wire)
    return tensor.to(device=wire, dtype=torch.float64, copy=True)
