"""The contract every embedding file format meets: a 2-D view (rows, D) of one array in one
file, read by row range with bounded memory, whatever the file's size."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import torch

from rankme_fast.corpus import BadFileError

__all__ = ["FLOAT_DTYPES", "BadFileError", "Rows", "Source", "check_shape", "choose_name", "rows_of_slab",
           "swapped_to_native"]  # fmt: skip

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


Rows = np.ndarray | torch.Tensor  # what GramAccumulator.update takes


class Source(ABC):
    """One array in one file, seen as (rows, dim): leading dimensions are flattened."""

    path: str
    rows: int
    dim: int
    dtype: str  # one of FLOAT_DTYPES
    itemsize: int

    @abstractmethod
    def read(self, start: int, stop: int) -> Rows:
        """Rows [start, stop) as a (stop - start, dim) array or tensor."""

    def batches(self, start: int, batch_rows: int) -> Iterator[tuple[int, Rows]]:
        """(first row, rows) from `start` on, in batches whose boundaries are start + k·batch_rows."""
        for first in range(start, self.rows, batch_rows):
            yield first, self.read(first, min(first + batch_rows, self.rows))

    def prefetch(self, start: int, stop: int) -> None:  # noqa: B027 (optional hook)
        """Rows [start, stop) will be read soon (sources that read through the page cache ask
        for readahead)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Free what the source holds open."""


def swapped_to_native(values: np.ndarray) -> np.ndarray:
    """`values` in native byte order. A reader calls this on a buffer it owns: the bytes are
    swapped in place, so a big-endian file costs no second copy of its rows."""
    if values.dtype.isnative:
        return values
    return values.byteswap(inplace=True).view(values.dtype.newbyteorder("="))


def rows_of_slab(read_first_axis, shape: tuple[int, ...], start: int, stop: int) -> Rows:
    """Rows [start, stop) of an array of `shape` flattened to (rows, D), reading whole indices
    of its first axis with `read_first_axis(a, b)` (each index holds prod(shape[1:-1]) rows)."""
    per_index = int(np.prod(shape[1:-1]))
    first, last = start // per_index, -(-stop // per_index)
    slab = read_first_axis(first, last).reshape(-1, shape[-1])
    return slab[start - first * per_index : stop - first * per_index]


def check_shape(path: str, shape: tuple[int, ...], dtype: str, what: str) -> tuple[int, int]:
    """(rows, dim) of an array of `shape` whose last axis is D; names the file when it is not usable."""
    if dtype not in FLOAT_DTYPES:
        raise BadFileError(path, f"{what} has dtype {dtype}; expected a float dtype among {', '.join(FLOAT_DTYPES)}")
    if len(shape) < 2:
        raise BadFileError(path, f"{what} has shape {shape}; expected (N, D) or (..., D)")
    if shape[-1] == 0:
        raise BadFileError(path, f"{what} has shape {shape}: D is 0")
    return int(np.prod(shape[:-1])), int(shape[-1])


def choose_name(path: str, names: list[str], key: str | None, what: str) -> str:
    """The named array, or the only one; names the file and the choices otherwise."""
    if key is not None:
        if key not in names:
            raise BadFileError(path, f"no {what} named {key!r} (has: {', '.join(names) or 'none'})")
        return key
    if len(names) != 1:
        listed = ", ".join(names) or "none"
        raise BadFileError(path, f"holds {len(names)} {what}s ({listed}); pick one with --key/--column")
    return names[0]
