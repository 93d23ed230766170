"""The C++ CPU kernel (rankme_fast._C): one-triangle SYRK that reads every float dtype in
place (any strides), fuses the cast and the centring shift, and sums in float64."""

from __future__ import annotations

import torch

from rankme_fast._inputs import Matrix
from rankme_fast._native import native, native_error

_KERNELS = ("auto", "blas", "tiled")


class CpuBackend:
    name = "cpu"
    verify_on_first_use = False

    def __init__(self, kernel: str = "auto") -> None:
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        self.kernel = kernel

    def unavailable_reason(self, matrix: Matrix | None, precision: str) -> str | None:
        if native is None:
            return f"rankme_fast._C is not available ({native_error})"
        if self.kernel == "blas" and native.blas is None:
            return "rankme_fast._C was built without a BLAS"
        if matrix is not None and matrix.device.type != "cpu":
            return f"input is on {matrix.device}; this backend reads host memory"
        return None

    def add_gram(self, matrix: Matrix, gram: torch.Tensor, shift: torch.Tensor | None, precision: str) -> None:
        if gram.device.type != "cpu" or gram.dtype != torch.float64 or not gram.is_contiguous():
            raise ValueError("the cpu backend needs a contiguous float64 state in host memory")
        shift_ptr = 0
        if shift is not None:
            shift = shift.to("cpu", torch.float64).contiguous()
            shift_ptr = shift.data_ptr()
        native.syrk_update(*_view(matrix), gram.data_ptr(), shift_ptr, precision == "fast", _kernel_code(self.kernel))

    def column_mean(self, matrix: Matrix) -> torch.Tensor:
        out = torch.empty(matrix.cols, dtype=torch.float64)
        native.column_mean(*_view(matrix), out.data_ptr())
        return out

    def count_nonfinite_rows(self, matrix: Matrix) -> int:
        return int(native.count_nonfinite_rows(*_view(matrix)))


def _kernel_code(kernel: str) -> int:
    return {"auto": native.KERNEL_AUTO, "blas": native.KERNEL_BLAS, "tiled": native.KERNEL_TILED}[kernel]


def _view(matrix: Matrix) -> tuple[int, int, int, int, int, int]:
    """(address, dtype code, rows, cols, row stride, col stride), strides in elements. The
    address is matrix.data's own (a Matrix holds native-endian, aligned data with whole-element
    strides), so it stays valid while the caller holds `matrix`: no copy is made here."""
    data = matrix.data
    if isinstance(data, torch.Tensor):
        address, strides = data.data_ptr(), data.stride()
    else:
        address, strides = data.ctypes.data, tuple(s // data.itemsize for s in data.strides)
    return address, getattr(native, f"DTYPE_{matrix.dtype.upper()}"), matrix.rows, matrix.cols, strides[0], strides[1]
