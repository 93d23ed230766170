"""RankMe inside training loops.

- `RankMeMetric`: a torchmetrics Metric (needs torchmetrics: `pip install rankme_fast[train]`)
- `RankMeCallback`: a Lightning callback logging a layer's RankMe (needs lightning too)
- `RankMeRecorder`: a forward hook / context manager for plain PyTorch loops
- `GramAccumulator.all_reduce` sums states across torch.distributed ranks (`distributed`)

The optional frameworks are imported on first use, so this package imports without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rankme_fast.integrations.hooks import RankMeRecorder

_LAZY = {
    "RankMeMetric": ("rankme_fast.integrations.metric", "torchmetrics"),
    "RankMeCallback": ("rankme_fast.integrations.lightning", "lightning"),
}

__all__ = ["RankMeCallback", "RankMeMetric", "RankMeRecorder"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, package = _LAZY[name]
    try:
        return getattr(import_module(module), name)
    except ImportError as error:
        raise ImportError(
            f"rankme_fast.integrations.{name} needs {package} ({error}); install it with "
            "`pip install 'rankme_fast[train]'`"
        ) from error
