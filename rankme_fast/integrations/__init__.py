"""RankMe inside training loops.

- `RankMeMetric`: a torchmetrics Metric (needs torchmetrics: `pip install 'rankme_fast[train]'`)
- `RankMeCallback`: a Lightning callback logging a layer's RankMe (needs lightning too)
- `RankMeRecorder`: a forward hook / context manager for plain PyTorch loops
- `GramAccumulator.all_reduce` sums states across torch.distributed ranks (`distributed`)

The optional frameworks are imported on first use, so this package imports without them.
"""

from __future__ import annotations

from rankme_fast._extras import lazy_attributes
from rankme_fast.integrations.hooks import RankMeRecorder

__all__ = ["RankMeCallback", "RankMeMetric", "RankMeRecorder"]

__getattr__ = lazy_attributes(__name__, {
    "RankMeMetric": "rankme_fast.integrations.metric:RankMeMetric",
    "RankMeCallback": "rankme_fast.integrations.lightning:RankMeCallback",
})  # fmt: skip
