"""Streaming equals one-shot, merge is associative, state_dict round-trips (property tests)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from common import CPU_BACKENDS, DTYPES, reference_rankme, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

import rankme_fast as rf

SETTINGS = settings(max_examples=25, deadline=None)


def _splits(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = sorted({0, n, *[c % (n + 1) for c in cuts]})
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


@SETTINGS
@given(
    n=st.integers(1, 300),
    d=st.integers(1, 70),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    backend=st.sampled_from(CPU_BACKENDS),
    centered=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_batch_splits_equal_one_shot(n, d, cuts, backend, centered, seed):
    z = np.random.default_rng(seed).standard_normal((n, d)) + 3.0
    one_shot = rf.GramAccumulator(centered=centered, backend=backend).update(z)
    stream = rf.GramAccumulator(centered=centered, backend=backend)
    for a, b in _splits(n, cuts):
        stream.update(z[a:b])
    assert stream.count == one_shot.count == n
    scale = max(1.0, float(one_shot.gram().abs().max()))
    torch.testing.assert_close(stream.gram(), one_shot.gram(), rtol=0, atol=1e-11 * scale)
    if centered:
        torch.testing.assert_close(stream.mean, one_shot.mean, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(
    sizes=st.lists(st.integers(1, 60), min_size=3, max_size=3),
    d=st.integers(1, 40),
    centered=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_merge_is_associative(sizes, d, centered, seed):
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal((n, d)) * 2 + 5 for n in sizes]

    def acc(z):
        return rf.GramAccumulator(centered=centered).update(z)

    left = acc(parts[0]).merge(acc(parts[1])).merge(acc(parts[2]))
    right = acc(parts[0]).merge(acc(parts[1]).merge(acc(parts[2])))
    whole = acc(np.concatenate(parts))
    for merged in (left, right):
        assert merged.count == whole.count
        scale = float(whole.gram().abs().max())
        torch.testing.assert_close(merged.gram(), whole.gram(), rtol=0, atol=1e-11 * scale)


def test_merge_into_empty_and_with_empty(rng):
    z = rng.standard_normal((50, 8))
    full = rf.GramAccumulator().update(z)
    empty = rf.GramAccumulator()
    empty.merge(full)
    torch.testing.assert_close(empty.gram(), full.gram())
    before = full.gram()
    full.merge(rf.GramAccumulator())
    torch.testing.assert_close(full.gram(), before)
    assert full.count == 50


@pytest.mark.parametrize("centered", [False, True])
def test_merge_with_itself_doubles(centered, rng):
    z = rng.standard_normal((40, 6)) + 1
    acc = rf.GramAccumulator(centered=centered).update(z)
    acc.merge(acc)
    twice = rf.GramAccumulator(centered=centered).update(np.concatenate([z, z]))
    torch.testing.assert_close(acc.gram(), twice.gram(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_state_dict_round_trip(tmp_path, centered, precision, rng):
    z = rng.standard_normal((90, 12))
    acc = rf.GramAccumulator(centered=centered, precision=precision).update(z[:50])
    path = tmp_path / "state.pt"
    torch.save(acc.state_dict(), path)
    restored = rf.GramAccumulator.from_state_dict(torch.load(path, weights_only=True))
    assert (restored.count, restored.dim, restored.centered, restored.precision) == (50, 12, centered, precision)
    restored.update(z[50:])
    acc.update(z[50:])
    torch.testing.assert_close(restored.gram(), acc.gram(), rtol=0, atol=0)
    assert restored.rankme() == acc.rankme()


def test_a_state_saved_in_the_first_format_still_loads(rng):
    """Version 1 of the saved state had no count of rows left out for NaN/Inf."""
    z = rng.standard_normal((300, 12))
    saved = rf.GramAccumulator(centered=True).update(z).state_dict()
    assert saved["version"] == 2
    first = {key: value for key, value in saved.items() if key != "nonfinite"} | {"version": 1}
    loaded = rf.GramAccumulator.from_state_dict(first)
    assert loaded.count == 300 and loaded.nonfinite_rows == 0
    assert loaded.rankme() == rf.GramAccumulator.from_state_dict(saved).rankme()


def test_state_dict_of_empty_accumulator():
    restored = rf.GramAccumulator.from_state_dict(rf.GramAccumulator(dim=4).state_dict())
    assert restored.count == 0 and restored.dim == 4


def test_reset_keeps_options(rng):
    acc = rf.GramAccumulator(centered=True).update(rng.standard_normal((20, 5)))
    acc.reset()
    assert acc.count == 0 and acc.dim == 5
    z = rng.standard_normal((30, 5))
    acc.update(z)
    assert relative_error(acc.rankme(), reference_rankme(z, centered=True)) <= 1e-9


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_frame_level_input_is_flattened(dtype, rng):
    frames = torch.from_numpy(rng.standard_normal((4, 25, 16))).to(dtype)
    acc = rf.GramAccumulator().update(frames)
    assert acc.count == 100
    assert relative_error(acc.rankme(), reference_rankme(frames)) <= 1e-9


def test_single_rows_stream(rng):
    z = rng.standard_normal((10, 30))
    acc = rf.GramAccumulator()
    for row in z:
        acc.update(row[None])
    spec = acc.spectrum()
    assert spec.eigenvalues.shape == (10,)
    assert relative_error(spec.rankme(), reference_rankme(z)) <= 1e-5


def test_backend_report(rng):
    acc = rf.GramAccumulator().update(rng.standard_normal((10, 3)))
    assert acc.last_backend in CPU_BACKENDS
    assert set(rf.available_backends()) >= {"cpu", "torch"}
