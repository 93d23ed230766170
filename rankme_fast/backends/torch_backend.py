"""Reference backend: plain torch ops on any device. Exact mode upcasts to float64 before the
product; fast mode multiplies in float32 per chunk and adds chunks in float64, unless the
process has switched torch's float32 products to TF32 or bfloat16 (then it multiplies in
float64: the fast mode's bound holds whatever the switches say). Rows go in chunks so the
float64 copy stays bounded whatever the batch size."""

from __future__ import annotations

import torch

from rankme_fast._inputs import KernelInput

_CHUNK_ELEMENTS = 1 << 24  # about 128 MB of float64 per chunk


class TorchBackend:
    name = "torch"
    verify_on_first_use = False

    def unavailable_reason(self, matrix: KernelInput | None, precision: str) -> str | None:
        return None

    def kernel_in_use(self) -> str:
        return "torch"

    def add_gram(self, matrix: KernelInput, gram: torch.Tensor, shift: torch.Tensor | None, precision: str) -> None:
        z = matrix.torch()
        in_float64 = precision == "exact" or not float32_products_are_full(z.device)
        for chunk in z.split(_chunk_rows(matrix.cols)):
            rows = chunk.to(torch.float64)
            if shift is not None:
                rows = rows - shift
            if in_float64:
                gram.addmm_(rows.T, rows)
            else:
                single = rows.to(torch.float32)
                gram.add_(torch.mm(single.T, single).to(torch.float64))

    def column_mean(self, matrix: KernelInput) -> torch.Tensor:
        z = matrix.torch()
        total = torch.zeros(matrix.cols, dtype=torch.float64, device=z.device)
        for chunk in z.split(_chunk_rows(matrix.cols)):
            total += chunk.to(torch.float64).sum(dim=0)
        return total / matrix.rows

    def count_nonfinite_rows(self, matrix: KernelInput) -> int:
        z = matrix.torch()
        return int(sum(int((~torch.isfinite(c)).any(dim=1).sum()) for c in z.split(_chunk_rows(matrix.cols))))


def float32_products_are_full(device: torch.device) -> bool:
    """Whether torch multiplies float32 matrices in full float32 on `device` now. A process may
    have switched them to TF32 (CUDA) or bfloat16 (oneDNN on the CPU) with torch's
    set_float32_matmul_precision, allow_tf32 or fp32_precision settings."""
    matmul = torch.backends.cuda.matmul if device.type == "cuda" else torch.backends.mkldnn.matmul
    try:
        if hasattr(matmul, "fp32_precision"):  # torch >= 2.9: per backend, "none" inherits
            setting = matmul.fp32_precision
            return (torch.backends.fp32_precision if setting == "none" else setting) in ("none", "ieee")
        return torch.get_float32_matmul_precision() == "highest"
    except RuntimeError:  # torch refuses to answer after a mix of its old and new switches
        return False


def _chunk_rows(cols: int) -> int:
    return max(1, _CHUNK_ELEMENTS // cols)
