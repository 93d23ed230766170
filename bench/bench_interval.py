"""What an error bar costs: RankMe with its jackknife interval (K = 10 block states) against
plain RankMe, side by side on the same rows in interleaved rounds (medians; this machine's speed
drifts between runs, so only the ratios within one run are compared).

Three timings per round, each for both:
  pass         the rows streamed in batches into a GramAccumulator (blocks=1 vs blocks=10): the
               Gram work, which must not grow (each row still goes into one state);
  eigensolves  plain: one eigensolve of D×D; interval: the 3K merges that make the K
               leave-one-block-out states and the K + 1 eigensolves in one batched call;
  whole        pass + eigensolves: plain `acc.rankme()` vs `acc.rankme(ci=0.95)`.
and `rf.rankme(Z)` against `rf.rankme(Z, ci=0.95)` on a matrix already in memory (the rows cut
into K contiguous runs, one block each: ten views instead of one matrix).

    python bench/bench_interval.py                      # N = 1 000 000, D = 512, float32 rows
    python bench/bench_interval.py --rows 200000 --dim 1024 --rounds 3

Writes bench/results/interval-<date>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see bench_cpu.py

import numpy as np
import torch
from bench_cpu import cpu_model

import rankme_fast as rf
from rankme_fast.backends.cpu_backend import cpu_info

RESULTS = Path(__file__).resolve().parent / "results"
BLOCKS = 10


def timed(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def streamed(z: torch.Tensor, batch: int, blocks: int) -> rf.GramAccumulator:
    acc = rf.GramAccumulator(blocks=blocks)
    for start in range(0, z.shape[0], batch):
        acc.update(z[start : start + batch])
    return acc


def one_round(z: torch.Tensor, batch: int, whole_matrix: bool) -> dict[str, float]:
    times = {}
    times["pass_plain"], plain = timed(lambda: streamed(z, batch, 1))
    times["pass_interval"], blocked = timed(lambda: streamed(z, batch, BLOCKS))
    times["eigensolves_plain"], value = timed(plain.rankme)
    times["eigensolves_interval"], estimate = timed(lambda: blocked.rankme(ci=0.95))
    assert abs(estimate.value - value) <= 1e-9 * value, (estimate.value, value)
    if whole_matrix:
        times["rf_rankme_plain"], _ = timed(lambda: rf.rankme(z))
        times["rf_rankme_interval"], _ = timed(lambda: rf.rankme(z, ci=0.95))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-whole-matrix", action="store_true", help="leave out rf.rankme(Z) on Z in memory")
    parser.add_argument("--out", type=Path, default=RESULTS / f"interval-{dt.date.today().isoformat()}.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    z = torch.empty(args.rows, args.dim, dtype=torch.float32)
    scale = torch.arange(1, args.dim + 1, dtype=torch.float32) ** -0.5
    for start in range(0, args.rows, 1 << 16):
        rows = min(1 << 16, args.rows - start)
        z[start : start + rows] = torch.from_numpy(rng.standard_normal((rows, args.dim), dtype=np.float32)) * scale
    one_round(z[: 4 * args.batch], args.batch, not args.skip_whole_matrix)  # warm-up: threads, self-checks
    rounds = []
    for index in range(args.rounds):
        rounds.append(one_round(z, args.batch, not args.skip_whole_matrix))
        print(f"round {index + 1}: " + ", ".join(f"{k} {v:.3f} s" for k, v in rounds[-1].items()), flush=True)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    whole_plain = median["pass_plain"] + median["eigensolves_plain"]
    whole_interval = median["pass_interval"] + median["eigensolves_interval"]
    ratios = {
        "pass_interval_over_plain": median["pass_interval"] / median["pass_plain"],
        "whole_interval_over_plain": whole_interval / whole_plain,
        "eigensolves_share_of_whole_interval": median["eigensolves_interval"] / whole_interval,
    }
    if "rf_rankme_plain" in median:
        ratios["rf_rankme_interval_over_plain"] = median["rf_rankme_interval"] / median["rf_rankme_plain"]
    flops = args.rows * args.dim * (args.dim + 1)  # one triangle of ZᵀZ: N·D(D+1)/2 multiply-adds
    result = {
        "benchmark": "bench/bench_interval.py",
        "command": f"python bench/bench_interval.py --rows {args.rows} --dim {args.dim} --batch {args.batch} "
        f"--rounds {args.rounds}" + (" --skip-whole-matrix" if args.skip_whole_matrix else ""),
        "date": dt.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "platform": platform.platform(), "threads": torch.get_num_threads(),
                    "kernel": cpu_info().get("auto_kernel")},
        "shape": {"rows": args.rows, "dim": args.dim, "batch": args.batch, "dtype": "float32", "blocks": BLOCKS},
        "pass_gflops_plain": flops / median["pass_plain"] / 1e9,
        "median_seconds": median,
        "ratios": ratios,
        "rounds": rounds,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| case | plain s | interval s | interval / plain |\n|---|---|---|---|")
    for case in ("pass", "eigensolves"):
        plain, blocked = median[f"{case}_plain"], median[f"{case}_interval"]
        print(f"| {case} | {plain:.3f} | {blocked:.3f} | {blocked / plain:.3f} |")
    print(f"| whole (streamed) | {whole_plain:.3f} | {whole_interval:.3f} | {whole_interval / whole_plain:.3f} |")
    if "rf_rankme_plain" in median:
        plain, blocked = median["rf_rankme_plain"], median["rf_rankme_interval"]
        print(f"| rf.rankme(Z) in memory | {plain:.3f} | {blocked:.3f} | {blocked / plain:.3f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
