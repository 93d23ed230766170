"""Scaling-law fit timing and the README's worked example: a 50-point joint (N, D) dataset drawn
from a Chinchilla law with 2 % multiplicative noise, fitted with the Huber loss and B = 200
bootstrap resamples. Writes bench/results/scaling-<date>.json and docs/scaling-example.png.

    python bench/bench_scaling.py
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
from pathlib import Path

import numpy as np

from rankme_fast import scaling
from rankme_fast.scaling.fit_report import write_report

ROOT = Path(__file__).resolve().parent.parent
TRUE = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}


def main() -> None:
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(1e5, 1e8, 10), 5)
    d = np.tile(np.geomspace(1e6, 1e9, 5), 10)
    x = np.column_stack([n, d])
    y = scaling.FORMS["chinchilla"](list(TRUE.values()), x) * np.exp(rng.normal(0.0, 0.02, len(n)))
    started = time.perf_counter()
    result = scaling.fit("chinchilla", x, y, bootstrap=200, seed=0)
    seconds = time.perf_counter() - started
    print(result.summary())
    print(f"fit + 200 bootstrap resamples + held-out refit: {seconds:.1f} s")
    optimum = scaling.compute_optimal(result, 1e21)
    print(f"compute-optimal at C = 1e21: N = {optimum['N_opt']:.3g}, D = {optimum['D_opt']:.3g}")
    paths = write_report(result, ROOT / "bench" / "results" / "scaling-example", title="Chinchilla law, 50 points")
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "scaling-example.png").write_bytes(paths["plot"].read_bytes())
    out = ROOT / "bench" / "results" / f"scaling-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps({
        "date": dt.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "command": "python bench/bench_scaling.py", "points": len(y), "bootstrap": 200, "seconds": seconds,
        "target_seconds": 30, "true": TRUE, "fit": result.to_dict(), "compute_optimal_1e21": optimum,
    }, indent=2, default=float))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
