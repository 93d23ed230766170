"""The exact CUDA SYRK of rankme_fast._C (csrc/cuda) for torch tensors on a GPU.

`syrk_update` adds (Z - shift)ᵀ (Z - shift) of one batch into the lower triangle of a float64
state with float64 products on FP64 tensor cores, reading Z in its own dtype. It is queued on
the current torch stream of Z's device, like any torch op.
"""

from __future__ import annotations

import functools

import torch

from rankme_fast._inputs import SUPPORTED_DTYPES, dtype_name, torch_dtype
from rankme_fast._native import native, native_error
from rankme_fast._syrk_arguments import check_syrk_arguments

INPUT_DTYPES = tuple(torch_dtype(name) for name in SUPPORTED_DTYPES)
VARIANTS = ("auto", "dmma-16x8x8", "dmma-8x8x4", "simt")


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the CUDA kernel can run on `device` (any CUDA device when None), else why not."""
    if native is None:
        return f"rankme_fast._C is not available ({native_error})"
    if not native.cuda_compiled:
        return "rankme_fast._C was built without CUDA (nvcc was not found or RANKME_FAST_CUDA=OFF)"
    if device is not None and device.type != "cuda":
        return f"input is on {device}; the cuda backend reads GPU memory"
    return _runtime_reason()


@functools.cache
def _runtime_reason() -> str | None:
    """Why the CUDA runtime offers no device, asked once: the devices a process sees are fixed
    when it first initialises CUDA."""
    try:
        count = native.cuda_device_count()
    except RuntimeError as error:
        return str(error)
    return "no CUDA device is visible" if count == 0 else None


def syrk_update(
    z: torch.Tensor,
    gram: torch.Tensor,
    *,
    shift: torch.Tensor | None = None,
    column_sums: torch.Tensor | None = None,
    variant: str = "auto",
    splits: int | None = None,
) -> tuple[str, int]:
    """gram[lower] += (z - shift)ᵀ (z - shift) in float64; column_sums += Σ_rows z when given.

    z: (N, D) float64/float32/float16/bfloat16 on a CUDA device, any strides; gram: (D, D)
    contiguous float64; shift and column_sums: (D,) contiguous float64; all on z's device.
    `variant` picks the inner product ("auto": the best the GPU has), `splits` overrides the
    split-N heuristic. Returns the (variant, splits) that ran. The upper triangle is never written.
    """
    _check(z, gram, shift, column_sums, variant, splits)
    if z.shape[0] == 0:
        return variant, 0
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    device = z.device.index if z.device.index is not None else torch.cuda.current_device()
    used, n_splits = native.cuda_syrk_update(
        z.data_ptr(), getattr(native, f"DTYPE_{dtype_name(z.dtype).upper()}"), z.shape[0], z.shape[1], z.stride(0),
        z.stride(1), gram.data_ptr(),
        shift=0 if shift is None else shift.data_ptr(),
        column_sums=0 if column_sums is None else column_sums.data_ptr(),
        device=device,
        stream=torch.cuda.current_stream(device).cuda_stream,
        variant=native.CUDA_VARIANTS[variant],
        splits=splits or 0,
        check_pointers=False,  # _check: every tensor is on z's device
    )  # fmt: skip
    return VARIANTS[used], n_splits


def _check(
    z: torch.Tensor,
    gram: torch.Tensor,
    shift: torch.Tensor | None,
    column_sums: torch.Tensor | None,
    variant: str,
    splits: int | None,
) -> None:
    check_syrk_arguments("CUDA SYRK", INPUT_DTYPES, z, gram, shift, column_sums, splits)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if z.device.type != "cuda":
        raise ValueError(f"z is on {z.device}; the CUDA SYRK takes tensors on a CUDA device")
