"""The argument check every layer repeats: a count that must be a positive integer."""

from __future__ import annotations

import numpy as np


def check_positive_int(value: object, name: str, *, optional: bool = False) -> None:
    """ValueError naming `name` unless `value` is a positive integer (or None when `optional`);
    bools are refused, numpy integers taken."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")
