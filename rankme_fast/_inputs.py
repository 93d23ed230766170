"""Turns what users pass (torch tensors or numpy arrays of shape (..., D)) into a checked 2-D
`KernelInput`, with clear errors.

A `KernelInput` is what kernels may read by address: its data holds native-endian values of a
supported dtype at an aligned address, with strides that are whole multiples of the item size.
Input that already is so is kept as a view (no copy); anything else (another byte order, a
packed record field, a byte-offset buffer) is copied once into such an array, and the KernelInput
owns that copy, so it lives as long as the KernelInput that a kernel call is given."""

from __future__ import annotations

import warnings
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
class KernelInput:
    """A checked (rows, cols) input batch, torch tensor or numpy array, laid out so that C may
    read it by address (see the module docstring); build it with `kernel_input`."""

    data: torch.Tensor | np.ndarray
    dtype: str
    device: torch.device

    def __post_init__(self) -> None:
        if isinstance(self.data, np.ndarray) and not (self.data.dtype.isnative and self.data.flags.aligned):
            got = f"{self.data.dtype.str} with strides {self.data.strides}"
            raise ValueError(f"a KernelInput needs native-endian, aligned data; got {got}")

    @property
    def rows(self) -> int:
        return int(self.data.shape[0])

    @property
    def cols(self) -> int:
        return int(self.data.shape[1])

    def torch(self) -> torch.Tensor:
        """The data as a torch tensor (zero-copy where torch can alias the numpy buffer; the
        tensor is only read, so a read-only array such as a broadcast view is fine)."""
        if isinstance(self.data, torch.Tensor):
            return self.data
        array = self.data
        if any(s < 0 or s % array.itemsize for s in array.strides):  # torch.from_numpy takes neither
            array = array.copy()  # (not ascontiguousarray: it keeps any stride of a length-1 axis)
        if self.dtype == "bfloat16":
            array = array.view(np.uint16)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if self.dtype == "bfloat16" else tensor

    def to(self, device: torch.device) -> KernelInput:
        if device == self.device:
            return self
        return KernelInput(self.torch().to(device), self.dtype, device)

    def transposed_copy(self) -> KernelInput:
        """Zᵀ made contiguous, so kernels read rows in place instead of gathering columns."""
        data = self.data.T.contiguous() if isinstance(self.data, torch.Tensor) else np.ascontiguousarray(self.data.T)
        return KernelInput(data, self.dtype, self.device)

    def select_rows(self, keep: torch.Tensor) -> KernelInput:
        return KernelInput(self.torch()[keep.to(self.device)], self.dtype, self.device)


def kernel_input(batch: Any, *, name: str = "batch") -> KernelInput:
    """Check `batch` and flatten its leading dimensions: shape (..., D) -> (N, D)."""
    dtype, rows, dim = check_batch(batch, name=name)
    if rows == 0:
        raise ValueError(f"{name} is empty (shape {tuple(batch.shape)}): there are no rows to add")
    device = batch.device if isinstance(batch, torch.Tensor) else torch.device("cpu")
    batch = _readable_array(batch) if isinstance(batch, np.ndarray) else _readable_tensor(batch)
    data = batch if batch.ndim == 2 else batch.reshape(rows, dim)
    return KernelInput(data, dtype, device)


def check_batch(batch: Any, *, name: str = "batch") -> tuple[str, int, int]:
    """(dtype name, rows, D) of a torch tensor or numpy array of shape (..., D), from its type,
    dtype and shape alone (so torch.compile can trace it); TypeError/ValueError naming the
    problem otherwise. Rows may be 0."""
    if isinstance(batch, torch.Tensor):
        dtype = _TORCH_DTYPES.get(batch.dtype)
    elif isinstance(batch, np.ndarray):
        dtype = batch.dtype.name if batch.dtype.name in SUPPORTED_DTYPES else None
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
    rows = 1
    for size in batch.shape[:-1]:
        rows *= int(size)
    return dtype, rows, dim


def _readable_array(array: np.ndarray) -> np.ndarray:
    """`array` itself when native-endian and aligned (address and strides multiples of the item
    alignment), else one native-endian, C-contiguous copy: the byte swap and the gather of a
    strided or packed layout done in the same pass."""
    if array.dtype.isnative and array.flags.aligned:
        return array
    return array.astype(array.dtype.newbyteorder("="), order="C")  # always a fresh, aligned buffer


def _readable_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` itself, unless it is a lazily negated view (its memory holds the other sign) or
    starts at an address that is not a multiple of its item size (torch.frombuffer at a byte
    offset): then one aligned copy."""
    if tensor.is_neg():
        tensor = tensor.resolve_neg()
    if tensor.data_ptr() % tensor.element_size():
        tensor = tensor.clone(memory_format=torch.contiguous_format)
    return tensor


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_BY_NAME[name]


def dtype_name(dtype: torch.dtype) -> str:
    """'float64', 'float32', 'float16' or 'bfloat16' for a supported torch dtype."""
    return _TORCH_DTYPES[dtype]
