"""The one contract every backend fulfils: add (Z - shift)^T (Z - shift) of a batch into a
float64 state whose lower triangle is authoritative, plus the two batch reductions the
accumulator needs before it touches the state."""

from __future__ import annotations

from typing import Protocol

import torch

from rankme_fast._inputs import KernelInput

PRECISIONS = ("exact", "fast")


class Backend(Protocol):
    name: str
    # True for kernels the test suite may not have run on the hardware at hand (GPU kernels):
    # the registry self-checks them on first use (rankme_fast.backends.self_check)
    verify_on_first_use: bool

    def unavailable_reason(self, matrix: KernelInput | None, precision: str) -> str | None:
        """None when this backend can take `matrix` (or any input, when None), else why not."""

    def kernel_in_use(self) -> str:
        """The kernel that add_gram runs now (e.g. 'tiled-avx512bf16' for the cpu backend)."""

    def add_gram(self, matrix: KernelInput, gram: torch.Tensor, shift: torch.Tensor | None, precision: str) -> None:
        """gram[lower] += (Z - shift)^T (Z - shift); gram is (D, D) float64 on the state's device."""

    def column_mean(self, matrix: KernelInput) -> torch.Tensor:
        """Float64 column means of Z, shape (D,), on the matrix's device."""

    def count_nonfinite_rows(self, matrix: KernelInput) -> int:
        """Number of rows holding a NaN or an Inf."""
