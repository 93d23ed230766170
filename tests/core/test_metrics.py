"""The effective-rank family, the named RankMe conventions and rankme_many, each against a direct
float64 numpy computation written here from the published formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import SPECTRA, TOLERANCE, condition_class, make_embeddings

import rankme_fast as rf
from rankme_fast import metrics


def _svd(z: np.ndarray, centered: bool = False) -> np.ndarray:
    x = z - z.mean(axis=0) if centered else z
    return np.linalg.svd(x, compute_uv=False)


def _entropy_exp(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


@pytest.mark.parametrize("kind", SPECTRA)
def test_family_matches_direct_formulas(kind, rng):
    z = make_embeddings(kind, 300, 40, seed=int(rng.integers(1 << 31)))
    spec = rf.spectrum(z)
    sigma = _svd(z)
    lam = sigma**2
    p = sigma / sigma.sum()
    rel = TOLERANCE[condition_class(z)]  # the Gram route's floor on rank-deficient spectra
    assert spec.effective_rank() == pytest.approx(_entropy_exp(p), rel=rel)
    assert spec.participation_ratio() == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-9)
    assert spec.stable_rank() == pytest.approx(lam.sum() / lam.max(), rel=1e-9)
    # Rényi orders below 1 weigh the smallest values up, noise floor included: well-conditioned only.
    for alpha in (0.5, 2.0, 3.0) if rel == TOLERANCE["well_conditioned"] else (2.0, 3.0):
        direct = np.sum(p[p > 0] ** alpha) ** (1 / (1 - alpha))
        assert spec.renyi_effective_rank(alpha) == pytest.approx(direct, rel=max(rel, 1e-7))
    assert spec.renyi_effective_rank(1) == pytest.approx(spec.effective_rank(), rel=1e-12)
    assert spec.renyi_effective_rank(float("inf")) == pytest.approx(1 / p.max(), rel=rel)
    assert spec.numerical_rank() == np.linalg.matrix_rank(z)
    centred = rf.spectrum(z, centered=True)
    cov = np.linalg.eigvalsh(np.cov(z, rowvar=False))[::-1]
    assert centred.nesum() == pytest.approx(cov.sum() / cov[0], rel=1e-8)


@pytest.mark.parametrize(
    ("sigma", "expected"),
    [
        (np.array([3.0, 0.0, 0.0, 0.0]), 1.0),  # rank one
        (np.ones(7), 7.0),  # identity-like: all values equal
        (np.array([2.0, 2.0, 0.0]), 2.0),  # exact zeros are ignored
    ],
)
def test_limits(sigma, expected):
    lam = sigma**2
    assert metrics.effective_rank(sigma) == pytest.approx(expected, rel=1e-12)
    assert metrics.participation_ratio(lam) == pytest.approx(expected, rel=1e-12)
    assert metrics.stable_rank(lam) == pytest.approx(expected, rel=1e-12)
    for alpha in (0, 0.5, 2, float("inf")):
        assert metrics.renyi_effective_rank(sigma, alpha) == pytest.approx(expected, rel=1e-12)
    assert metrics.numerical_rank(sigma) == int(expected)


def test_alpha_req_recovers_a_power_law_and_reports_fit_quality():
    k = np.arange(1, 201, dtype=np.float64)
    fit = metrics.alpha_req(3.0 * k**-1.5)
    assert fit.alpha == pytest.approx(1.5, rel=1e-10) and fit.r_squared == pytest.approx(1.0)
    assert fit.log_c == pytest.approx(np.log(3.0), rel=1e-10)
    noisy = 3.0 * k**-1.5 * np.exp(np.random.default_rng(1).normal(0, 0.3, k.size))
    rough = metrics.alpha_req(noisy, first=5, last=150)
    assert rough.r_squared < 1.0 and abs(rough.alpha - 1.5) < 0.1 and (rough.first, rough.last) == (5, 150)
    with pytest.raises(ValueError, match="zeros"):
        metrics.alpha_req(np.r_[k[:10] ** -1.0, np.zeros(5)])
    with pytest.raises(ValueError, match="first"):
        metrics.alpha_req(k**-1.0, first=0)


def test_covariance_metrics_refuse_an_uncentred_spectrum():
    spec = rf.spectrum(np.random.default_rng(0).standard_normal((50, 5)))
    for method in (spec.nesum, spec.alpha_req):
        with pytest.raises(ValueError, match="centered=True"):
            method()


@pytest.mark.parametrize("name", list(rf.conventions.CONVENTIONS))
def test_conventions_match_their_published_formulas(name, rng):
    z = make_embeddings("power_law", 400, 60, seed=int(rng.integers(1 << 31))) + 0.5
    convention = rf.conventions.CONVENTIONS[name]
    sigma = _svd(z, centered=convention.centered)
    direct = {
        "paper": lambda s: _entropy_exp(s / s.sum() + 1e-7),
        "canonical": lambda s: _entropy_exp(s / s.sum()),
        "stable-pretraining": lambda s: _entropy_exp(s / s.sum() + 1e-5),
        "stable-pretraining-jax": lambda s: _entropy_exp(s / (s.sum() + 1e-7) + 1e-7),
        "lightly": lambda s: float(np.exp(-np.sum((s / (s.sum() + 1e-12)) * np.log(s / (s.sum() + 1e-12) + 1e-12)))),
        "monai": lambda s: _entropy_exp(s / s.sum()),
        "reptrix": lambda s: _entropy_exp(s**2 / np.sum(s**2) + 1e-7),
    }[name](sigma)
    assert rf.rankme(z, convention=name) == pytest.approx(direct, rel=1e-9)


def test_convention_errors():
    z = np.random.default_rng(0).standard_normal((50, 5))
    with pytest.raises(ValueError, match="unknown convention"):
        rf.rankme(z, convention="rankme-ish")
    with pytest.raises(ValueError, match="not both"):
        rf.rankme(z, convention="lightly", eps=1e-3)
    with pytest.raises(ValueError, match="uncentred spectrum"):
        rf.rankme(z, centered=True, convention="paper")
    with pytest.raises(ValueError, match="centred spectrum"):
        rf.spectrum(z).rankme(convention="monai")
    assert rf.rankme(z) == rf.rankme(z, convention="paper")


def test_rankme_many_equals_one_by_one(rng):
    items = [
        rng.standard_normal((200, 30)),
        torch.from_numpy(rng.standard_normal((150, 30))).float(),
        rng.standard_normal((10, 30)),  # N < D: the N x N route
        rf.GramAccumulator().update(rng.standard_normal((90, 12))),
        rf.spectrum(rng.standard_normal((80, 7))),
    ]
    expected = [
        rf.rankme(items[0]),
        rf.rankme(items[1]),
        rf.rankme(items[2]),
        items[3].rankme(),
        items[4].rankme(),
    ]
    np.testing.assert_allclose(rf.rankme_many(items), expected, rtol=1e-10)
    stack = torch.randn(4, 60, 9, dtype=torch.float64)
    np.testing.assert_allclose(rf.rankme_many(stack), [rf.rankme(s) for s in stack], rtol=1e-10)
    centred = rf.rankme_many(stack, convention="monai")
    np.testing.assert_allclose(centred, [rf.rankme(s, convention="monai") for s in stack], rtol=1e-10)
    with pytest.raises(ValueError, match="at least one"):
        rf.rankme_many([])
    with pytest.raises(ValueError, match="nothing has been accumulated"):
        rf.rankme_many([rf.GramAccumulator(dim=3)])
