"""Optional dependencies, handled one way: each layer beyond the core names what it needs from
PyPI with `require` when it is imported, and the ImportError names the extra to install; a
package that offers such a layer as an attribute loads it on first use (`lazy_attributes`), so
importing the package itself needs the core only (numpy, torch and scipy-openblas32)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any


def require(layer: str, extra: str, *modules: str) -> None:
    """ImportError naming `pip install 'rankme_fast[extra]'` unless every module is importable."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{layer} needs {', '.join(missing)}: pip install 'rankme_fast[{extra}]'")


def lazy_attributes(package: str, attributes: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: attribute name -> "module" (the attribute is that
    module) or "module:name" (a name in it), imported on first use. Whatever that module
    requires raises its own ImportError naming the extra."""

    def __getattr__(name: str) -> Any:
        if name not in attributes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, inner = attributes[name].partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, inner) if inner else loaded

    return __getattr__
