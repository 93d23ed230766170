"""An optional library route for bfloat16 Grams in fast mode: oneMKL's `cblas_gemm_bf16bf16f32`
(bfloat16 products exact in float32, float32 sums), reached at run time when the `mkl` wheel is
installed (`pip install 'rankme_fast[mkl]'`); the core install stays lean. On CPUs with
AMX-BF16 oneMKL runs it on the tile units. The fast-mode dispatch (cpu_dispatch) times it next
to the built-in kernels and routes to it only where it wins; it takes unshifted, row-major
bfloat16 batches (a centred batch keeps the built-in kernel, which fuses the shift).

Rows go through in blocks; each block's float32 ZᵀZ is added, lower triangle only, into the
float64 state, as the built-in fast kernels add theirs."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from pathlib import Path

import torch

BLOCK_ROWS = 8192  # rows per float32 product: its rounding is that of the built-in kernels' blocks
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_THREADING_GNU = 1  # share torch's libgomp instead of loading a second OpenMP runtime

_lock = threading.Lock()
_loaded: tuple[ctypes.CDLL | None, str | None] | None = None


def unavailable_reason() -> str | None:
    """None when the route can run, else why not."""
    return _library()[1]


def usable(matrix: torch.Tensor, shift: torch.Tensor | None) -> bool:
    """Whether this batch can take the route: bfloat16, unshifted, rows contiguous."""
    return (isinstance(matrix, torch.Tensor) and matrix.dtype == torch.bfloat16 and shift is None
            and matrix.ndim == 2 and matrix.stride(1) == 1 and matrix.stride(0) == matrix.shape[1])  # fmt: skip


def add_gram(matrix: torch.Tensor, gram: torch.Tensor) -> None:
    """Add the lower triangle of ZᵀZ (float32 sums per block of rows) into the float64 `gram`."""
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"the oneMKL route is not available: {reason}")
    rows, cols = matrix.shape
    block = torch.empty(cols, cols, dtype=torch.float32)
    for start in range(0, rows, BLOCK_ROWS):
        part = matrix[start : start + BLOCK_ROWS]
        address = part.data_ptr()
        library.cblas_gemm_bf16bf16f32(_ROW_MAJOR, _TRANS, _NO_TRANS, cols, cols, part.shape[0], 1.0, address, cols,
                                       address, cols, 0.0, block.data_ptr(), cols)  # fmt: skip
        gram.add_(block.tril().to(torch.float64))


def _library() -> tuple[ctypes.CDLL | None, str | None]:
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    candidates = sorted(Path(sys.prefix, "lib").glob("libmkl_rt.so*"))
    found = str(candidates[0]) if candidates else ctypes.util.find_library("mkl_rt")
    if found is None:
        return None, "oneMKL is not installed (pip install 'rankme_fast[mkl]')"
    try:
        library = ctypes.CDLL(found)
        library.MKL_Set_Threading_Layer.restype = ctypes.c_int
        library.MKL_Set_Threading_Layer(_THREADING_GNU)
        gemm = library.cblas_gemm_bf16bf16f32
    except (OSError, AttributeError) as error:
        return None, f"{found}: {error}"
    integer, pointer, real = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
    gemm.restype = None
    gemm.argtypes = [integer, integer, integer, integer, integer, integer, real, pointer, integer, pointer, integer,
                     real, pointer, integer]  # fmt: skip
    return library, None
