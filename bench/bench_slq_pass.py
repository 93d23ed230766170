"""What one SLQ pass over A costs at D = 8192, and what the packed GEMM buys: the floor
behind bench/README.md's SLQ section. Interleaved repeats in one process, medians.

* pass times: A @ V with V of 24 columns in float64, float32 (plain matmul, which packs A on
  every call) and float32 with A packed once (slq's CPU path); 8 columns plain for comparison;
* floors: a float32 matrix-vector product (reads A once: the bandwidth floor) and a float32
  product with 512 columns (the reachable flop rate);
* a whole default-budget estimate on a Wishart Gram with and without the packed GEMM.

Writes bench/results/slq-pass-<date>.json.    python bench/bench_slq_pass.py
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import rankme_fast as rf
from rankme_fast import slq

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 8192


def _median_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    acc = rf.GramAccumulator(DIM, precision="fast")
    for _ in range(2 * DIM // 2048):
        acc.update(torch.randn(2048, DIM, generator=generator))
    gram = acc.gram()
    single = gram.float()
    packed = slq._mkl_packed(single, 24)
    v64 = torch.randn(DIM, 24, dtype=torch.float64, generator=generator)
    v32 = v64.float()
    cases = {
        "float64_24_columns": lambda: gram @ v64,
        "float32_plain_24_columns": lambda: single @ v32,
        "float32_plain_8_columns": lambda: single @ v32[:, :8],
        "float32_vector": lambda: single @ v32[:, 0],
        "float32_512_columns": lambda: single @ torch.randn(DIM, 512),
    }
    if packed is not None:
        cases["float32_packed_24_columns"] = lambda: torch.ops.mkl._mkl_linear(v32.T.contiguous(), packed, single,
                                                                               None, 24)  # fmt: skip
    pass_ms = {name: 1e3 * _median_seconds(run, 9) for name, run in cases.items()}
    read_gb_per_s = DIM * DIM * 4 / (pass_ms["float32_vector"] / 1e3) / 1e9
    gflops_512 = 2 * DIM * DIM * 512 / (pass_ms["float32_512_columns"] / 1e3) / 1e9
    floors_ms = {"read_A_float32": pass_ms["float32_vector"],
                 "flops_24_columns_at_512_column_rate": 2 * DIM * DIM * 24 / gflops_512 / 1e6}  # fmt: skip

    original = slq._mkl_packed
    estimate_s: dict[str, list[float]] = {"packed": [], "plain": []}
    for _ in range(3):
        for mode in ("packed", "plain"):
            slq._mkl_packed = original if mode == "packed" else (lambda matrix, width: None)
            started = time.perf_counter()
            slq.estimate_rankme(gram, count=2 * DIM, seed=0)
            estimate_s[mode].append(time.perf_counter() - started)
    slq._mkl_packed = original
    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "command": "python bench/bench_slq_pass.py", "dim": DIM,
        "pass_ms": pass_ms, "float32_read_gb_per_s": read_gb_per_s, "float32_gflops_512_columns": gflops_512,
        "floors_ms_24_columns": floors_ms, "estimate_s": estimate_s,
        "estimate_packed_over_plain": statistics.median(estimate_s["packed"]) / statistics.median(estimate_s["plain"]),
    }  # fmt: skip
    out = RESULTS / f"slq-pass-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2))
    shown = ("pass_ms", "float32_read_gb_per_s", "float32_gflops_512_columns", "estimate_packed_over_plain")
    print(json.dumps({k: result[k] for k in shown}, indent=1), f"wrote {out}", sep="\n")


if __name__ == "__main__":
    main()
