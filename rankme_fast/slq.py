"""RankMe for huge D without an eigensolve: stochastic Lanczos quadrature with the top
eigenspace deflated (Hutch++-style), on any device through torch.

RankMe needs trace functions of A = ZᵀZ (D x D, PSD) only: with σ = sqrt(λ), S₁ = tr(A^½) and
T = Σ_k g(σ_k), g(σ) = (σ/S₁ + ε) log(σ/S₁ + ε), RankMe = exp(−T).

* Deflation: a randomized block Krylov space [AΩ, A²Ω, …] (Musco & Musco 2015) and its Ritz
  pairs; the top ones whose residual ‖Ay − θy‖ is below 1 % of θ have converged and are counted
  exactly. A is treated as QᵀAQ ⊕ PAP (P = I − QQᵀ; the coupling QᵀAP, second order in those
  residuals, is dropped).
* The rest, tr f(PAP), is estimated from random probes: Gaussian vectors projected by P and
  scaled to norm sqrt(D − r) (uniform on that sphere, so each has exactly the right mass and a
  flat spectrum is exact), each giving a Gauss quadrature Σ_j w_j f(θ_j) of uᵀ f(PAP) u from
  Lanczos steps (Golub & Meurant; Ubaru, Chen & Saad 2017). All probes run as one D x b block,
  so each step is one pass over A. Every 4 steps the quadratures give a RankMe value; these
  settle geometrically (from above), so Aitken's Δ² extrapolates them to their limit, and the
  steps stop once two extrapolations agree within `tolerance`.
* Products with a Gram tensor run in float32 by default (a pass over A is memory-bound, and
  half the bytes is twice the speed); every vector, recurrence and sum stays float64.
* The error bar is 2 jackknife standard errors over the probes plus the last change of the
  extrapolated value (what stopping the steps may still leave).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rankme_fast._checks import check_positive_int

Operator = Callable[[torch.Tensor], torch.Tensor]  # V (D, b) -> A V (D, b), float64
_RESIDUAL = 1e-2  # a Ritz pair is deflated when ‖Ay − θy‖ ≤ this · θ
_CHECK_EVERY = 4  # Lanczos steps between convergence checks


@dataclass(frozen=True)
class RankMeEstimate:
    """RankMe estimated by deflated SLQ: `value` ± `error` (about two standard errors plus the
    quadrature's last change). `steps` is the Lanczos steps run, `passes` the products with A."""

    value: float
    error: float
    deflation: int
    probes: int
    steps: int
    passes: int

    def __float__(self) -> float:
        return self.value


@dataclass(frozen=True)
class Budget:
    """How much work an estimate does. Each Lanczos step and each Krylov block is one pass over
    A (a product with a D x b block, which costs about as much as a single vector while A is
    too large for cache).

    deflation: most top eigenpairs counted exactly (the converged Ritz pairs of a block Krylov
    space of dimension 2·deflation built in `krylov_blocks` passes); probes: random vectors for
    the rest; steps: most Lanczos steps per probe (fewer once the extrapolated RankMe changes by
    less than `tolerance`, relative, over 4 steps); float32_products: products with a Gram tensor in float32.
    """

    deflation: int
    probes: int
    steps: int
    krylov_blocks: int = 6
    tolerance: float = 1e-3
    float32_products: bool = False

    @staticmethod
    def default(dim: int) -> Budget:
        """Keeps RankMe within 0.5 % on the tested spectra at D = 1024..4096 (tests/core/test_slq.py)
        and on the benchmark's Wishart and power-law Grams at D = 8192 and 16384
        (bench/bench_slq.py). Up to 4096 a pass is cheap, so the budget is generous; above, 24
        probes cost one memory-bound pass per step, like one, and the probes' sampling error
        shrinks like 1/sqrt(D). Float32 products only above 4096: their rounding moves RankMe
        by about 1e-4 relative (a floor of tiny eigenvalues shifts), which the error bar does
        not count."""
        if dim <= 4096:
            return Budget(deflation=min(dim // 4, 256), probes=64, steps=min(dim, 60))
        return Budget(deflation=96, probes=24, steps=60, float32_products=True)


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
    elif dim is None:
        raise ValueError("pass dim= with an operator function")
    check_positive_int(dim, "dim")
    if not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    budget = budget or Budget.default(dim)
    if budget.probes < 1 or budget.steps < 1 or budget.deflation < 0:
        raise ValueError(f"a budget needs probes >= 1, steps >= 1 and deflation >= 0, got {budget}")
    if count is not None and count < dim and budget.deflation < count:
        # Rank ≤ N < D: deflate the whole nonzero spectrum, so no quadrature smears the D − N
        # exact zeros (Gauss nodes near 0 would add sqrt(θ) > 0 to S₁; float64 products keep
        # the zeros at rounding level).
        budget = dataclasses.replace(budget, deflation=count, float32_products=False)
    device = torch.device(device or "cpu")
    if isinstance(operator, torch.Tensor):
        operator = _as_operator(operator, budget.float32_products, budget.probes)
    apply = _CountedOperator(operator)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    basis, ritz = _top_subspace(apply, dim, budget, generator, device)
    # Gaussian probes projected on the complement and scaled to norm sqrt(D - r): uniform on
    # that sphere, so each one's quadrature has mass exactly tr(P) (exact on a flat spectrum).
    kept = basis.shape[1]
    probes = torch.randn(dim, budget.probes, generator=generator, dtype=torch.float64).to(device)
    if kept:
        probes -= basis @ (basis.T @ probes)
    probes *= math.sqrt(dim - kept) / probes.norm(dim=0).clamp(min=1e-300)
    probe_norms = probes.norm(dim=0)
    zeros = max(0, dim - count) if count is not None else 0
    rankme_of = _RankMeOfQuadrature(ritz, eps, zeros)

    steps = min(budget.steps, dim)
    quadratures: list[float] = []  # RankMe from the Gauss rules after every _CHECK_EVERY steps
    estimates: list[float] = []  # the same, extrapolated to the limit
    for step, (alpha, beta) in enumerate(_lanczos(apply, probes, steps, keep_out=basis), start=1):
        if step % _CHECK_EVERY and step < steps:
            continue
        nodes, weights = _gauss_rule(alpha, beta, probe_norms)
        quadratures.append(rankme_of(nodes, weights))
        estimates.append(_extrapolated(quadratures))
        if len(estimates) > 1 and abs(estimates[-1] - estimates[-2]) <= budget.tolerance * estimates[-1]:
            break
    value = estimates[-1]
    truncation = abs(estimates[-1] - estimates[-2]) if len(estimates) > 1 else 0.0
    return RankMeEstimate(value, _jackknife(rankme_of, nodes, weights, value) + truncation, kept, budget.probes,
                          step, apply.passes)  # fmt: skip


def _extrapolated(values: list[float]) -> float:
    """The limit of a sequence that settles geometrically (Aitken's Δ²), from its last three
    terms; the last term itself where they do not shrink monotonically. Gauss quadrature of
    RankMe on a spread spectrum settles like this (the change shrinks by a steady factor every
    few steps), so the limit is reached several steps early."""
    if len(values) < 3:
        return values[-1]
    before, last = values[-2] - values[-3], values[-1] - values[-2]
    if before == 0 or not 0 < last / before < 1:
        return values[-1]
    return values[-1] - last * last / (last - before)


class _RankMeOfQuadrature:
    """RankMe from the deflated Ritz values (counted once each) and the probes' Gauss rules
    (nodes, weights: (probes, steps), averaged over probes)."""

    def __init__(self, ritz: torch.Tensor, eps: float, zeros: int) -> None:
        self.sigma_fixed = ritz.clamp(min=0).sqrt()
        self.eps, self.zeros = eps, zeros

    def __call__(self, nodes: torch.Tensor, weights: torch.Tensor) -> float:
        sigma = nodes.clamp(min=0).sqrt()
        probes = weights.shape[0]
        s1 = float(self.sigma_fixed.sum() + (weights * sigma).sum() / probes)
        if s1 <= 0:
            raise ValueError("RankMe is undefined for an all-zero embedding set")

        def g(s: torch.Tensor) -> torch.Tensor:
            p = s / s1 + self.eps
            return torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0)

        total = float(g(self.sigma_fixed).sum() + (weights * g(sigma)).sum() / probes)
        g0 = self.eps * math.log(self.eps) if self.eps > 0 else 0.0
        return math.exp(-(total - self.zeros * g0))


def _jackknife(rankme_of: _RankMeOfQuadrature, nodes: torch.Tensor, weights: torch.Tensor, value: float) -> float:
    """Two jackknife standard errors over the probes (floored at float64 rounding)."""
    m = nodes.shape[0]
    if m < 2:
        return math.inf
    keep = torch.ones(m, dtype=torch.bool, device=nodes.device)
    spread = []
    for left_out in range(m):
        keep[left_out] = False
        spread.append(rankme_of(nodes[keep], weights[keep]))
        keep[left_out] = True
    values = np.asarray(spread)
    return max(1e-9 * value, 2.0 * math.sqrt((m - 1) / m * float(np.sum((values - values.mean()) ** 2))))


class _CountedOperator:
    """An operator that counts its calls (passes over A)."""

    def __init__(self, apply: Operator) -> None:
        self.apply, self.passes = apply, 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return self.apply(v)


def _as_operator(gram: torch.Tensor, float32_products: bool, width: int) -> Operator:
    """V -> A V for a symmetric Gram tensor, float64 in and out. With float32 products A is
    cast once (then half the bytes per pass); on a CPU with MKL it is also packed once for
    MKL's packed GEMM (bench/results/slq-pass-2026-11-22.json: a pass of 24 columns at D = 8192
    takes 0.86x the time of a plain float32 matmul, which packs A anew on every call)."""
    if not float32_products:
        return gram.to(torch.float64).__matmul__
    matrix = gram.to(torch.float32)
    packed = _mkl_packed(matrix, width)
    if packed is None:
        return lambda v: (matrix @ v.to(torch.float32)).to(torch.float64)

    def apply(v: torch.Tensor) -> torch.Tensor:  # linear(Vᵀ) = Vᵀ Aᵀ = (A V)ᵀ for a symmetric A
        product = torch.ops.mkl._mkl_linear(v.T.to(torch.float32), packed, matrix, None, v.shape[1])
        return product.T.to(torch.float64)

    return apply


def _mkl_packed(matrix: torch.Tensor, width: int) -> torch.Tensor | None:
    """`matrix` packed for MKL's packed GEMM (the op torch uses for frozen CPU linear layers),
    or None where that op is missing (GPU, a build without MKL)."""
    if matrix.device.type != "cpu" or not torch.backends.mkl.is_available():
        return None
    try:
        return torch.ops.mkl._mkl_reorder_linear_weight(matrix, width)
    except (AttributeError, RuntimeError):
        return None


def _top_subspace(
    apply: Operator, dim: int, budget: Budget, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal (D, r) Ritz vectors of the converged top Ritz pairs of a randomized block
    Krylov space span[AΩ, …, A^q Ω] (dimension about 2·deflation), and their Ritz values."""
    cap = min(budget.deflation, dim)
    empty = torch.zeros(dim, 0, dtype=torch.float64, device=device)
    if cap == 0:
        return empty, empty[0]
    depth = max(1, budget.krylov_blocks)
    width = max(1, math.ceil(min(dim, 2 * cap) / depth))
    blocks: list[torch.Tensor] = []
    images: list[torch.Tensor] = []
    block = apply(torch.randn(dim, width, generator=generator, dtype=torch.float64).to(device))
    for _ in range(depth):
        if sum(b.shape[1] for b in blocks) >= dim:
            break
        size = block.norm(dim=0).max().clamp(min=1e-300)
        if blocks:
            previous = torch.cat(blocks, dim=1)
            for _ in range(2):  # twice is enough (Giraud et al. 2005)
                block = block - previous @ (previous.T @ block)
        q, r = torch.linalg.qr(block)
        q = q[:, r.diagonal().abs() > 1e-10 * size]  # drop directions the space already holds
        if q.shape[1] == 0:
            break
        blocks.append(q)
        images.append(apply(q))
        block = images[-1]
    if not blocks:  # A Ω = 0: A is zero
        return empty, empty[0]
    basis, image = torch.cat(blocks, dim=1), torch.cat(images, dim=1)
    small = basis.T @ image
    values, vectors = torch.linalg.eigh((small + small.T) / 2)
    residuals = (image @ vectors - (basis @ vectors) * values).norm(dim=0)
    converged = (residuals <= _RESIDUAL * values) & (values > 0)
    # The converged run from the top (eigh sorts ascending), at most `cap` of them.
    unconverged = (~converged.flip(0)).nonzero()
    r = min(cap, int(unconverged[0]) if unconverged.numel() else values.shape[0])
    if r == 0:
        return empty, empty[0]
    return basis @ vectors[:, -r:], values[-r:]


def _lanczos(
    apply: Operator, starts: torch.Tensor, steps: int, keep_out: torch.Tensor
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Lanczos on every column of `starts` (D, b) at once, each its own three-term recurrence on
    PAP (P = I − QQᵀ, Q = `keep_out`), yielding the Jacobi coefficients alpha (j, b) and beta
    (j − 1, b) after each step j. No full reorthogonalisation: Gauss quadrature stays accurate
    in finite precision, and it would cost more than the products. A column that reaches an
    invariant subspace stops (its beta is zero from there)."""
    b = starts.shape[1]
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
        if keep_out.shape[1]:
            w -= keep_out @ (keep_out.T @ w)
        norm = w.norm(dim=0)
        scale = torch.maximum(scale, alpha[j].abs())
        alive = alive & (norm > 1e-12 * scale.clamp(min=1e-300))
        beta[j] = torch.where(alive, norm, 0.0)
        yield alpha[: j + 1], beta[:j]
        previous, v = v, torch.where(alive, w / torch.where(alive, norm, 1.0), 0.0)


def _gauss_rule(alpha: torch.Tensor, beta: torch.Tensor, norms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights (b, j) of the Gauss quadrature Σ_i w_i f(θ_i) ≈ vᵀ f(A) v from each
    column's Jacobi matrix (eigenvalues; squared first components times ‖v‖²)."""
    jacobi = torch.diag_embed(alpha.T) + torch.diag_embed(beta.T, 1) + torch.diag_embed(beta.T, -1)
    nodes, vectors = torch.linalg.eigh(jacobi)
    return nodes, vectors[:, 0, :] ** 2 * (norms**2)[:, None]
