"""Which of the study's RankMe differences are beyond noise: every run's clip RankMe carries
the delete-one-block jackknife values of its clips (the same clips, in the same blocks, for
every encoder), so two runs' difference has a paired interval from their left-out values
alone. Adjacent pairs are called: the pretrained ladder in order of clip RankMe, each sweep
and each axis of the grid in order of its variable."""

from __future__ import annotations

import warnings
from itertools import pairwise
from typing import Any

import numpy as np

from rankme_fast.uncertainty import jackknife

LEVEL = 0.95


def paired_difference(a: dict[str, Any], b: dict[str, Any], level: float = LEVEL) -> dict[str, Any] | None:
    """Clip RankMe of run a minus run b with its paired jackknife interval, or None when either
    run was evaluated without block values (a run recorded before they were kept)."""
    left_a, left_b = a.get("clip_rankme_left_out"), b.get("clip_rankme_left_out")
    if not left_a or not left_b or len(left_a) != len(left_b):
        return None
    with warnings.catch_warnings():  # the clip count against D is reported with each run
        warnings.simplefilter("ignore", RuntimeWarning)
        difference = jackknife("clip RankMe a − b", a["clip_rankme"] - b["clip_rankme"],
                               np.subtract(left_a, left_b), count=int(a.get("clip_rankme_count", 0)), dim=0,
                               level=level)  # fmt: skip
    return {"a": a["name"], "b": b["name"], "difference": difference.value,
            "standard_error": difference.standard_error, "interval": list(difference.interval), "level": level,
            "beyond_noise": difference.excludes(0.0)}  # fmt: skip


def adjacent_calls(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paired difference of each run with the next one in `rows`' order."""
    calls = [paired_difference(a, b) for a, b in pairwise(rows)]
    return [call for call in calls if call is not None]


def noise_calls(records: list[dict[str, Any]], groups: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The ladder's adjacent differences (by clip RankMe, highest first) and each group's (rows
    already in the order of its variable)."""
    ladder = sorted((r for r in records if r["family"] == "pretrained"), key=lambda r: -r["clip_rankme"])
    return {"level": LEVEL, "ladder": adjacent_calls(ladder),
            "groups": {name: adjacent_calls(rows) for name, rows in groups.items()}}  # fmt: skip
