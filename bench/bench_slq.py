"""RankMe for huge D: deflated SLQ (rankme_fast.slq, default budget) vs the dense float64
eigensolve (torch.linalg.eigvalsh) of the same Gram, side by side in one process.

Grams: G = ZᵀZ of N = 2D Gaussian rows (a Wishart spectrum) and diag(s) G diag(s) with
s_k = k^-1/2 (a power-law spectrum with dense, non-trivial eigenvectors), built with the
project's own Gram kernel. Each SLQ estimate runs with 3 seeds; the error is against RankMe of
the dense eigenvalues. Writes bench/results/slq-<date>.json.

    python bench/bench_slq.py             # D = 8192 and 16384 (several minutes: the eigensolves)
    python bench/bench_slq.py --quick     # D = 2048 and 4096
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import torch

import rankme_fast as rf
from rankme_fast import slq

RESULTS = Path(__file__).resolve().parent / "results"


def wishart_gram(dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    acc = rf.GramAccumulator(dim, precision="fast")
    for _ in range(2 * dim // 2048):
        acc.update(torch.randn(2048, dim, generator=generator))
    return acc.gram()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    dims = [2048, 4096] if args.quick else [8192, 16384]
    rows = []
    for dim in dims:
        started = time.perf_counter()
        gram = wishart_gram(dim, seed=dim)
        print(f"D={dim}: Gram of {2 * dim} rows in {time.perf_counter() - started:.1f} s", flush=True)
        scale = torch.arange(1, dim + 1, dtype=torch.float64) ** -0.5
        for spectrum in ("wishart", "power_law"):
            a = gram if spectrum == "wishart" else gram * scale[:, None] * scale[None, :]
            started = time.perf_counter()
            eigenvalues = torch.linalg.eigvalsh(a).flip(0).clamp(min=0)
            eig_s = time.perf_counter() - started
            truth = rf.metrics.rankme(eigenvalues.sqrt().numpy())
            for seed in range(3):
                started = time.perf_counter()
                estimate = slq.estimate_rankme(a, count=2 * dim, seed=seed)
                slq_s = time.perf_counter() - started
                row = {
                    "dim": dim, "spectrum": spectrum, "seed": seed, "eigvalsh_s": eig_s, "slq_s": slq_s,
                    "speedup": eig_s / slq_s, "rankme_dense": truth, "rankme_slq": estimate.value,
                    "error_bar": estimate.error, "relative_error": (estimate.value - truth) / truth,
                    "covered": abs(estimate.value - truth) <= estimate.error,
                    "budget": {"deflated": estimate.deflation, "probes": estimate.probes, "steps": estimate.steps,
                               "passes": estimate.passes},
                }  # fmt: skip
                rows.append(row)
                print(f"  {spectrum:9s} seed {seed}: eigvalsh {eig_s:.1f} s, SLQ {slq_s:.2f} s (x{eig_s / slq_s:.1f}), "
                      f"RankMe {truth:.2f} vs {estimate.value:.2f} ± {estimate.error:.2f} "
                      f"({100 * row['relative_error']:+.3f} %, {estimate.passes} passes)", flush=True)
            del a
    summary = {
        "min_speedup": min(r["speedup"] for r in rows),
        "max_abs_relative_error": max(abs(r["relative_error"]) for r in rows),
        "coverage": sum(r["covered"] for r in rows) / len(rows),
    }
    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "command": "python bench/bench_slq.py" + (" --quick" if args.quick else ""),
        "rows": rows,
        "summary": summary,
        "targets": {"speedup vs eigvalsh": 10, "max relative error": 0.005},
    }
    out = RESULTS / f"slq-{result['date']}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(summary), f"wrote {out}", sep="\n")


if __name__ == "__main__":
    main()
