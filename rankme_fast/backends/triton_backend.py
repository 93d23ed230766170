"""The Triton backend: one-triangle SYRK on tensor cores for CUDA tensors (the kernels are in
rankme_fast.backends.triton_kernels, imported on first use, since Triton is optional),
precision="fast" only: float32 sums within a batch, float64 across batches. Under
TRITON_INTERPRET=1 (set before Triton is first imported) it also takes CPU tensors, so it can
be tested anywhere, slowly, on tiny shapes.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from rankme_fast._inputs import KernelInput
from rankme_fast.backends.torch_backend import TorchBackend

_INPUT_DTYPES = ("float32", "float16", "bfloat16")


def interpreter_enabled() -> bool:
    """True when Triton runs kernels in its Python interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the Triton kernels can run on `device` (any device when None), else why not."""
    if not triton_installed():
        return "Triton is not installed (pip install triton)"
    if interpreter_enabled():
        return None
    if device is not None and device.type != "cuda":
        return f"input is on {device}; Triton needs a CUDA tensor (or TRITON_INTERPRET=1)"
    if not torch.cuda.is_available():
        return "no CUDA device is available (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None


class TritonBackend:
    verify_on_first_use = True

    def __init__(self, *, deterministic: bool = False) -> None:
        self.deterministic = deterministic
        self.name = "triton-deterministic" if deterministic else "triton"
        self._reductions = TorchBackend()

    def unavailable_reason(self, matrix: KernelInput | None, precision: str) -> str | None:
        reason = unavailable_reason(None if matrix is None else matrix.device)
        if reason is not None:
            return reason
        if precision == "exact":
            return "precision='exact' needs float64 products; the Triton kernel is the fast path only"
        if matrix is not None and matrix.dtype not in _INPUT_DTYPES:
            return f"{matrix.dtype} input: the Triton kernel takes {', '.join(_INPUT_DTYPES)}"
        return None

    def kernel_in_use(self) -> str:
        return self.name

    def add_gram(self, matrix: KernelInput, gram: torch.Tensor, shift: torch.Tensor | None, precision: str) -> None:
        from rankme_fast.backends.triton_kernels import syrk_update  # imports Triton: only when it is used

        z = matrix.torch()
        shift = None if shift is None else shift.to(gram.device, torch.float64).contiguous()
        syrk_update(z, gram, shift=shift, input_precision="tf32x3", deterministic=self.deterministic)

    def column_mean(self, matrix: KernelInput) -> torch.Tensor:
        return self._reductions.column_mean(matrix)

    def count_nonfinite_rows(self, matrix: KernelInput) -> int:
        return self._reductions.count_nonfinite_rows(matrix)
