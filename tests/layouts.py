"""Hypothesis strategies over the input space a user can hand the library: every float dtype,
both byte orders, and every memory layout numpy or torch can produce (C, Fortran, negative
strides, step slices, stride-0 broadcasts and `expand`, byte-misaligned buffers, packed record
fields), with leading dimensions. Each drawn input comes with the float64 values it holds,
flattened to (N, D), for the float64 SVD reference."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import torch
from common import SPECTRA, make_embeddings
from hypothesis import strategies as st

NUMPY_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}  # fmt: skip
NUMPY_LAYOUTS = ("c", "fortran", "negative_rows", "negative_cols", "step_slice", "broadcast_rows", "broadcast_leading",
                 "leading_dims", "misaligned", "packed_record")  # fmt: skip
TORCH_LAYOUTS = ("c", "fortran", "step_slice", "expand_rows", "expand_leading", "leading_dims", "misaligned")
LAYOUTS = [("numpy", name) for name in NUMPY_LAYOUTS] + [("torch", name) for name in TORCH_LAYOUTS]


@dataclass
class Held:
    """An input as a user holds it, and the float64 values it stands for, as (N, D)."""

    data: Any
    values: np.ndarray
    description: str

    def row_chunks(self, cuts: list[int]) -> list[Any]:
        """The input cut along its first axis at `cuts` (taken modulo its length): the pieces
        keep the layout of the whole."""
        length = self.data.shape[0]
        edges = sorted({0, length, *(c % (length + 1) for c in cuts)})
        return [self.data[a:b] for a, b in itertools.pairwise(edges) if b > a]

    def __repr__(self) -> str:
        return f"Held({self.description})"


def float64_values(data: Any) -> np.ndarray:
    """What `data` holds, as float64 (N, D): read element by element by numpy or torch, never
    through the code under test."""
    values = data.double().numpy() if isinstance(data, torch.Tensor) else np.asarray(data).astype(np.float64)
    return values.reshape(-1, values.shape[-1])


def _misaligned_numpy(array: np.ndarray) -> np.ndarray:
    raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
    out = np.frombuffer(raw.data, dtype=array.dtype, offset=1, count=array.size).reshape(array.shape)
    out.flags.writeable = True
    out[...] = array
    return out


def numpy_input(values: np.ndarray, dtype: str, big_endian: bool, layout: str, split: int) -> np.ndarray:
    base = NUMPY_DTYPES[dtype]
    kind = np.dtype(base).newbyteorder(">" if big_endian else "<") if np.dtype(base).itemsize > 1 else np.dtype(base)
    a = values.astype(kind)
    n, d = a.shape
    if layout == "c":
        return np.ascontiguousarray(a)
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "negative_rows":
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "negative_cols":
        return np.ascontiguousarray(a[:, ::-1])[:, ::-1]
    if layout == "step_slice":
        big = np.zeros((2 * n, 3 * d), dtype=kind)
        big[::2, ::3] = a
        return big[::2, ::3]
    if layout == "broadcast_rows":  # every row the first one, stride 0
        return np.broadcast_to(a[:1], (n, d))
    if layout == "broadcast_leading":  # (2, n, d) with a stride-0 leading axis
        return np.broadcast_to(a[None], (2, n, d))
    if layout == "leading_dims":
        return a.reshape(split, n // split, d)
    if layout == "misaligned":
        return _misaligned_numpy(a)
    if layout == "packed_record":  # a float field beside a 1-byte one: strides not multiples of the item size
        record = np.zeros(n, dtype=[("flag", "u1"), ("emb", kind, (d,))])
        record["emb"] = a
        record["flag"] = 7
        return record["emb"]
    raise ValueError(layout)


def torch_input(values: np.ndarray, dtype: str, layout: str, split: int) -> torch.Tensor:
    t = torch.from_numpy(values).to(TORCH_DTYPES[dtype])
    n, d = t.shape
    if layout == "c":
        return t.contiguous()
    if layout == "fortran":
        return t.T.contiguous().T
    if layout == "step_slice":
        big = torch.zeros(2 * n, 3 * d, dtype=t.dtype)
        big[::2, ::3] = t
        return big[::2, ::3]
    if layout == "expand_rows":
        return t[:1].expand(n, d)
    if layout == "expand_leading":
        return t[None].expand(2, n, d)
    if layout == "leading_dims":
        return t.reshape(split, n // split, d)
    if layout == "misaligned":
        raw = bytearray(t.numel() * t.element_size() + 1)
        out = torch.frombuffer(raw, dtype=t.dtype, offset=1, count=t.numel()).reshape(n, d)
        out.copy_(t)
        return out
    raise ValueError(layout)


@st.composite
def held_inputs(
    draw: st.DrawFn,
    *,
    dtypes: tuple[str, ...] = tuple(NUMPY_DTYPES),
    layouts: list[tuple[str, str]] = LAYOUTS,
    max_rows: int = 64,
    max_cols: int = 24,
) -> Held:
    """One input: dtype x byte order x (container, layout) x leading dimensions, with its
    float64 values. Tests that must cover every layout each run pass one in `layouts`."""
    dtype = draw(st.sampled_from(dtypes))
    container, layout = draw(st.sampled_from(layouts))
    d = draw(st.integers(1, max_cols))
    kind = draw(st.sampled_from(SPECTRA))
    seed = draw(st.integers(0, 2**31 - 1))
    big_endian = container == "numpy" and draw(st.booleans())
    split = draw(st.integers(1, 4)) if layout == "leading_dims" else 1
    n = split * draw(st.integers(1, max(1, max_rows // split)))
    values = make_embeddings(kind, n, d, seed)
    if container == "numpy":
        data = numpy_input(values, dtype, big_endian, layout, split)
    else:
        data = torch_input(values, dtype, layout, split)
    order = "big-endian " if big_endian else ""
    description = f"{container} {order}{dtype} {layout} {tuple(data.shape)} {kind} seed={seed}"
    return Held(data, float64_values(data), description)
