"""The Triton kernel (rankme_fast.triton): one-triangle SYRK on tensor cores for CUDA tensors,
precision="fast" only (float32 sums within a batch, float64 across batches). Under
TRITON_INTERPRET=1 it also takes CPU tensors, so it can be tested anywhere."""

from __future__ import annotations

import torch

from rankme_fast import triton as triton_support
from rankme_fast._inputs import Matrix
from rankme_fast.backends.torch_backend import TorchBackend

_INPUT_DTYPES = ("float32", "float16", "bfloat16")


class TritonBackend:
    verify_on_first_use = True

    def __init__(self, *, deterministic: bool = False) -> None:
        self.deterministic = deterministic
        self.name = "triton-deterministic" if deterministic else "triton"
        self._reductions = TorchBackend()

    def unavailable_reason(self, matrix: Matrix | None, precision: str) -> str | None:
        reason = triton_support.unavailable_reason(None if matrix is None else matrix.device)
        if reason is not None:
            return reason
        if precision == "exact":
            return "precision='exact' needs float64 products; the Triton kernel is the fast path only"
        if matrix is not None and matrix.dtype not in _INPUT_DTYPES:
            return f"{matrix.dtype} input: the Triton kernel takes {', '.join(_INPUT_DTYPES)}"
        return None

    def kernel_in_use(self) -> str:
        return self.name

    def add_gram(self, matrix: Matrix, gram: torch.Tensor, shift: torch.Tensor | None, precision: str) -> None:
        from rankme_fast.triton.syrk import syrk_update  # imports Triton: only when it is used

        z = matrix.torch()
        shift = None if shift is None else shift.to(gram.device, torch.float64).contiguous()
        syrk_update(z, gram, shift=shift, input_precision="tf32x3", deterministic=self.deterministic)

    def column_mean(self, matrix: Matrix) -> torch.Tensor:
        return self._reductions.column_mean(matrix)

    def count_nonfinite_rows(self, matrix: Matrix) -> int:
        return self._reductions.count_nonfinite_rows(matrix)
