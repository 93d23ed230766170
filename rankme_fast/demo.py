"""`make demo`: score built-in embedding sets with every available backend and precision, and
print RankMe, time and agreement with float64 SVD. Run: python -m rankme_fast.demo"""

from __future__ import annotations

import time

import numpy as np
import torch

import rankme_fast as rf
from rankme_fast.backends import backend_reason


def builtin_sets(seed: int = 0) -> dict[str, torch.Tensor]:
    """Generated float32 embedding sets with different spectra, one of them collapsed."""
    g = torch.Generator().manual_seed(seed)
    n, d = 16384, 768
    decay = torch.arange(1, d + 1, dtype=torch.float64) ** -0.7
    collapsed = torch.randn(n, 32, generator=g) @ torch.randn(32, d, generator=g)
    return {
        "isotropic 16384x768": torch.randn(n, d, generator=g),
        "power-law 16384x768": (torch.randn(n, d, generator=g, dtype=torch.float64) * decay).float(),
        "collapsed rank-32 16384x768": collapsed + 1e-4 * torch.randn(n, d, generator=g),
        "wide 512x4096 (N<D)": torch.randn(512, 4096, generator=g),
    }


def main() -> None:
    sets = builtin_sets()
    sample = next(iter(sets.values()))
    reasons = {(name, precision): backend_reason(name, sample, precision)
               for name in rf.available_backends() for precision in ("exact", "fast")}
    runs = [run for run, reason in reasons.items() if reason is None]
    print(f"rankme_fast {rf.__version__}: runs {', '.join(f'{n} {p}' for n, p in runs)}")
    for (name, precision), reason in reasons.items():
        if reason is not None:
            print(f"  not run: {name} {precision}: {reason}")
    header = (f"{'embedding set':30s} {'backend':10s} {'precision':9s} {'RankMe':>12s} "
              f"{'time':>8s} {'rel err vs SVD':>15s}")
    print(header)
    print("-" * len(header))
    for name, z in sets.items():
        start = time.perf_counter()
        sigma = np.linalg.svd(z.double().numpy(), compute_uv=False)
        svd_seconds = time.perf_counter() - start
        reference = rf.metrics.rankme(sigma)
        print(f"{name:30s} {'numpy SVD':10s} {'float64':9s} {reference:12.4f} {svd_seconds:7.3f}s {'(reference)':>15s}")
        for backend, precision in runs:
            start = time.perf_counter()
            value = rf.rankme(z, backend=backend, precision=precision)
            seconds = time.perf_counter() - start
            error = abs(value - reference) / reference
            print(f"{'':30s} {backend:10s} {precision:9s} {value:12.4f} {seconds:7.3f}s {error:15.1e}")
    print("\nexact: products and sums in float64; fast: float32 products within a block (opt-in).")


if __name__ == "__main__":
    main()
