"""Turns what users pass (torch tensors or numpy arrays of shape (..., D)) into a checked 2-D
`Matrix` view, without copying when the input is already 2-D, and with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SUPPORTED_DTYPES = ("float64", "float32", "float16", "bfloat16")
_TORCH_DTYPES = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}
_TORCH_BY_NAME = {name: dtype for dtype, name in _TORCH_DTYPES.items()}


@dataclass(frozen=True)
class Matrix:
    """A checked (rows, cols) view of an input batch: torch tensor or numpy array."""

    data: torch.Tensor | np.ndarray
    dtype: str
    device: torch.device

    @property
    def rows(self) -> int:
        return int(self.data.shape[0])

    @property
    def cols(self) -> int:
        return int(self.data.shape[1])

    def torch(self) -> torch.Tensor:
        """The data as a torch tensor (zero-copy where torch can alias the numpy buffer)."""
        if isinstance(self.data, torch.Tensor):
            return self.data
        array = self.data
        if any(s < 0 for s in array.strides):
            array = np.ascontiguousarray(array)
        if self.dtype == "bfloat16":
            return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
        return torch.from_numpy(array)

    def to(self, device: torch.device) -> Matrix:
        if device == self.device:
            return self
        return Matrix(self.torch().to(device), self.dtype, device)

    def transposed_copy(self) -> Matrix:
        """Zᵀ made contiguous, so kernels read rows in place instead of gathering columns."""
        data = self.data.T.contiguous() if isinstance(self.data, torch.Tensor) else np.ascontiguousarray(self.data.T)
        return Matrix(data, self.dtype, self.device)

    def select_rows(self, keep: torch.Tensor) -> Matrix:
        return Matrix(self.torch()[keep.to(self.device)], self.dtype, self.device)


def as_matrix(batch: Any, *, name: str = "batch") -> Matrix:
    """Check `batch` and flatten its leading dimensions: shape (..., D) -> (N, D)."""
    if isinstance(batch, torch.Tensor):
        dtype = _TORCH_DTYPES.get(batch.dtype)
        device = batch.device
    elif isinstance(batch, np.ndarray):
        dtype = batch.dtype.name if batch.dtype.name in SUPPORTED_DTYPES else None
        device = torch.device("cpu")
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(batch).__name__}")
    if dtype is None:
        raise TypeError(
            f"{name} has dtype {batch.dtype}; expected a floating dtype among {', '.join(SUPPORTED_DTYPES)}"
        )
    if batch.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, D) or (..., D) with at least 2 dimensions; got shape {tuple(batch.shape)}"
        )
    dim = int(batch.shape[-1])
    if dim == 0:
        raise ValueError(f"{name} has shape {tuple(batch.shape)}: the embedding dimension D is 0")
    rows = int(np.prod(batch.shape[:-1]))
    if rows == 0:
        raise ValueError(f"{name} is empty (shape {tuple(batch.shape)}): there are no rows to add")
    data = batch if batch.ndim == 2 else batch.reshape(rows, dim)
    return Matrix(data, dtype, device)


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_BY_NAME[name]


def dtype_name(dtype: torch.dtype) -> str:
    """'float64', 'float32', 'float16' or 'bfloat16' for a supported torch dtype."""
    return _TORCH_DTYPES[dtype]
