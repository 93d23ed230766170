"""Fast-mode dispatch by measured speed against the feature-based choice: for each input dtype
and width class, the route the measurement picks (with its probe timings) and the update time
of N rows through it and through the feature-based default, interleaved rounds, medians.
Ratios ≥ 1 mean the measured route is no slower; exact mode is not measured (it keeps the
feature-based choice). Then BLAS in a training-like loop: each step a fast-mode update of 4096
rows and four 512 × 512 torch products, the update through OpenBLAS or through the default, to
show what OpenBLAS's own worker threads cost the work around it (why it is no candidate where a
vectorised tiled kernel runs).

    python bench/bench_dispatch.py                 # -> bench/results/dispatch-<date>.json
    python bench/bench_dispatch.py --rows 8192 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from bench_cpu import cpu_model

from rankme_fast._native import native
from rankme_fast.backends import cpu_dispatch
from rankme_fast.backends.cpu_backend import cpu_info

RESULTS = Path(__file__).resolve().parent / "results"
WIDTHS = (64, 256, 768, 1536)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def timed(z: torch.Tensor, dtype: str, route: int) -> float:
    """One fast-mode update of z through `route` (a route code, a library route included;
    ROUTE_UNSET: the feature-based one)."""
    gram = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64)
    started = time.perf_counter()
    cpu_dispatch.run_route(z, dtype, "fast", route, gram.numpy())
    return time.perf_counter() - started


def loop_step(route: int, width: int, steps: int) -> dict[str, float]:
    """Milliseconds per step of a training-like loop (an update of 4096 rows, then four 512 × 512
    torch products), and of the update alone within it."""
    z = torch.randn(4096, width, generator=torch.Generator().manual_seed(width)).numpy()
    gram, other = torch.zeros(width, width, dtype=torch.float64).numpy(), torch.randn(512, 512)
    update = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        begun = time.perf_counter()
        cpu_dispatch.run_route(z, "float32", "fast", route, gram)
        update += time.perf_counter() - begun
        for _ in range(4):
            other @ other
    return {"step_ms": (time.perf_counter() - started) / steps * 1e3, "update_ms": update / steps * 1e3}


def blas_in_a_loop(steps: int) -> list[dict[str, object]]:
    """The loop of loop_step with the update through BLAS and through the default, alternating."""
    rows = []
    for width in (64, 768):
        runs = {"blas": [], "default": []}
        for _ in range(3):
            runs["default"].append(loop_step(int(native.ROUTE_UNSET), width, steps))
            runs["blas"].append(loop_step(int(native.ROUTE_BLAS), width, steps))
        row = {"width": width, "steps": steps, **{f"{name}_{key}": statistics.median(run[key] for run in values)
               for name, values in runs.items() for key in ("step_ms", "update_ms")}}  # fmt: skip
        rows.append(row)
        print(f"loop D={width:4d}: step {row['default_step_ms']:.2f} ms with the default, {row['blas_step_ms']:.2f} ms "
              f"with BLAS (update {row['default_update_ms']:.2f} vs {row['blas_update_ms']:.2f} ms)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / f"dispatch-{dt.date.today().isoformat()}.json")
    args = parser.parse_args()
    cases = []
    for name, dtype in DTYPES.items():
        for width in WIDTHS:
            z = torch.randn(args.rows, width, generator=torch.Generator().manual_seed(width)).to(dtype)
            route = cpu_dispatch.route_for(name, "fast", width)
            measured, default = [], []
            for _ in range(args.rounds + 1):  # the first round warms both up and is dropped
                measured.append(timed(z, name, route.code))
                default.append(timed(z, name, int(native.ROUTE_UNSET)))
            measured, default = measured[1:], default[1:]
            row = {"dtype": name, "width": width, "rows": args.rows, "route": route.kernel, "default": route.default,
                   "why": route.why, "probe_seconds": route.seconds, "rejected": route.rejected,
                   "measured_seconds": statistics.median(measured),
                   "default_seconds": statistics.median(default)}  # fmt: skip
            row["default_over_measured"] = row["default_seconds"] / row["measured_seconds"]
            cases.append(row)
            print(f"{name:9s} D={width:5d}  route {route.kernel:18s} default {route.default:18s} "
                  f"default/measured {row['default_over_measured']:.2f}", flush=True)
    result = {"benchmark": "bench/bench_dispatch.py",
              "command": f"python bench/bench_dispatch.py --rows {args.rows} --rounds {args.rounds}",
              "date": dt.date.today().isoformat(),
              "machine": {"cpu": cpu_model(), "platform": platform.platform(), "threads": torch.get_num_threads(),
                          "features": cpu_info()["features"], "in_use": cpu_info()["in_use"]},
              "cases": cases,
              "blas_in_a_loop": blas_in_a_loop(100) if native.blas is not None else []}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
