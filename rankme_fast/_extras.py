"""What each layer beyond the core needs from PyPI, and the error that names the extra to
install when it is missing (the core needs numpy, torch and scipy-openblas32 only)."""

from __future__ import annotations

import importlib.util


def require(layer: str, extra: str, *modules: str) -> None:
    """ImportError naming `pip install 'rankme_fast[extra]'` unless every module is importable."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{layer} needs {', '.join(missing)}: pip install 'rankme_fast[{extra}]'")
