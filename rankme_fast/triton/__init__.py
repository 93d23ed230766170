"""Triton kernels for the fast GPU path: a streaming one-triangle SYRK into a float64 state.

Importing this package never fails: `unavailable_reason()` says why the kernels cannot run
(Triton missing, no GPU and no interpreter). Set TRITON_INTERPRET=1 before the first import
of Triton to run the kernels on CPU tensors (slowly; for tests on tiny shapes).
"""

from __future__ import annotations

import importlib.util
import os

import torch


def interpreter_enabled() -> bool:
    """True when Triton runs kernels in its Python interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the Triton kernels can run on `device` (any device when None), else why not."""
    if not triton_installed():
        return "Triton is not installed (pip install triton)"
    if interpreter_enabled():
        return None
    if device is not None and device.type != "cuda":
        return f"input is on {device}; Triton needs a CUDA tensor (or TRITON_INTERPRET=1)"
    if not torch.cuda.is_available():
        return "no CUDA device is available (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None
