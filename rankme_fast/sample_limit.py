"""The sample cap of the training-loop integrations: keep the first `max_samples` rows.

First-N rather than a reservoir: a reservoir has to keep its sampled rows (N x D) to swap
them out again, the very buffer the Gram state replaces. Draw the evaluation batches in a
shuffled order and the first N rows are a uniform sample, as in the RankMe paper (25 600).
"""

from __future__ import annotations

from typing import Any

from rankme_fast._checks import check_positive_int
from rankme_fast.distributed import world


def check_max_samples(max_samples: object) -> None:
    check_positive_int(max_samples, "max_samples", optional=True)


def local_share(max_samples: int | None, group: Any = None) -> int | None:
    """This process's part of a cap counted over all processes of `group`: with W
    processes, rank r keeps max_samples // W rows, plus one for r < max_samples % W."""
    if max_samples is None:
        return None
    rank, size = world(group)
    return max_samples // size + (1 if rank < max_samples % size else 0)


def room_left(max_samples: int | None, seen: int, group: Any = None) -> int | None:
    """How many more rows this process may take (None: no cap)."""
    share = local_share(max_samples, group)
    return None if share is None else max(share - seen, 0)
