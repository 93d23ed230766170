"""Narrow Grams (D = 32 ... 512) on the CPU, where a register tile's products past the diagonal
and the threads' barriers cost more than at D = 2048 (bench_cpu.py): the tiled kernel, exact
and fast, beside torch.mm fp32, on one thread and on all of them (torch's thread count, which
both follow; OpenBLAS keeps its own pool, so it is left out), interleaved rounds, medians;
useful GFLOP/s (N·D·(D+1)) and the fraction of the unit's peak. Small encoders (log-mel
features, D = 64) stream through this shape.
Writes bench/results/cpu-narrow-<date>.json and prints a markdown table.

    python bench/bench_narrow.py [--elements 4000000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
from collections.abc import Callable

import torch
from bench_cpu import RESULTS, cpu_model, gram_with, time_interleaved, unit_peaks

import rankme_fast as rf
from rankme_fast.backends.cpu_backend import cpu_info

DIMS = (32, 64, 128, 256, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=4_000_000, help="N x D of each input")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    all_threads = torch.get_num_threads()
    peaks = unit_peaks(0.5)[cpu_info()["in_use"]]
    rows = []
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        for d in DIMS:
            n = args.elements // d
            z = torch.randn(n, d, generator=torch.Generator().manual_seed(d))
            cases: dict[str, Callable[[], object]] = {
                "tiled exact": gram_with("tiled", "exact", z),
                "tiled fast": gram_with("tiled", "fast", z),
                "torch.mm fp32": lambda z=z: torch.mm(z.T, z),
            }
            for run in cases.values():
                run()
            times = time_interleaved(cases, args.rounds)
            flops = n * d * (d + 1)
            for name, runs in times.items():
                rate = flops / statistics.median(runs) / 1e9
                unit = "fp64" if name == "tiled exact" else "fp32"
                rows.append({"threads": threads, "dim": d, "rows": n, "case": name, "median_s": statistics.median(runs),
                             "runs_s": runs, "useful_gflops": rate,
                             "fraction_of_unit_peak": rate / (peaks[unit] * threads / all_threads)})  # fmt: skip
    torch.set_num_threads(all_threads)
    result = {
        "benchmark": "bench/bench_narrow.py",
        "command": "python bench/bench_narrow.py",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {"torch": torch.__version__, "rankme_fast": rf.__version__, "cpu": cpu_info()},
        "unit_peaks_gflops_all_threads": peaks,
        "note": "the peak fraction on one thread is against the all-thread peak divided by the thread count",
        "cases": rows,
    }
    out = args.out or RESULTS / f"cpu-narrow-{dt.date.today().isoformat()}.json"
    with open(out, "w") as handle:
        handle.write(json.dumps(result, indent=1) + "\n")
    names = list(dict.fromkeys(row["case"] for row in rows))
    print(f"{result['machine']['cpu']}: useful GFLOP/s, median of {args.rounds} interleaved rounds\n")
    print("| threads | D | " + " | ".join(names) + " |\n|---:|---:|" + "---:|" * len(names))
    for threads in sorted({1, all_threads}):
        for d in DIMS:
            got = {r["case"]: r["useful_gflops"] for r in rows if r["threads"] == threads and r["dim"] == d}
            print(f"| {threads} | {d} | " + " | ".join(f"{got[name]:.0f}" for name in names) + " |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
