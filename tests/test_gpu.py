"""The same agreement checks on a CUDA device; skipped cleanly without one."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DTYPES,
    SPECTRA,
    TOLERANCE,
    condition_class,
    make_embeddings,
    reference_rankme,
    relative_error,
)

import rankme_fast as rf

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", SPECTRA)
@pytest.mark.parametrize("shape", [(1000, 130), (70, 300), (1, 17)])
def test_cuda_exact_matches_svd(dtype, kind, shape, rng):
    z = torch.from_numpy(make_embeddings(kind, *shape, seed=int(rng.integers(1 << 31)))).to(dtype)
    value = rf.rankme(z.cuda())
    assert relative_error(value, reference_rankme(z)) <= TOLERANCE[condition_class(z)]


def test_cuda_state_stays_on_device_and_streams(rng):
    z = torch.from_numpy(rng.standard_normal((900, 64))).float().cuda()
    acc = rf.GramAccumulator(centered=True)
    for batch in z.split(100):
        acc.update(batch)
    assert acc.device.type == "cuda" and acc.last_backend == "torch"
    assert "cpu" in acc.passed_over
    assert relative_error(acc.rankme(), reference_rankme(z.cpu(), centered=True)) <= 1e-9


def test_cuda_runtime_visible_to_native_module():
    if rf._C is None or not rf._C.cuda_compiled:
        pytest.skip("rankme_fast._C built without CUDA")
    assert rf._C.cuda_device_count() >= 1
