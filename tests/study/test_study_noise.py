"""The study's calls on RankMe differences: a paired difference made from two runs' recorded
jackknife values is rf.compare's on the same clips; runs recorded without them are left out."""

from __future__ import annotations

import numpy as np
import pytest
from common import make_embeddings

import rankme_fast as rf
from rankme_fast.study.study_noise import adjacent_calls, paired_difference


def _record(name: str, clips: np.ndarray) -> dict:
    estimate = rf.rankme(clips, ci=0.95, groups=np.arange(len(clips)))  # as the study's runner records it
    return {"name": name, "clip_rankme": estimate.value, "clip_rankme_left_out": list(estimate.left_out),
            "clip_rankme_count": len(clips)}  # fmt: skip


def test_a_paired_difference_from_records_is_rf_compare():
    clips = make_embeddings("power_law", 600, 16, seed=5)
    other = clips @ np.diag(np.linspace(1.0, 0.8, 16))
    call = paired_difference(_record("a", clips), _record("b", other))
    expected = rf.compare(clips, other, groups=np.arange(600)).difference
    assert call["difference"] == pytest.approx(expected.value, rel=1e-12)
    assert call["interval"] == pytest.approx(list(expected.interval), rel=1e-10)
    assert call["beyond_noise"] == expected.excludes(0.0) and (call["a"], call["b"]) == ("a", "b")


def test_neighbours_are_called_and_runs_without_block_values_left_out():
    clips = make_embeddings("power_law", 600, 16, seed=6)
    noisy = clips + 0.05 * np.random.default_rng(6).standard_normal(clips.shape)
    records = [_record("a", clips), _record("b", noisy), {"name": "old", "clip_rankme": 3.0}]
    assert adjacent_calls(records) == [paired_difference(records[0], records[1])]
