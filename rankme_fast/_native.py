"""Loads the compiled module rankme_fast._C, or records why it cannot be used.

OpenBLAS from the scipy-openblas32 wheel is preloaded by path first, so the extension finds
it wherever site-packages lives. Without _C the package still works on the torch backend
and says so once, in one line. RANKME_FAST_CPU_ISA=baseline|avx2|avx512|avx512bf16 forces
the tiled kernel's instruction set (an error at import if this CPU cannot run it).
"""

from __future__ import annotations

import ctypes
import os
import warnings
from pathlib import Path
from types import ModuleType


def _preload_openblas() -> None:
    try:
        import scipy_openblas32
    except ImportError:
        return
    for library in Path(scipy_openblas32.get_lib_dir()).glob("libscipy_openblas*.so*"):
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        return


def _load() -> tuple[ModuleType | None, str | None]:
    try:
        _preload_openblas()
        from rankme_fast import _C
    except (ImportError, OSError) as error:
        return None, f"{type(error).__name__}: {error}"
    return _C, None


native, native_error = _load()

if native is not None and os.environ.get("RANKME_FAST_CPU_ISA"):
    # a deliberate choice: refused loudly (ValueError naming what this CPU has), never ignored
    try:
        native.select_cpu_isa(os.environ["RANKME_FAST_CPU_ISA"])
    except ValueError as error:
        raise ValueError(f"RANKME_FAST_CPU_ISA={os.environ['RANKME_FAST_CPU_ISA']}: {error}") from None

if native is None:
    warnings.warn(
        f"rankme_fast._C is not available ({native_error}); using the torch reference backend",
        RuntimeWarning,
        stacklevel=2,
    )
