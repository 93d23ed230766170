"""RankMe for huge D without an eigensolve: stochastic Lanczos quadrature with the top
eigenspace deflated (Hutch++-style), on any device through torch.

RankMe needs trace functions of A = ZᵀZ (D x D, PSD) only: with σ = sqrt(λ), S₁ = tr(A^½) and
T = Σ_k g(σ_k), g(σ) = (σ/S₁ + ε) log(σ/S₁ + ε), RankMe = exp(−T).

* Deflation: randomized subspace iteration finds Q (D x r) spanning nearly the top-r
  eigenspace, and A is treated as QᵀAQ ⊕ PAP (P = I − QQᵀ; the coupling QᵀAP, small once Q
  has converged, is dropped): the top block contributes its r Ritz values exactly.
* The rest, tr f(PAP), is estimated from random probes: Gaussian vectors projected by P and
  scaled to norm sqrt(D − r) (uniform on that sphere, so each has exactly the right mass and a
  flat spectrum is exact), each giving a Gauss quadrature Σ_j w_j f(θ_j) of uᵀ f(PAP) u from
  `steps` Lanczos steps (Golub & Meurant; Ubaru, Chen & Saad 2017). All probes run as one
  D x m block: each step is one pass over A (matrix–matrix products), and the cost is
  (power iterations + steps) passes, not D³.
* The error bar is 2 jackknife standard errors over the probes (sampling error only).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

Operator = Callable[[torch.Tensor], torch.Tensor]  # V (D, b) -> A V (D, b), float64
_SEPARATION = 2.0  # a deflated Ritz value is at least this multiple of the subspace's smallest


@dataclass(frozen=True)
class RankMeEstimate:
    """RankMe estimated by deflated SLQ: `value` ± `error` (about two standard errors)."""

    value: float
    error: float
    deflation: int
    probes: int
    steps: int

    def __float__(self) -> float:
        return self.value


@dataclass(frozen=True)
class Budget:
    """How much work an estimate does: deflated eigenvectors, random probes, Lanczos steps,
    subspace iterations (each step or iteration is one pass over A)."""

    deflation: int
    probes: int
    steps: int
    power_iterations: int = 4

    @staticmethod
    def default(dim: int) -> Budget:
        """Keeps RankMe within 0.5 % on the tested spectra at D = 1024 and 2048
        (tests/test_slq.py; 4096 checked by hand). A probe's sampling error shrinks like
        1/sqrt(D), so larger D gets fewer probes and a smaller deflated block; each Lanczos step
        is one pass over the D x D Gram, which is what costs at large D. Speed and accuracy at
        D = 8192 and 16384: bench/README.md (not yet 10x a dense eigensolve with 0.5 % error)."""
        deflation = min(dim // 4, 256, max(32, 524288 // max(dim, 1)))
        probes = int(max(16, round(64 * math.sqrt(4096 / max(dim, 4096)))))
        return Budget(deflation=deflation, probes=probes, steps=min(dim, 40 if dim <= 4096 else 30), power_iterations=4)


def stream_operator(batches: Callable[[], Iterable[torch.Tensor]]) -> Operator:
    """A V = Σ_batches Zᵀ(Z V) straight from the data, for a Gram too large to hold:
    `batches()` must yield the same (n, D) row batches (any float dtype) on every call."""

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(v)
        for batch in batches():
            rows = batch.to(device=v.device, dtype=torch.float64)
            out += rows.T @ (rows @ v)
        return out

    return apply


def estimate_rankme(
    operator: Operator | torch.Tensor,
    *,
    dim: int | None = None,
    count: int | None = None,
    eps: float = 1e-7,
    budget: Budget | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> RankMeEstimate:
    """RankMe of the PSD operator A = ZᵀZ without an eigensolve: a full symmetric float64 Gram
    (GramAccumulator.gram() gives one), or a function V -> A V (stream_operator) with `dim`.
    `count` (the N of Z) caps the values counted at min(N, D), as RankMe does."""
    if isinstance(operator, torch.Tensor):
        if operator.ndim != 2 or operator.shape[0] != operator.shape[1]:
            raise ValueError(f"the Gram must be square, got shape {tuple(operator.shape)}")
        dim, device = operator.shape[0], operator.device
        gram = operator.to(torch.float64)
        apply = gram.__matmul__
    else:
        if dim is None:
            raise ValueError("pass dim= with an operator function")
        apply = operator
    if not (isinstance(dim, int) and dim > 0):
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    budget = budget or Budget.default(dim)
    if count is not None and count < dim and budget.deflation < count:
        # Rank ≤ N < D: deflate the whole nonzero spectrum, so no quadrature smears the D − N
        # exact zeros (Gauss nodes near 0 would add sqrt(θ) > 0 to S₁).
        budget = dataclasses.replace(budget, deflation=count)
    device = torch.device(device or "cpu")
    generator = torch.Generator(device="cpu").manual_seed(seed)

    basis, ritz = _top_subspace(apply, dim, budget, generator, device)
    # Gaussian probes projected on the complement and scaled to norm sqrt(D - r): uniform on
    # that sphere, so each one's quadrature has mass exactly tr(P) (exact on a flat spectrum).
    kept = basis.shape[1]
    probes = torch.randn(dim, budget.probes, generator=generator, dtype=torch.float64).to(device)
    if kept:
        probes -= basis @ (basis.T @ probes)
    probes *= math.sqrt(dim - kept) / probes.norm(dim=0).clamp(min=1e-300)
    # A ≈ QᵀAQ ⊕ PAP (the coupling QᵀAP, small once Q nearly spans the top eigenspace, is
    # dropped): the top block counts its Ritz values exactly, the probes sample PAP.
    fixed = (ritz[:, None], torch.ones_like(ritz)[:, None])
    sampled = _lanczos_quadrature(apply, probes, min(budget.steps, dim), keep_out=basis)
    zeros = max(0, dim - count) if count is not None else 0

    def rankme_from(sample_nodes: torch.Tensor, sample_weights: torch.Tensor) -> float:
        sigma_fixed, sigma_sampled = fixed[0].clamp(min=0).sqrt(), sample_nodes.clamp(min=0).sqrt()
        s1 = float((fixed[1] * sigma_fixed).sum() + (sample_weights * sigma_sampled).sum() / sample_weights.shape[0])
        if s1 <= 0:
            raise ValueError("RankMe is undefined for an all-zero embedding set")

        def g(sigma: torch.Tensor) -> torch.Tensor:
            p = sigma / s1 + eps
            return torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0)

        total = (fixed[1] * g(sigma_fixed)).sum() + (sample_weights * g(sigma_sampled)).sum() / sample_weights.shape[0]
        g0 = eps * math.log(eps) if eps > 0 else 0.0
        return math.exp(-(float(total) - zeros * g0))

    value = rankme_from(*sampled)
    floor = 1e-9 * value  # rounding: the bar never claims more than float64 sums can give
    m = budget.probes
    if m > 1:
        keep = torch.ones(m, dtype=torch.bool, device=sampled[0].device)
        jackknife = []
        for left_out in range(m):
            keep[left_out] = False
            jackknife.append(rankme_from(sampled[0][keep], sampled[1][keep]))
            keep[left_out] = True
        spread = np.asarray(jackknife)
        error = max(floor, 2.0 * math.sqrt((m - 1) / m * float(np.sum((spread - spread.mean()) ** 2))))
    else:
        error = math.inf
    return RankMeEstimate(value, error, kept, m, min(budget.steps, dim))


def _top_subspace(
    apply: Operator, dim: int, budget: Budget, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal (D, r) Ritz vectors of the (approximate) top-r eigenspace and their Ritz
    values, by randomized subspace iteration with oversampling."""
    r = min(budget.deflation, dim)
    if r == 0:
        empty = torch.zeros(dim, 0, dtype=torch.float64, device=device)
        return empty, empty[0]
    width = min(dim, r + max(8, r // 4))
    q = torch.linalg.qr(apply(torch.randn(dim, width, generator=generator, dtype=torch.float64).to(device)))[0]
    for _ in range(budget.power_iterations):
        q = torch.linalg.qr(apply(q))[0]
    small = q.T @ apply(q)
    values, vectors = torch.linalg.eigh((small + small.T) / 2)
    # Deflate only Ritz values well above the block's smallest: those have converged (their
    # coupling to the rest, which the split drops, is small) and carry the probes' variance.
    # A flat spectrum deflates nothing.
    r = min(r, int((values > _SEPARATION * values[0].clamp(min=0)).sum()))
    return q @ vectors[:, values.shape[0] - r :], values[values.shape[0] - r :]


def _lanczos_quadrature(
    apply: Operator, starts: torch.Tensor, steps: int, keep_out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss quadrature of vᵀ f(A) v for every column v of `starts` (D, b): nodes and weights
    (b, steps) with Σ_j w_j f(θ_j) ≈ vᵀ f(A) v. All columns run as one block, each its own
    three-term Lanczos recurrence (no full reorthogonalisation: Gauss quadrature stays accurate
    in finite precision, and it would cost more than the products). With `keep_out` = Q the
    recurrences run on PAP (P = I − QQᵀ), every step projected. A column that reaches an
    invariant subspace stops; its remaining weights are zero."""
    b = starts.shape[1]
    if b == 0:
        empty = torch.zeros(0, steps, dtype=torch.float64, device=starts.device)
        return empty, empty
    norms = starts.norm(dim=0)
    alive = norms > 0
    v = starts / torch.where(alive, norms, 1.0)
    previous = torch.zeros_like(v)
    alpha = torch.zeros(steps, b, dtype=torch.float64, device=starts.device)
    beta = torch.zeros(steps, b, dtype=torch.float64, device=starts.device)
    scale = torch.zeros(b, dtype=torch.float64, device=starts.device)
    for j in range(steps):
        w = apply(v)
        alpha[j] = (v * w).sum(dim=0)
        w = w - alpha[j] * v - (beta[j - 1] * previous if j else 0.0)
        if keep_out is not None and keep_out.shape[1]:
            w -= keep_out @ (keep_out.T @ w)
        norm = w.norm(dim=0)
        scale = torch.maximum(scale, alpha[j].abs())
        alive = alive & (norm > 1e-12 * scale.clamp(min=1e-300))
        if j + 1 < steps:
            beta[j] = torch.where(alive, norm, 0.0)
            previous, v = v, torch.where(alive, w / torch.where(alive, norm, 1.0), 0.0)
    tridiagonal = torch.diag_embed(alpha.T) + torch.diag_embed(beta[:-1].T, 1) + torch.diag_embed(beta[:-1].T, -1)
    nodes, vectors = torch.linalg.eigh(tridiagonal)
    weights = vectors[:, 0, :] ** 2 * (norms**2)[:, None]
    return nodes, weights
