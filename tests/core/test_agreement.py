"""Every device, backend, input dtype and spectrum against float64 SVD (ARCHITECTURE.md, "Numerics")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import (
    CPU_BACKENDS,
    DEVICE_BACKENDS,
    DEVICES,
    DTYPES,
    SPECTRA,
    TOLERANCE,
    as_dtype,
    condition_class,
    make_embeddings,
    on_device,
    reference_rankme,
    relative_error,
    skip_unless_takes,
    tolerance,
)

import rankme_fast as rf

SHAPES = [(700, 37), (300, 130), (1, 9), (20, 67), (129, 64)]


@pytest.mark.parametrize(("device", "backend"), DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", SPECTRA)
@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_rankme_matches_svd(device, backend, dtype, kind, precision, rng):
    n, d = SHAPES[rng.integers(len(SHAPES))]
    z = as_dtype(make_embeddings(kind, n, d, seed=int(rng.integers(1 << 31))), dtype)
    skip_unless_takes(backend, z.to(device), precision)
    value = rf.rankme(z.to(device), backend=backend, precision=precision)
    assert relative_error(value, reference_rankme(z)) <= tolerance(z, precision), (n, d)


@pytest.mark.parametrize(("device", "backend"), DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(513, 100), (64, 200), (1, 5), (5, 1), (1000, 1)])
def test_centered_matches_svd_of_centred_data(device, backend, dtype, shape, rng):
    z = as_dtype(make_embeddings("large_mean", *shape, seed=int(rng.integers(1 << 31))), dtype)
    skip_unless_takes(backend, z.to(device))
    if shape[0] == 1:  # one centred row is all zeros: RankMe is undefined
        with pytest.raises(ValueError, match="undefined"):
            rf.rankme(z.to(device), backend=backend, centered=True)
        return
    value = rf.rankme(z.to(device), backend=backend, centered=True)
    assert relative_error(value, reference_rankme(z, centered=True)) <= 1e-5


@pytest.mark.parametrize(("device", "backend"), DEVICE_BACKENDS)
def test_centered_stream_is_exact_when_mean_dwarfs_spread(device, backend, rng):
    """|mean| / std = 1e6: a naive G - s sᵀ/n in float64 would lose every digit."""
    spread = rng.standard_normal((4000, 24)) * np.linspace(1.0, 3.0, 24)
    z = spread + 1e6
    skip_unless_takes(backend, on_device(z, device))
    acc = rf.GramAccumulator(centered=True, backend=backend)
    for batch in np.array_split(z, 7):
        acc.update(on_device(batch, device))
    assert acc.device.type == device  # the state stays where the embeddings are
    got = acc.spectrum().rankme()
    assert relative_error(got, reference_rankme(spread, centered=True)) <= 1e-7
    expected_cov = np.cov(spread, rowvar=False) * (len(z) - 1)
    np.testing.assert_allclose(acc.gram().cpu().numpy(), expected_cov, rtol=1e-6, atol=1e-6 * expected_cov.max())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("offset", [0.0, 3.0, 1e4])
def test_uncentered_from_a_centred_state_equals_the_raw_stream(backend, offset, rng):
    """One pass gives both: ZᵀZ = scatter + n·μμᵀ agrees with the accumulated ZᵀZ to a few
    float64 roundings of its norm, also where the mean dwarfs the spread, and its RankMe is as
    close to the SVD's as the accumulated one's (both sit at the Gram route's floor, which a
    mean 1e4 times the spread lifts to ~1e-8)."""
    z = rng.standard_normal((3000, 40)) * np.geomspace(1e-3, 1.0, 40) + offset * rng.standard_normal(40)
    centred, raw = rf.GramAccumulator(centered=True, backend=backend), rf.GramAccumulator(backend=backend)
    for batch in np.array_split(z, 5):
        centred.update(batch)
        raw.update(batch)
    derived = centred.uncentered()
    assert not derived.centered and derived.count == raw.count == 3000 and centred.centered
    exact = torch.from_numpy(z.T @ z)
    norm = float(torch.linalg.matrix_norm(exact, ord=2))
    assert float((derived.gram() - raw.gram()).abs().max()) <= 1e-14 * norm
    assert float((derived.gram() - exact).abs().max()) <= 1e-13 * norm
    expected, floor = reference_rankme(z), 1e-10 if offset < 10 else 1e-6
    assert relative_error(raw.rankme(), expected) <= floor  # the route's own floor
    assert relative_error(derived.rankme(), expected) <= floor
    with pytest.raises(ValueError, match="centred accumulator"):
        raw.uncentered()
    assert rf.GramAccumulator(centered=True).uncentered().count == 0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_wide_input_uses_top_min_n_d_values(backend, dtype, rng):
    """N < D: N x N route for a whole Z, and a stream keeps only min(N, D) eigenvalues."""
    z = as_dtype(rng.standard_normal((40, 300)), dtype)
    whole = rf.spectrum(z, backend=backend)
    assert whole.eigenvalues.shape == (40,)
    stream = rf.GramAccumulator(backend=backend)
    for batch in z.split(13):
        stream.update(batch)
    streamed = stream.spectrum()
    assert streamed.eigenvalues.shape == (40,)
    expected = reference_rankme(z)
    assert relative_error(whole.rankme(), expected) <= 1e-9
    assert relative_error(streamed.rankme(), expected) <= 1e-5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_wide_centered(backend, rng):
    z = rng.standard_normal((30, 200)) + 7.0  # rank 29 once centred: rank-deficient class
    value = rf.rankme(z, centered=True, backend=backend)
    assert relative_error(value, reference_rankme(z, True)) <= TOLERANCE[condition_class(z, centered=True)]


@pytest.mark.parametrize(("device", "backend"), DEVICE_BACKENDS)
def test_collapsed_embeddings_within_design_bound(device, backend, rng):
    """The collapsed case of ARCHITECTURE.md, "Numerics", at reduced size: rank-32 collapse,
    D=256, exact route ≤ 1e-5."""
    z = (rng.standard_normal((4096, 32)) @ rng.standard_normal((32, 256))).astype(np.float32)
    skip_unless_takes(backend, on_device(z, device))
    assert relative_error(rf.rankme(on_device(z, device), backend=backend), reference_rankme(z)) <= 1e-5


def test_bfloat16_numpy_input_via_ml_dtypes(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    z = rng.standard_normal((200, 30)).astype(ml_dtypes.bfloat16)
    expected = reference_rankme(z.astype(np.float64))
    assert relative_error(rf.rankme(z), expected) <= 1e-9


def test_spectrum_fields(rng):
    z = torch.from_numpy(rng.standard_normal((100, 20)))
    spec = rf.spectrum(z)
    assert isinstance(spec, rf.Spectrum)
    assert spec.count == 100 and spec.dim == 20 and not spec.centered
    assert spec.eigenvalues.dtype == np.float64
    assert np.all(np.diff(spec.eigenvalues) <= 0)
    np.testing.assert_allclose(spec.singular_values, np.linalg.svd(z.numpy(), compute_uv=False), rtol=1e-10)


_SWITCHED = """
import sys, torch, rankme_fast as rf
exec(sys.argv[1])
z = torch.randn(500, 64, generator=torch.Generator().manual_seed(0)) + 3.0
fast, exact = (rf.GramAccumulator(precision=p, backend="torch").update(z).gram() for p in ("fast", "exact"))
print(bool(torch.equal(fast, exact)))
"""


@pytest.mark.parametrize(
    "switch",
    [
        "pass",
        "torch.set_float32_matmul_precision('medium')",
        "torch.backends.mkldnn.matmul.fp32_precision = 'bf16'",
        "torch.backends.fp32_precision = 'tf32'",
        "torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.mkldnn.matmul.fp32_precision = 'tf32'",
    ],
)
def test_torch_fast_mode_multiplies_in_float64_when_float32_products_are_reduced(switch):
    """torch's process-wide switches may turn float32 products into TF32 or bfloat16 ones, which
    the fast mode's bound does not cover: the torch backend then takes the float64 route. (In a
    child process: the switches are global, and some combinations make torch refuse to report
    them.)"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SWITCHED, switch], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == ("False" if switch == "pass" else "True")


@pytest.mark.skipif("cuda" not in DEVICES, reason="no CUDA device")
def test_auto_takes_the_cuda_kernel_for_exact_gpu_input(rng):
    z = torch.from_numpy(rng.standard_normal((700, 90))).float().cuda()
    acc = rf.GramAccumulator().update(z)
    assert acc.last_backend == ("cuda" if rf.available_backends()["cuda"] is None else "torch")
    assert "cpu" in acc.not_chosen and acc.device.type == "cuda"
    assert relative_error(acc.rankme(), reference_rankme(z.cpu())) <= 1e-9
