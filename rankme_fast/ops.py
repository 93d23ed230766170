"""The Gram update as a torch custom op, `torch.ops.rankme_fast.fold_`, for compiled training
steps: torch.compile (and CUDA graphs) see one opaque node that mutates the state tensors in
place, traced through its fake implementation, so a step that updates a RankMe state compiles
as one graph.

The state is four tensors on one device: the float64 Gram (D, D, lower triangle
authoritative), the int64 row count and count of rows skipped for NaN/Inf (0-d each), and, for
centred states, the float64 column mean (D,); uncentred states pass an empty mean. Under the
"drop" and "defer" policies an update reads nothing back to the host: rows come from shapes,
and rows holding NaN or Inf are excluded and counted on the device (a bad row is replaced by a
value that adds exactly nothing to the Gram). Under "raise" the rows are checked first, which
reads one number back (a device synchronisation on a GPU), and nothing is changed when any is
bad: the GramAccumulator contract.
"""

from __future__ import annotations

import torch

from rankme_fast._inputs import as_matrix
from rankme_fast.backends import select_backend
from rankme_fast.state import NonFiniteRowsError, chan_merge

POLICIES = ("raise", "drop", "defer")


def fold(
    gram: torch.Tensor,
    count: torch.Tensor,
    nonfinite: torch.Tensor,
    mean: torch.Tensor,
    z: torch.Tensor,
    centered: bool,
    precision: str,
    backend: str,
    policy: str,
) -> None:
    """Add the rows of z (N, D) into the state in place (see the module docstring)."""
    matrix = as_matrix(z, name="embeddings")  # real tensors here: the layout checks can read addresses
    chosen, _ = select_backend(matrix, precision, backend)
    if policy == "raise":
        bad = chosen.count_nonfinite_rows(matrix)
        if bad:
            raise NonFiniteRowsError(bad, matrix.rows)
        good_rows: int | torch.Tensor = matrix.rows
        if centered:
            batch_mean = chosen.column_mean(matrix).to(gram.device)
            chosen.add_gram(matrix, gram, batch_mean, precision)
            chan_merge(gram, mean, count, good_rows, batch_mean)
        else:
            chosen.add_gram(matrix, gram, None, precision)
    else:
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
            chosen.add_gram(as_matrix(torch.where(good[:, None], z, pilot)), gram, shift, precision)
            offset = batch_mean - shift
            gram.sub_(torch.outer(offset, offset).mul_(good_rows))
            chan_merge(gram, mean, count, good_rows, batch_mean)
        else:
            chosen.add_gram(as_matrix(torch.where(good[:, None], z, 0)), gram, None, precision)
        nonfinite.add_(matrix.rows - good_rows)
    count.add_(good_rows)


# Registered with torch.library's low-level API: a Python kernel per device key costs about
# nothing over a direct call, where torch.library.custom_op's wrapper measured ~40 µs a call.
_LIBRARY = torch.library.Library("rankme_fast", "DEF")
_LIBRARY.define(
    "fold_(Tensor(a!) gram, Tensor(b!) count, Tensor(c!) nonfinite, Tensor(d!) mean, Tensor z, bool centered, "
    "str precision, str backend, str policy) -> ()"
)
for _device in ("CPU", "CUDA"):
    _LIBRARY.impl("fold_", fold, _device)


@torch.library.register_fake("rankme_fast::fold_")
def _(gram, count, nonfinite, mean, z, centered, precision, backend, policy) -> None:
    return None  # only the state tensors change, in place: nothing new to describe
