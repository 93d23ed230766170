"""The CUDA backend: the exact one-triangle SYRK of rankme_fast._C (csrc/cuda) for torch
tensors on a GPU, with float64 products on FP64 tensor cores and every float dtype read in
place. It meets the "fast" contract too (more precisely than asked), so it also serves fast
mode when Triton is unavailable.

`syrk_update` adds (Z - shift)ᵀ (Z - shift) of one batch into the lower triangle of a float64
state, queued on the current torch stream of Z's device, like any torch op.
"""

from __future__ import annotations

import functools

import torch

from rankme_fast._inputs import SUPPORTED_DTYPES, KernelInput, dtype_name, torch_dtype
from rankme_fast._native import native, native_error
from rankme_fast.backends.syrk_arguments import check_syrk_arguments
from rankme_fast.backends.torch_backend import TorchBackend

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


class CudaBackend:
    name = "cuda"
    verify_on_first_use = True

    def __init__(self) -> None:
        self._reductions = TorchBackend()

    def unavailable_reason(self, matrix: KernelInput | None, precision: str) -> str | None:
        return unavailable_reason(None if matrix is None else matrix.device)

    def kernel_in_use(self) -> str:
        return "cuda"

    def add_gram(self, matrix: KernelInput, gram: torch.Tensor, shift: torch.Tensor | None, precision: str) -> None:
        shift = None if shift is None else shift.to(gram.device, torch.float64).contiguous()
        syrk_update(matrix.torch(), gram, shift=shift)

    def column_mean(self, matrix: KernelInput) -> torch.Tensor:
        return self._reductions.column_mean(matrix)

    def count_nonfinite_rows(self, matrix: KernelInput) -> int:
        return self._reductions.count_nonfinite_rows(matrix)
