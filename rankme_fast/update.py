"""The one way a batch of embeddings enters a float64 state, whatever the entry point
(GramAccumulator, RankMeMetric, the forward-hook recorder, `rankme-fast score` and `audio`), and
the torch op `torch.ops.rankme_fast.update_state_` through which a compiled step calls it:
torch.compile (and CUDA graphs) see one opaque node that changes the state tensors in place,
traced through its fake implementation.

The state is four tensors on one device: the float64 Gram (D, D, lower triangle
authoritative), the int64 row count and count of rows left out for NaN/Inf (0-d each), and, for
centred states, the float64 column mean (D,); uncentred states pass an empty mean.

Rows holding NaN or Inf, by `nonfinite` policy (NONFINITE_POLICIES):
* "raise": nothing is added and NonFiniteRowsError names the count (on a GPU, checking reads
  one number back: a device synchronisation);
* "drop": they are left out and counted;
* "defer": the same, and whoever computes from the state raises, naming the count;
* "auto": "defer" for a state on a GPU (an update then never waits for the device), "raise"
  elsewhere.
Under "drop" and "defer" on a GPU nothing is read back: rows come from shapes, and a bad row
is replaced by a value that adds exactly nothing to the Gram.
"""

from __future__ import annotations

import torch

from rankme_fast._inputs import KernelInput, kernel_input
from rankme_fast.backends import select_backend
from rankme_fast.backends.contract import Backend
from rankme_fast.state import NonFiniteRowsError, chan_merge

NONFINITE_POLICIES = ("auto", "raise", "drop", "defer")


def check_nonfinite(policy: str) -> None:
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")


def resolve_nonfinite(policy: str, device: torch.device) -> str:
    """The policy in force for a state on `device`: "auto" is "defer" on a GPU, else "raise"."""
    if policy != "auto":
        return policy
    return "defer" if device.type == "cuda" else "raise"


def update_state(
    gram: torch.Tensor,
    count: torch.Tensor,
    nonfinite: torch.Tensor,
    mean: torch.Tensor,
    batch: torch.Tensor | KernelInput,
    centered: bool,
    precision: str,
    backend: str,
    policy: str,
) -> tuple[Backend, dict[str, str]]:
    """Add the rows of `batch` (N, D) into the state in place (see the module docstring).
    Returns the backend that ran and, for backend="auto", why each preferred one was not
    chosen."""
    matrix = batch if isinstance(batch, KernelInput) else kernel_input(batch, name="embeddings")
    chosen, not_chosen = select_backend(matrix, precision, backend)
    policy = resolve_nonfinite(policy, gram.device)
    if policy == "raise" or matrix.device.type == "cpu":  # counting costs no device synchronisation here
        bad = chosen.count_nonfinite_rows(matrix)
        if bad and policy == "raise":
            raise NonFiniteRowsError(bad, matrix.rows)
        if not bad:
            _add_rows(chosen, matrix, gram, count, mean, centered, precision)
            return chosen, not_chosen
    _add_finite_rows(chosen, matrix, gram, count, nonfinite, mean, centered, precision)
    return chosen, not_chosen


def _add_rows(
    chosen: Backend, matrix: KernelInput, gram: torch.Tensor, count: torch.Tensor, mean: torch.Tensor, centered: bool,
    precision: str,
) -> None:  # fmt: skip
    """Every row is finite: each batch is centred on its own float64 mean inside the kernel,
    then merged by the Chan/Pébay formula."""
    if centered:
        batch_mean = chosen.column_mean(matrix).to(gram.device)
        chosen.add_gram(matrix, gram, batch_mean, precision)
        rows_before = int(count) if count.device.type == "cpu" else count  # host arithmetic where reading is free
        chan_merge(gram, mean, rows_before, matrix.rows, batch_mean)
    else:
        chosen.add_gram(matrix, gram, None, precision)
    count.add_(matrix.rows)


def _add_finite_rows(
    chosen: Backend, matrix: KernelInput, gram: torch.Tensor, count: torch.Tensor, nonfinite: torch.Tensor,
    mean: torch.Tensor, centered: bool, precision: str,
) -> None:  # fmt: skip
    """Leave out and count the rows holding NaN or Inf, reading nothing back from the device."""
    z = matrix.torch()
    good = torch.isfinite(z).all(dim=1)
    good_rows = good.sum()
    if centered:
        # Bad rows become the batch mean rounded to z's dtype (a value z can hold), which is
        # also the shift: they add exactly 0. The scatter about the rounded mean is then
        # corrected to the scatter about the true one: Σ(z-c)(z-c)ᵀ = M2 + n(μ-c)(μ-c)ᵀ.
        sums = torch.where(good[:, None], z, 0).sum(dim=0, dtype=torch.float64)
        batch_mean = sums / good_rows.clamp(min=1)
        pilot = batch_mean.to(z.dtype)
        shift = pilot.to(torch.float64)
        chosen.add_gram(kernel_input(torch.where(good[:, None], z, pilot)), gram, shift, precision)
        offset = batch_mean - shift
        gram.sub_(torch.outer(offset, offset).mul_(good_rows))
        chan_merge(gram, mean, count, good_rows, batch_mean)
    else:
        chosen.add_gram(kernel_input(torch.where(good[:, None], z, 0)), gram, None, precision)
    nonfinite.add_(matrix.rows - good_rows)
    count.add_(good_rows)


def _update_state_op(gram, count, nonfinite, mean, z, centered, precision, backend, policy) -> None:
    update_state(gram, count, nonfinite, mean, z, centered, precision, backend, policy)


# Registered with torch.library's low-level API: a Python kernel per device key costs about
# nothing over a direct call, where torch.library.custom_op's wrapper measured ~40 µs a call.
# "fold_" is this op's earlier name, kept so that code calling it goes on working.
_SCHEMA = ("(Tensor(a!) gram, Tensor(b!) count, Tensor(c!) nonfinite, Tensor(d!) mean, Tensor z, bool centered, "
           "str precision, str backend, str policy) -> ()")  # fmt: skip
_LIBRARY = torch.library.Library("rankme_fast", "DEF")
for _name in ("update_state_", "fold_"):
    _LIBRARY.define(_name + _SCHEMA)
    for _device in ("CPU", "CUDA"):
        _LIBRARY.impl(_name, _update_state_op, _device)

    @torch.library.register_fake(f"rankme_fast::{_name}")
    def _(gram, count, nonfinite, mean, z, centered, precision, backend, policy) -> None:
        return None  # only the state tensors change, in place: nothing new to describe
