"""Argument checks shared by the GPU SYRK entry points (the cuda and triton backends):
the same tensors, shapes and split count, with errors that name the problem."""

from __future__ import annotations

import torch

from rankme_fast._checks import check_positive_int


def check_syrk_arguments(
    kernel: str,
    input_dtypes: tuple[torch.dtype, ...],
    z: torch.Tensor,
    gram: torch.Tensor,
    shift: torch.Tensor | None,
    column_sums: torch.Tensor | None,
    splits: int | None,
) -> None:
    """Raise ValueError/TypeError unless z is (N, D) of an accepted dtype, gram a contiguous
    (D, D) float64 tensor, shift/column_sums contiguous (D,) float64, all on one device, and
    splits None or a positive integer."""
    if not isinstance(z, torch.Tensor) or z.ndim != 2:
        raise ValueError(f"z must be a 2-D torch.Tensor, got {getattr(z, 'shape', type(z).__name__)}")
    if z.dtype not in input_dtypes:
        names = [str(d).removeprefix("torch.") for d in input_dtypes]
        raise TypeError(f"z has dtype {z.dtype}; the {kernel} takes {', '.join(names[:-1])} or {names[-1]}")
    dim = z.shape[1]
    if not isinstance(gram, torch.Tensor) or gram.dtype != torch.float64 or gram.shape != (dim, dim):
        raise ValueError(f"gram must be a contiguous ({dim}, {dim}) float64 tensor")
    if not gram.is_contiguous():
        raise ValueError(f"gram must be a contiguous ({dim}, {dim}) float64 tensor (it has strides {gram.stride()})")
    for name, vector in (("shift", shift), ("column_sums", column_sums)):
        if vector is None:
            continue
        if vector.dtype != torch.float64 or vector.shape != (dim,) or not vector.is_contiguous():
            raise ValueError(f"{name} must be a contiguous ({dim},) float64 tensor")
    devices = {t.device for t in (z, gram, shift, column_sums) if t is not None}
    if len(devices) != 1:
        raise ValueError(f"z, gram, shift and column_sums must share one device, got {sorted(map(str, devices))}")
    check_positive_int(splits, "splits", optional=True)
