"""The C++ CPU kernel (rankme_fast._C): one-triangle SYRK that reads every float dtype in
place (any strides), fuses the cast and the centring shift, and sums in float64. The tiled
kernel is compiled once per instruction set and picked at run time (`cpu_info`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from rankme_fast._inputs import KernelInput
from rankme_fast._native import native, native_error
from rankme_fast.backends import cpu_dispatch, self_check

_KERNELS = ("auto", "blas", "tiled")


class CpuBackend:
    # the kernel variant is chosen from cpuid at run time, so the one in use may never have run
    # on this CPU model before: it is checked on first use like the GPU kernels (~5 ms a case)
    verify_on_first_use = True

    def __init__(self, kernel: str = "auto") -> None:
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.name = "cpu" if kernel == "auto" else f"cpu-{kernel}"  # its registry name
        self._last_kernel: str | None = None  # what the last update ran, for kernel "auto"

    def unavailable_reason(self, matrix: KernelInput | None, precision: str) -> str | None:
        if native is None:
            return f"rankme_fast._C is not available ({native_error})"
        if self.kernel == "blas" and native.blas is None:
            return "rankme_fast._C was built without a BLAS"
        if matrix is not None and matrix.device.type != "cpu":
            return f"input is on {matrix.device}; this backend reads host memory"
        return None

    def kernel_in_use(self) -> str:
        """'blas', or 'tiled-<instruction set>' (e.g. 'tiled-avx512bf16'): for kernel "auto" the
        route of the last update (cpu_dispatch), else what the features choose."""
        if self.kernel == "auto" and self._last_kernel is not None:
            return self._last_kernel
        kernel = native.auto_kernel() if self.kernel == "auto" else self.kernel
        return "blas" if kernel == "blas" else f"tiled-{native.cpu_isa()}"

    def add_gram(self, matrix: KernelInput, gram: torch.Tensor, shift: torch.Tensor | None, precision: str) -> None:
        if gram.device.type != "cpu" or gram.dtype != torch.float64 or not gram.is_contiguous():
            raise ValueError("the cpu backend needs a contiguous float64 state in host memory")
        shift_ptr = 0
        if shift is not None:
            shift = shift.to("cpu", torch.float64).contiguous()
            shift_ptr = shift.data_ptr()
        if self.kernel == "auto":
            route = cpu_dispatch.route_for(matrix.dtype, precision, matrix.cols)  # measured on first use
            if cpu_dispatch.add_through_library(route, matrix.data, shift, gram):
                self._last_kernel = route.kernel
                return
            self._last_kernel = route.default if route.code in cpu_dispatch.LIBRARY_ROUTES else route.kernel
        native.syrk_update(*_view(matrix), gram.data_ptr(), shift_ptr, precision == "fast", _kernel_code(self.kernel))

    def column_mean(self, matrix: KernelInput) -> torch.Tensor:
        out = torch.empty(matrix.cols, dtype=torch.float64)
        native.column_mean(*_view(matrix), out.data_ptr())
        return out

    def count_nonfinite_rows(self, matrix: KernelInput) -> int:
        return int(native.count_nonfinite_rows(*_view(matrix)))


def _kernel_code(kernel: str) -> int:
    return {"auto": native.KERNEL_AUTO, "blas": native.KERNEL_BLAS, "tiled": native.KERNEL_TILED}[kernel]


def _view(matrix: KernelInput) -> tuple[int, int, int, int, int, int]:
    """(address, dtype code, rows, cols, row stride, col stride), strides in elements. The
    address is matrix.data's own (a KernelInput holds native-endian, aligned data with whole-element
    strides), so it stays valid while the caller holds `matrix`: no copy is made here."""
    data = matrix.data
    if isinstance(data, torch.Tensor):
        address, strides = data.data_ptr(), data.stride()
    else:
        address, strides = data.ctypes.data, tuple(s // data.itemsize for s in data.strides)
    return address, getattr(native, f"DTYPE_{matrix.dtype.upper()}"), matrix.rows, matrix.cols, strides[0], strides[1]


def cpu_info() -> dict[str, Any]:
    """What the CPU offers (cpuid, and the OS's saved register state), the instruction-set
    variants of the tiled kernel compiled in (each: whether it can run here), the one in use,
    the AMX tile kernel's self-test ('passed', or why the amx variant may not run), and the
    kernel backend="cpu" runs."""
    if native is None:
        return {"available": False, "reason": native_error}
    return {
        "available": True,
        "features": native.cpu_features().split(),
        "variants": native.cpu_isa_variants(),
        "in_use": native.cpu_isa(),
        "auto_kernel": native.auto_kernel(),
        "blas": native.blas,
        "tiles": native.cpu_tile_check(),
        "dispatch": "measured" if cpu_dispatch.measuring() else "by features",
        "routes": cpu_dispatch.routes(),
    }


@contextmanager
def instruction_set(name: str) -> Iterator[None]:
    """Run the tiled kernel's `name` variant inside the block (tests, benchmarks); ValueError
    if it cannot run on this CPU. The environment variable RANKME_FAST_CPU_ISA does the same
    for a whole process."""
    previous, measured = native.cpu_isa(), cpu_dispatch.measuring()
    native.select_cpu_isa(name)
    cpu_dispatch.set_measuring(False)  # the variant chosen by hand runs everywhere inside
    self_check.kernels_changed()
    try:
        yield
    finally:
        native.select_cpu_isa(previous)
        cpu_dispatch.set_measuring(measured)
        self_check.kernels_changed()
