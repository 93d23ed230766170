"""Deflated SLQ RankMe (rankme_fast.slq) against RankMe of the dense float64 eigenvalues of the
same Gram: the spectra SLQ is meant for, the default budget, the error bar's coverage, and the
operator forms (Gram tensor, stream of batches)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

import rankme_fast as rf
from rankme_fast import slq

SLQ_SPECTRA = ["flat", "power_law_1", "power_law_2", "collapsed", "wishart"]


def _eigenvalues(kind: str, dim: int) -> np.ndarray:
    k = np.arange(1, dim + 1, dtype=np.float64)
    return {
        "flat": np.ones(dim),
        "power_law_1": 1 / k,
        "power_law_2": 1 / k**2,
        "collapsed": np.r_[np.ones(32), np.full(dim - 32, 1e-6)],  # rank 32 plus a floor
    }[kind]


@functools.lru_cache(maxsize=2)
def _eigenvectors(dim: int, seed: int) -> torch.Tensor:
    """A random orthogonal D x D matrix (dense eigenvectors), shared by the spectra of one seed."""
    rng = np.random.default_rng(seed)
    q, _ = torch.linalg.qr(torch.from_numpy(rng.standard_normal((dim, dim))))
    return q


def _gram(kind: str, dim: int, seed: int) -> torch.Tensor:
    """A Gram with the named spectrum and random (dense) eigenvectors."""
    if kind == "wishart":  # ZᵀZ by the library's exact SYRK: half the products of z.T @ z
        z = np.random.default_rng(seed).standard_normal((4 * dim, dim))
        return rf.GramAccumulator().update(z).gram()
    q = _eigenvectors(dim, seed)
    a = (q * torch.from_numpy(_eigenvalues(kind, dim))) @ q.T
    return (a + a.T) / 2


def _dense_rankme(gram: torch.Tensor) -> float:
    return rf.metrics.rankme(torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().numpy())


def _true_rankme(kind: str, gram: torch.Tensor) -> float:
    """RankMe of the Gram's eigenvalues: the ones it was built from (Q diag(λ) Qᵀ has them to
    a few float64 roundings of λ_max, far below the tolerances here), or a dense eigensolve."""
    if kind == "wishart":
        return _dense_rankme(gram)
    return rf.metrics.rankme(np.sqrt(_eigenvalues(kind, gram.shape[0])))


@pytest.mark.slow
def test_default_budget_is_within_half_a_percent_and_the_bar_covers_the_truth():
    covered = trials = 0
    worst = 0.0
    for dim, seeds in ((1024, range(4)), (2048, range(1)), (4096, range(1))):
        for kind in SLQ_SPECTRA:
            for seed in seeds:
                gram = _gram(kind, dim, seed)
                truth = _true_rankme(kind, gram)
                estimate = slq.estimate_rankme(gram, seed=seed)
                error = abs(estimate.value - truth) / truth
                worst = max(worst, error)
                assert error <= 5e-3, (kind, dim, seed, error)
                covered += abs(estimate.value - truth) <= estimate.error
                trials += 1
    assert covered >= 0.9 * trials, f"error bar covered the truth in {covered} of {trials} trials"
    assert worst > 0  # a real estimate, not the dense answer


def test_flat_spectrum_is_exact_and_budget_is_reported():
    estimate = slq.estimate_rankme(torch.eye(300, dtype=torch.float64) * 4.0, seed=1)
    assert estimate.value == pytest.approx(rf.metrics.rankme(np.full(300, 2.0)), rel=1e-12)
    assert float(estimate) == estimate.value and estimate.probes >= 16
    # A flat spectrum: the Krylov space stops after one block (two passes), and the two
    # quadratures at steps 4 and 8 agree.
    assert estimate.steps == 8 and estimate.passes == 2 + 8


def test_cost_is_passes_over_the_operator_not_an_eigensolve(rng):
    z = torch.from_numpy(rng.standard_normal((1500, 400)) * np.arange(1, 401) ** -0.5)
    calls = []

    def operator(v: torch.Tensor) -> torch.Tensor:
        calls.append(v.shape[1])
        return z.T @ (z @ v)

    budget = slq.Budget(deflation=32, probes=12, steps=30, krylov_blocks=4)
    estimate = slq.estimate_rankme(operator, dim=400, count=1500, budget=budget, seed=0)
    assert estimate.passes == len(calls) <= budget.krylov_blocks + 1 + budget.steps
    assert max(calls) <= 2 * budget.deflation // budget.krylov_blocks + 1  # D x b blocks, b << D
    assert abs(estimate.value - rf.rankme(z)) <= max(estimate.error, 5e-3 * estimate.value)


def test_float32_products_move_the_estimate_by_rounding_only():
    gram = _gram("power_law_1", 1024, seed=5)
    budget = slq.Budget.default(1024)
    exact = slq.estimate_rankme(gram, budget=budget, seed=4)
    fast = slq.estimate_rankme(gram, budget=dataclasses.replace(budget, float32_products=True), seed=4)
    assert fast.value == pytest.approx(exact.value, rel=1e-4)
    assert fast.value != exact.value


def test_packed_products_equal_plain_products(rng):
    z = torch.from_numpy(rng.standard_normal((700, 300)))
    gram = z.T @ z
    if slq._mkl_packed(gram.float(), 24) is None:
        pytest.skip("this torch has no MKL packed GEMM (the plain float32 product is used)")
    packed = slq._as_operator(gram, float32_products=True, width=24)
    for width in (24, 7, 32):  # packed for 24 columns, used for any
        v = torch.from_numpy(rng.standard_normal((300, width)))
        assert packed(v).dtype == torch.float64
        torch.testing.assert_close(packed(v), gram @ v, rtol=1e-5, atol=1e-5 * float((gram @ v).abs().max()))


def test_stream_operator_equals_the_gram_and_count_caps_the_values(rng):
    z = torch.from_numpy(rng.standard_normal((600, 150)))
    batches = list(z.split(128))
    budget = slq.Budget(deflation=16, probes=24, steps=40)
    from_gram = slq.estimate_rankme(z.T @ z, count=600, budget=budget, seed=3)
    from_stream = slq.estimate_rankme(slq.stream_operator(lambda: iter(batches)), dim=150, count=600, budget=budget,
                                      seed=3)  # fmt: skip
    assert from_stream.value == pytest.approx(from_gram.value, rel=1e-10)
    # N < D: the D - N zero eigenvalues are not counted (RankMe is over min(N, D) values).
    wide = torch.from_numpy(rng.standard_normal((40, 150)))
    estimate = slq.estimate_rankme(wide.T @ wide, count=40, budget=budget, seed=3)
    assert estimate.value == pytest.approx(rf.rankme(wide), rel=5e-3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        slq.estimate_rankme(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="dim="):
        slq.estimate_rankme(lambda v: v)
    with pytest.raises(ValueError, match="all-zero"):
        slq.estimate_rankme(torch.zeros(20, 20, dtype=torch.float64))
    with pytest.raises(ValueError, match="eps"):
        slq.estimate_rankme(torch.eye(5, dtype=torch.float64), eps=-1.0)
    with pytest.raises(ValueError, match="probes >= 1"):
        slq.estimate_rankme(torch.eye(5, dtype=torch.float64), budget=slq.Budget(deflation=1, probes=0, steps=4))


def test_accumulator_estimate_and_method_switch(rng):
    z = rng.standard_normal((3000, 200))
    acc = rf.GramAccumulator().update(z)
    exact = acc.rankme(method="exact")
    assert acc.rankme() == exact  # auto: far below the SLQ threshold
    estimate = acc.estimate_rankme(seed=2)
    assert abs(estimate.value - exact) <= max(estimate.error, 5e-3 * exact)
    assert acc.rankme(method="slq") == pytest.approx(acc.estimate_rankme().value, rel=1e-12)
    with pytest.raises(ValueError, match="method"):
        acc.rankme(method="svd")
    with pytest.raises(ValueError, match="nothing has been accumulated"):
        rf.GramAccumulator(dim=4).estimate_rankme()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_slq_estimate_and_lidar_run_on_the_gpu(rng):
    from rankme_fast import slq
    from rankme_fast.lidar import ClassScatterAccumulator

    z = torch.from_numpy(rng.standard_normal((2000, 300)))
    gram = z.T @ z
    on_cpu = slq.estimate_rankme(gram, count=2000, seed=4)
    on_gpu = slq.estimate_rankme(gram.cuda(), count=2000, seed=4)
    assert on_gpu.value == pytest.approx(on_cpu.value, rel=1e-8)
    labels = torch.from_numpy(rng.integers(0, 10, 2000))
    cpu_lidar = ClassScatterAccumulator(10).update(z, labels).lidar()
    gpu_lidar = ClassScatterAccumulator(10).update(z.cuda(), labels.cuda()).lidar()
    assert gpu_lidar == pytest.approx(cpu_lidar, rel=1e-9)


