"""Error bars from block states: exact totals, the jackknife as defined, intervals that cover
the Monte Carlo truth, paired comparisons, growth with N, and bad input that changes nothing."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from common import SPECTRA, TOLERANCE, condition_class, make_embeddings, reference_rankme, relative_error

import rankme_fast as rf
from rankme_fast.spectrum import METRIC_NAMES
from rankme_fast.uncertainty import blocks_of, student_t_quantile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_coverage import SPECTRA as POPULATIONS
from bench_coverage import Population, cell

K = 10


def _blocked(z: np.ndarray, centered: bool = False, blocks: int = K, batch: int = 37) -> rf.GramAccumulator:
    acc = rf.GramAccumulator(centered=centered, blocks=blocks)
    for start in range(0, len(z), batch):
        acc.update(z[start : start + batch])
    return acc


@pytest.mark.parametrize("kind", SPECTRA)
@pytest.mark.parametrize("centered", [False, True])
def test_merged_blocks_give_the_rankme_of_all_rows(kind, centered):
    z = make_embeddings(kind, 700, 24, seed=3)
    acc = _blocked(z, centered)
    reference = reference_rankme(z, centered)
    bound = TOLERANCE[condition_class(z, centered)]
    assert acc.count == 700 and sum(acc.block_counts) == 700 and min(acc.block_counts) > 0
    assert relative_error(acc.rankme(), reference) < bound
    assert relative_error(acc.rankme(ci=0.95).value, reference) < bound
    assert relative_error(rf.rankme(z, centered=centered, ci=0.95).value, reference) < bound
    whole = rf.GramAccumulator(centered=centered).update(z).spectrum()
    spectra = acc.block_spectra()
    for name in METRIC_NAMES if centered else [m for m in METRIC_NAMES if m != "nesum"]:
        assert spectra.estimate(name).value == pytest.approx(whole.metric(name), rel=bound)


def test_the_jackknife_is_the_textbook_one_over_left_out_blocks():
    """SE, bias correction and interval from the metric of the rows without each block, each
    computed here by a float64 SVD of exactly those rows."""
    z = make_embeddings("power_law", 400, 12, seed=5)
    estimate = rf.rankme(z, ci=0.9, blocks=8)  # rows 50k .. 50k + 49 in block k
    left_out = np.array([reference_rankme(np.delete(z, slice(50 * k, 50 * k + 50), axis=0)) for k in range(8)])
    np.testing.assert_allclose(estimate.left_out, left_out, rtol=1e-10)
    se = math.sqrt(7 / 8 * np.sum((left_out - left_out.mean()) ** 2))
    assert estimate.standard_error == pytest.approx(se, rel=1e-9)
    assert estimate.bias_corrected == pytest.approx(8 * reference_rankme(z) - 7 * left_out.mean(), rel=1e-10)
    half = 1.894578605 * se  # t quantile, 7 degrees of freedom, 0.95
    assert estimate.interval == pytest.approx((estimate.value - half, estimate.value + half), rel=1e-8)
    assert (estimate.blocks, estimate.count, estimate.level) == (8, 400, 0.9)
    assert float(estimate) == estimate.value and "90 % interval" in str(estimate)


@pytest.mark.parametrize(("probability", "df", "expected"), [
    (0.975, 1, 12.70620474), (0.975, 9, 2.262157163), (0.995, 4, 4.604094871), (0.95, 30, 1.697260887),
    (0.025, 9, -2.262157163), (0.5, 3, 0.0),
])  # fmt: skip
def test_student_t_quantiles(probability, df, expected):
    assert student_t_quantile(probability, df) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("kind", POPULATIONS)
@pytest.mark.parametrize("multiple", [2, 20])
def test_intervals_cover_the_monte_carlo_truth(kind, multiple):
    """95 % intervals of RankMe and of a paired difference cover the mean over 1000 draws in
    92-98 % of 300 fresh draws, with the standard error within 20 % of the draws' spread (the
    full table, N from D/2 to 20·D: bench/bench_coverage.py)."""
    population = Population(kind, 16)
    result = cell(population, multiple * 16, draws=300, truth_draws=1000, seed=POPULATIONS.index(kind))
    assert 0.92 <= result["coverage"] <= 0.98, result
    assert 0.92 <= result["difference_coverage"] <= 0.98, result
    assert abs(result["se_over_sd"] - 1) <= 0.2, result
    assert abs(result["difference_se_over_sd"] - 1) <= 0.2, result


def test_below_two_rows_per_dimension_the_interval_warns():
    z = make_embeddings("power_law", 30, 24, seed=1)
    with pytest.warns(RuntimeWarning, match="conservative"):
        rf.rankme(z, ci=0.95)
    with pytest.warns(RuntimeWarning, match="per block"):
        rf.rankme(make_embeddings("power_law", 20, 4, seed=1), ci=0.95)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rf.rankme(make_embeddings("power_law", 48, 24, seed=1), ci=0.95)


def test_compare_says_above_only_when_the_interval_excludes_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32))
    wide, narrow = x * np.arange(1, 33) ** -0.3, x * np.arange(1, 33) ** -0.6
    above = rf.compare(wide, narrow)
    assert above.difference.interval[0] > 0 and above.conclusion.startswith("a is above b")
    assert rf.compare(narrow, wide).conclusion.startswith("a is below b")
    assert above.difference.value == pytest.approx(above.a.value - above.b.value, rel=1e-12)
    # the same population twice, a fixed rotation apart: the same RankMe up to noise
    rotation = np.linalg.qr(rng.standard_normal((32, 32)))[0]
    other = rng.standard_normal((3000, 32)) * np.arange(1, 33) ** -0.3 @ rotation
    assert "less than their noise" in rf.compare(wide, other).conclusion
    # accumulators fed alike pair up; so do block spectra
    acc_a, acc_b = _blocked(wide), _blocked(narrow)
    paired = rf.compare(acc_a, acc_b.block_spectra())
    assert paired.difference.value == pytest.approx(above.difference.value, rel=1e-9)


def test_groups_keep_each_key_in_one_block():
    z = make_embeddings("power_law", 600, 16, seed=2)
    files = np.repeat([f"clip{i:03d}.wav" for i in range(60)], 10)
    acc = rf.GramAccumulator(blocks=K)
    acc.update(z[:250], groups=files[:250]).update(z[250:], groups=files[250:])
    assigned = blocks_of(files, K)
    assert all(len(set(assigned[files == name])) == 1 for name in set(files))
    assert acc.block_counts == tuple(np.bincount(assigned, minlength=K)) and sum(acc.block_counts) == 600
    assert list(blocks_of(np.array([3, -1, 12]), K)) == [3, 9, 2] and blocks_of(["x"], K)[0] == blocks_of(["x"], K)[0]
    one_shot = rf.rankme(z, groups=files, ci=0.95)
    assert one_shot.left_out == pytest.approx(acc.rankme(ci=0.95).left_out, rel=1e-10)
    assert rf.compare(z, z * 2.0, groups=files).difference.value == pytest.approx(0, abs=1e-9)


def test_growth_follows_the_cumulative_merge_and_says_when_rankme_still_rises():
    power = make_embeddings("power_law", 40 * 32, 32, seed=4)
    rising = _blocked(power[:70], batch=7).growth()
    assert rising.counts == tuple(range(7, 71, 7))
    assert rising.values[-1] == pytest.approx(reference_rankme(power[:70]), rel=1e-9)
    assert rising.still_rising and "still rising" in str(rising)
    many = make_embeddings("power_law", 20000, 8, seed=4)
    level = _blocked(many, batch=500).growth()
    assert not level.still_rising and level.plateau_determined and "no longer rising" in str(level)
    population = rf.metrics.rankme(np.arange(1, 9) ** -0.8)  # the singular values' large-N limit
    assert level.plateau_interval[0] - 0.01 <= population <= level.plateau_interval[1] + 0.01


def test_state_dict_merge_and_from_state_dict_keep_the_blocks(tmp_path):
    z = make_embeddings("large_mean", 500, 12, seed=6)
    first, second = _blocked(z[:259], centered=True), _blocked(z[259:], centered=True)  # 7 batches of 37
    path = tmp_path / "state.pt"
    torch.save(first.state_dict(), path)
    resumed = rf.GramAccumulator.from_state_dict(torch.load(path))
    assert resumed.blocks == K and resumed.block_counts == first.block_counts
    assert resumed.rankme(ci=0.95).left_out == pytest.approx(first.rankme(ci=0.95).left_out, rel=1e-12)
    for start in range(259, 500, 37):  # resuming goes on with the next block in turn
        resumed.update(z[start : start + 37])
    assert resumed.rankme(ci=0.95).left_out == pytest.approx(_blocked(z, centered=True).rankme(ci=0.95).left_out,
                                                                rel=1e-9)  # fmt: skip
    merged = rf.GramAccumulator(centered=True, blocks=K).merge(first).merge(second)
    assert merged.count == 500 and merged.rankme() == pytest.approx(reference_rankme(z, True), rel=1e-9)
    old = rf.GramAccumulator.from_state_dict(rf.GramAccumulator().update(z).state_dict())
    assert old.blocks == 1


def test_bad_input_raises_and_changes_nothing():
    z = make_embeddings("power_law", 200, 8, seed=7)
    with pytest.raises(ValueError, match="blocks >= 2"):
        rf.rankme(z, ci=0.95, blocks=1)
    with pytest.raises(ValueError, match="blocks"):
        rf.GramAccumulator(blocks=0)
    with pytest.raises(ValueError, match="confidence level"):
        rf.rankme(z, ci=95)
    acc = _blocked(z)
    before = (acc.block_counts, acc.state_dict()["block_fingerprints"], acc.gram().clone())
    with pytest.raises(ValueError, match="one key per row"):
        acc.update(z[:10], groups=["a"] * 9)
    with pytest.raises(ValueError, match="block must be"):
        acc.update(z[:10], block=K)
    with pytest.raises(ValueError, match="groups or block"):
        acc.update(z[:10], groups=range(10), block=1)
    with pytest.raises(ValueError, match="D=9"):
        acc.update(np.ones((4, 9)), groups=range(4))
    dirty = z[:10].copy()
    dirty[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        acc.update(dirty, groups=range(10))  # rows 0-6 would go to other blocks than row 7: none is added
    assert acc.block_counts == before[0] and acc.state_dict()["block_fingerprints"] == before[1]
    assert torch.equal(acc.gram(), before[2])
    with pytest.raises(ValueError, match="blocks=K"):
        rf.GramAccumulator().update(z, groups=range(200))
    with pytest.raises(ValueError, match="blocks=K"):
        rf.GramAccumulator().update(z).rankme(ci=0.95)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        rf.GramAccumulator(blocks=K).update(z).rankme(ci=0.95)  # one batch: one block holds rows
    with pytest.raises(ValueError, match="blocks=4 into"):
        acc.merge(rf.GramAccumulator(blocks=4).update(z))


def test_compare_refuses_sets_that_are_not_paired():
    z = make_embeddings("power_law", 300, 8, seed=8)
    with pytest.raises(ValueError, match="same rows"):
        rf.compare(z, z[:299])
    with pytest.raises(ValueError, match="split into blocks alike"):
        rf.compare(_blocked(z, batch=30), _blocked(z, batch=20))
    shuffled = rf.GramAccumulator(blocks=K)
    for start in range(0, 300, 30):
        shuffled.update(z[start : start + 30], block=(start // 30 + 1) % K)
    with pytest.raises(ValueError, match="split into blocks alike"):
        rf.compare(_blocked(z, batch=30), shuffled)
