"""Every bad input gets a clear ValueError/TypeError and leaves the state untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import CPU_BACKENDS

import rankme_fast as rf


@pytest.fixture(params=CPU_BACKENDS)
def filled(request, rng):
    acc = rf.GramAccumulator(centered=True, backend=request.param).update(rng.standard_normal((30, 6)) + 2)
    return acc, acc.state_dict()


def _unchanged(acc, snapshot):
    state = acc.state_dict()
    assert state["count"] == snapshot["count"]
    torch.testing.assert_close(state["gram"], snapshot["gram"], rtol=0, atol=0)
    torch.testing.assert_close(state["mean"], snapshot["mean"], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        (np.ones(6), ValueError, "at least 2 dimensions"),
        (np.ones((3, 6), dtype=np.int64), TypeError, "dtype int64"),
        (torch.ones(3, 6, dtype=torch.int32), TypeError, "floating dtype"),
        (np.ones((3, 6), dtype=np.complex128), TypeError, "complex128"),
        (np.ones((3, 6), dtype=bool), TypeError, "dtype bool"),
        ([[1.0] * 6], TypeError, "torch.Tensor or numpy.ndarray"),
        (np.ones((3, 5)), ValueError, "D=5 but this accumulator has dim=6"),
        (np.ones((0, 6)), ValueError, "empty"),
        (np.ones((3, 0)), ValueError, "D is 0"),
    ],
)
def test_rejected_batches(filled, batch, error, message):
    acc, snapshot = filled
    with pytest.raises(error, match=message):
        acc.update(batch)
    _unchanged(acc, snapshot)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_rows_are_counted_and_rejected(filled, dtype, bad):
    acc, snapshot = filled
    z = torch.randn(10, 6).to(dtype)
    z[2, 3] = bad
    z[7, 0] = bad
    with pytest.raises(ValueError, match="2 of 10 rows holding NaN or Inf"):
        acc.update(z)
    _unchanged(acc, snapshot)


def test_nonfinite_drop_policy(rng):
    z = rng.standard_normal((10, 4))
    z[3, 1] = np.nan
    acc = rf.GramAccumulator(nonfinite="drop").update(z)
    clean = rf.GramAccumulator().update(np.delete(z, 3, axis=0))
    assert acc.count == 9
    torch.testing.assert_close(acc.gram(), clean.gram())


def test_whole_matrix_nonfinite_rejected():
    z = np.ones((3, 10))  # N < D route
    z[1, 1] = np.inf
    with pytest.raises(ValueError, match="1 of 3 rows"):
        rf.rankme(z)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "approximate"}, "precision must be one of"),
        ({"backend": "gpu9000"}, "unknown backend"),
        ({"dim": 0}, "dim must be a positive integer"),
        ({"dim": 2.5}, "dim must be a positive integer"),
        ({"nonfinite": "ignore"}, "nonfinite must be one of"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rf.GramAccumulator(**kwargs)


def test_bad_eps(rng):
    with pytest.raises(ValueError, match="eps must be"):
        rf.rankme(rng.standard_normal((5, 3)), eps=-1.0)


def test_all_zero_embeddings_have_no_rankme():
    with pytest.raises(ValueError, match="all-zero"):
        rf.rankme(np.zeros((4, 3)))


def test_spectrum_of_empty_accumulator():
    with pytest.raises(ValueError, match="nothing has been accumulated"):
        rf.GramAccumulator(dim=3).spectrum()


def test_merge_mismatches(rng):
    a = rf.GramAccumulator().update(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match="dim=4 into dim=3"):
        a.merge(rf.GramAccumulator().update(rng.standard_normal((4, 4))))
    with pytest.raises(ValueError, match="centered=True"):
        a.merge(rf.GramAccumulator(centered=True).update(rng.standard_normal((4, 3))))
    with pytest.raises(TypeError, match="GramAccumulator"):
        a.merge(np.ones((3, 3)))
    assert a.count == 4


def test_unavailable_backend_for_input_is_explained():
    with pytest.raises(ValueError, match="backend 'cpu' cannot take this input"):
        rf.GramAccumulator(backend="cpu", device="meta").update(torch.ones(2, 2))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(format="other"), "not a GramAccumulator state"),
        (lambda s: s.pop("mean"), "missing keys"),
        (lambda s: s.update(count=-1), "non-negative integer"),
        (lambda s: s.update(precision="fast-ish"), "precision must be one of"),
        (lambda s: s.update(gram=s["gram"].float()), "float64"),
        (lambda s: s.update(gram=s["gram"][:2, :2]), "shape"),
        (lambda s: s["gram"].__setitem__((0, 1), 123.0), "not symmetric"),
        (lambda s: s["gram"].__setitem__((1, 1), float("nan")), "NaN or Inf"),
        (lambda s: s["gram"].__setitem__((2, 2), -1.0), "negative diagonal"),
        (lambda s: s.update(mean=None), "missing its mean"),
        (lambda s: s.update(mean=torch.zeros(2, dtype=torch.float64)), "finite vector of length 3"),
        (lambda s: s.update(centered="yes"), "must be a bool"),
    ],
)
def test_from_state_dict_validates(rng, mutate, message):
    state = rf.GramAccumulator(centered=True).update(rng.standard_normal((8, 3))).state_dict()
    mutate(state)
    with pytest.raises((ValueError, TypeError), match=message):
        rf.GramAccumulator.from_state_dict(state)


def test_from_state_dict_rejects_non_mapping():
    with pytest.raises(TypeError, match="mapping"):
        rf.GramAccumulator.from_state_dict([1, 2])
