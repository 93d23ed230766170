"""Peak resident memory of streaming N x D rows through a GramAccumulator in batches.

Run as a script in a fresh process: prints JSON with the peak RSS (VmHWM) before and
after streaming, so the growth can be compared across N. Batches are generated one at a
time and dropped, so only the accumulator and one batch are alive at once.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import rankme_fast as rf


def peak_rss_mib() -> float:
    """This process's own peak RSS. Not ru_maxrss: Linux folds the parent's peak into a
    child's ru_maxrss when the child is started by vfork + exec, as subprocess does."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    acc = rf.GramAccumulator(args.dim, backend=args.backend)
    acc.update(torch.randn(args.batch, args.dim, generator=generator))  # state and buffers exist now
    baseline = peak_rss_mib()
    start = time.perf_counter()
    remaining = args.rows - args.batch
    while remaining > 0:
        rows = min(args.batch, remaining)
        acc.update(torch.randn(rows, args.dim, generator=generator))
        remaining -= rows
    seconds = time.perf_counter() - start
    print(json.dumps({
        "rows": acc.count, "dim": args.dim, "batch": args.batch, "backend": acc.last_backend,
        "peak_rss_after_first_batch_mib": baseline, "peak_rss_end_mib": peak_rss_mib(),
        "growth_mib": peak_rss_mib() - baseline, "seconds": seconds, "rankme": acc.rankme(),
    }))


if __name__ == "__main__":
    main()
