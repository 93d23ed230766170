"""An optional library route for bfloat16 Grams in fast mode: oneMKL's `cblas_gemm_bf16bf16f32`
(bfloat16 products exact in float32, float32 sums), reached at run time when the `mkl` wheel is
installed (`pip install 'rankme_fast[mkl]'`); the core install stays lean. On CPUs with
AMX-BF16 oneMKL runs it on the tile units. The fast-mode dispatch (cpu_dispatch) times it next
to the built-in kernels and routes to it only where it wins; it takes unshifted, row-major
bfloat16 batches (a centred batch keeps the built-in kernel, which fuses the shift).

Rows go through in blocks; each block's float32 ZᵀZ is added, lower triangle only, into the
float64 state, as the built-in fast kernels add theirs.

float32 and float16 batches can take the same products as a bfloat16 split (`add_gram_split`):
z = hi + lo + r with hi = bf16(z), lo = bf16(z − hi), |r| ≤ 2⁻¹⁶|z|, and ZᵀZ ≈ HᵀH + HᵀL + LᵀH
(three products in two calls, LᵀH = (HᵀL)ᵀ; LᵀL and the r terms dropped: ≤ 3·2⁻¹⁶|zᵢzⱼ| per
product). On tile units that is three bfloat16 products against one float32 product; elsewhere
it loses, and the dispatch, which times it, does not take it."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from pathlib import Path

import numpy as np
import torch

BLOCK_ROWS = 8192  # rows per float32 product: its rounding is that of the built-in kernels' blocks
SPLIT_BLOCK_ROWS = 4096  # rows per block of the split: float32 sums over as many rows as the built-in kernels
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


def usable_split(matrix: torch.Tensor | np.ndarray, shift: torch.Tensor | None) -> bool:
    """Whether this batch can take the split: float32 or float16, unshifted, rows contiguous."""
    if isinstance(matrix, np.ndarray):
        return matrix.dtype in (np.float32, np.float16) and shift is None and matrix.ndim == 2 and (
            matrix.flags.c_contiguous)  # fmt: skip
    return (isinstance(matrix, torch.Tensor) and matrix.dtype in (torch.float32, torch.float16) and shift is None
            and matrix.ndim == 2 and matrix.is_contiguous())  # fmt: skip


def add_gram(matrix: torch.Tensor, gram: torch.Tensor) -> None:
    """Add the lower triangle of ZᵀZ (float32 sums per block of rows) into the float64 `gram`."""
    cols = matrix.shape[1]
    block = torch.empty(cols, cols, dtype=torch.float32)
    for start in range(0, matrix.shape[0], BLOCK_ROWS):
        part = matrix[start : start + BLOCK_ROWS]
        _product(part, part, block)
        gram.add_(block.tril().to(torch.float64))


def add_gram_split(matrix: torch.Tensor | np.ndarray, gram: torch.Tensor) -> None:
    """Add the lower triangle of ZᵀZ of float32/float16 rows through the bfloat16 split, per
    block of SPLIT_BLOCK_ROWS rows: HᵀH + HᵀL + (HᵀL)ᵀ in float32, added into float64."""
    matrix = torch.from_numpy(matrix) if isinstance(matrix, np.ndarray) else matrix
    cols = matrix.shape[1]
    square, cross = torch.empty(cols, cols, dtype=torch.float32), torch.empty(cols, cols, dtype=torch.float32)
    for start in range(0, matrix.shape[0], SPLIT_BLOCK_ROWS):
        part = matrix[start : start + SPLIT_BLOCK_ROWS].float()
        high = part.bfloat16()
        low = (part - high.float()).bfloat16()
        _product(high, high, square)
        _product(high, low, cross)
        gram.add_((square + cross + cross.T).tril().to(torch.float64))


def _product(left: torch.Tensor, right: torch.Tensor, out: torch.Tensor) -> None:
    """out = leftᵀ·right for row-major bfloat16 (rows, cols) operands, float32 out."""
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"the oneMKL route is not available: {reason}")
    rows, cols = left.shape
    library.cblas_gemm_bf16bf16f32(_ROW_MAJOR, _TRANS, _NO_TRANS, cols, cols, rows, 1.0, left.data_ptr(), cols,
                                   right.data_ptr(), cols, 0.0, out.data_ptr(), cols)  # fmt: skip


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
