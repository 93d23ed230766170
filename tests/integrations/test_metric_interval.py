"""RankMeMetric(ci=...): block states fed a batch each in turn, logged with the jackknife's
standard error and interval, saved and merged block by block; bad input changes nothing."""

from __future__ import annotations

import math

import pytest
import torch
from common import make_embeddings

import rankme_fast as rf

pytest.importorskip("torchmetrics")
from rankme_fast.integrations import RankMeMetric

BLOCKS, BATCH = 6, 40


def _batches(centered: bool) -> list[torch.Tensor]:
    z = make_embeddings("large_mean" if centered else "power_law", 600, 16, seed=11)
    return list(torch.from_numpy(z).split(BATCH))


def _fed(metric: RankMeMetric, batches: list[torch.Tensor]) -> RankMeMetric:
    for batch in batches:
        metric.update(batch)
    return metric


@pytest.mark.parametrize("centered", [False, True])
def test_logged_interval_is_the_accumulator_s(centered):
    batches = _batches(centered)
    metric = _fed(RankMeMetric(centered=centered, ci=0.9, blocks=BLOCKS, metrics=["rankme", "stable_rank"]), batches)
    reference = rf.GramAccumulator(centered=centered, blocks=BLOCKS)
    for batch in batches:
        reference.update(batch)
    logged = metric.compute()
    assert sorted(logged) == sorted(f"{name}{suffix}" for name in ("rankme", "stable_rank")
                                    for suffix in ("", "_se", "_low", "_high"))  # fmt: skip
    for name in ("rankme", "stable_rank"):
        expected = reference.estimate(name, ci=0.9)
        assert float(logged[name]) == pytest.approx(expected.value, rel=1e-12)
        assert float(logged[f"{name}_se"]) == pytest.approx(expected.standard_error, rel=1e-9)
        assert (float(logged[f"{name}_low"]), float(logged[f"{name}_high"])) == pytest.approx(expected.interval)
    assert metric.count.tolist() == list(reference.block_counts) and int(metric.count.sum()) == 600
    assert float(logged["rankme"]) == pytest.approx(rf.rankme(torch.cat(batches), centered=centered), rel=1e-9)


def test_saved_blocks_resume_where_they_stopped():
    batches = _batches(False)
    whole = _fed(RankMeMetric(ci=0.95, blocks=BLOCKS), batches)
    first = _fed(RankMeMetric(ci=0.95, blocks=BLOCKS), batches[:7])
    resumed = RankMeMetric(ci=0.95, blocks=BLOCKS)
    resumed.load_state_dict(first.state_dict())
    _fed(resumed, batches[7:])
    assert torch.equal(resumed.count, whole.count)
    assert float(resumed.compute()["rankme_se"]) == pytest.approx(float(whole.compute()["rankme_se"]), rel=1e-9)
    with pytest.raises(ValueError, match="lead with that dimension"):
        RankMeMetric(ci=0.95, blocks=4).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="blocks"):
        whole.merge_state(RankMeMetric(ci=0.95, blocks=4))


def test_merged_metrics_hold_all_rows_block_by_block():
    batches = _batches(True)
    a = _fed(RankMeMetric(centered=True, ci=0.95, blocks=BLOCKS), batches[:8])
    b = _fed(RankMeMetric(centered=True, ci=0.95, blocks=BLOCKS), batches[8:])
    a.merge_state(b)
    expected = rf.GramAccumulator(centered=True, blocks=BLOCKS)
    for index, batch in enumerate(batches):
        expected.update(batch, block=index % BLOCKS if index < 8 else (index - 8) % BLOCKS)
    assert float(a.compute()["rankme_se"]) == pytest.approx(expected.rankme(ci=0.95).standard_error, rel=1e-9)


def test_one_batch_gives_the_value_and_nan_bounds_with_a_warning():
    metric = _fed(RankMeMetric(ci=0.95), _batches(False)[:1])
    with pytest.warns(RuntimeWarning, match="rows in 1 of 10 blocks"):
        logged = metric.compute()
    assert float(logged["rankme"]) == pytest.approx(rf.rankme(_batches(False)[0]), rel=1e-12)
    assert math.isnan(float(logged["rankme_se"])) and math.isnan(float(logged["rankme_low"]))
    metric.reset()
    _fed(metric, _batches(False)[:3])
    assert metric.count.tolist()[:4] == [BATCH, BATCH, BATCH, 0]  # after a reset the blocks start again at 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"ci": 1.5}, "confidence level"), ({"ci": 0.95, "blocks": 1}, "blocks >= 2"),
    ({"ci": 0.95, "blocks": 0}, "blocks"),
])  # fmt: skip
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RankMeMetric(**kwargs)
