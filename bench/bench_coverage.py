"""Do the jackknife intervals cover? RankMe's 95 % interval (rf.rankme(Z, ci=0.95), K = 10
blocks) against Monte Carlo truth: for each spectrum and N, the mean RankMe of N rows over many
independent draws is the truth; the interval of each of `draws` further draws covers it or not.
Also the standard error (root mean square over the draws, as the jackknife estimates a variance)
against the draws' standard deviation, and the same for the paired
difference of two "encoders" (a fixed linear map of the same rows, rf.compare).

Spectra (each a fixed population; only the rows are random): power law (σ_k ∝ k^−0.8), low
rank plus noise (rank 4 + 10 % isotropic noise), heavy-tailed rows (multivariate t, 5 degrees
of freedom, σ_k ∝ k^−0.5), and strongly anisotropic rows with a large mean (σ_k from 1 to 0.01,
offset 5: scored centred, as the covariance spectrum).

    python bench/bench_coverage.py                  # D = 16 and 32, 1000 draws -> results/coverage-<date>.json
    python bench/bench_coverage.py --draws 300 --dims 16
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

import rankme_fast as rf

RESULTS = Path(__file__).resolve().parent / "results"
SPECTRA = ("power_law", "low_rank_noise", "heavy_tailed", "anisotropic_offset")
MULTIPLES = (0.5, 1, 2, 5, 20)  # N / D


class Population:
    """A fixed distribution of rows of dimension `dim` for one spectrum kind."""

    def __init__(self, kind: str, dim: int) -> None:
        self.kind, self.dim = kind, dim
        fixed = np.random.default_rng(1234)
        self.loadings = fixed.standard_normal((4, dim))
        self.mixing = np.linalg.qr(fixed.standard_normal((dim, dim)))[0] * np.linspace(1.0, 0.3, dim)  # encoder b

    @property
    def centered(self) -> bool:
        return self.kind == "anisotropic_offset"

    def rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        d = self.dim
        if self.kind == "power_law":
            return rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.8
        if self.kind == "low_rank_noise":
            return rng.standard_normal((n, 4)) @ self.loadings + 0.1 * rng.standard_normal((n, d))
        if self.kind == "heavy_tailed":
            scale = np.sqrt(rng.chisquare(5, (n, 1)) / 5)
            return rng.standard_normal((n, d)) / scale * np.arange(1, d + 1) ** -0.5
        if self.kind == "anisotropic_offset":
            return rng.standard_normal((n, d)) * np.geomspace(1.0, 1e-2, d) + 5.0
        raise ValueError(self.kind)


def rankme_of(z: np.ndarray, centered: bool) -> float:
    x = z - z.mean(axis=0) if centered else z
    return rf.metrics.rankme(np.linalg.svd(x, compute_uv=False))


def cell(population: Population, n: int, draws: int, truth_draws: int, seed: int) -> dict:
    """Coverage of RankMe's interval and of the paired difference at one N."""
    truth_rng, rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    truths = []
    for _ in range(truth_draws):
        z = population.rows(n, truth_rng)
        truths.append((rankme_of(z, population.centered), rankme_of(z @ population.mixing, population.centered)))
    truth_a, truth_b = np.mean(truths, axis=0)
    values, errors, covered, diffs, diff_errors, diff_covered = [], [], 0, [], [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the below-2·D warning, expected here
        for _ in range(draws):
            z = population.rows(n, rng)
            comparison = rf.compare(z, z @ population.mixing, centered=population.centered, ci=0.95)
            a, difference = comparison.a, comparison.difference
            values.append(a.value)
            errors.append(a.standard_error)
            covered += not a.excludes(truth_a)
            diffs.append(difference.value)
            diff_errors.append(difference.standard_error)
            diff_covered += not difference.excludes(truth_a - truth_b)
    return {
        "n": n, "n_over_d": n / population.dim, "draws": draws, "truth_draws": truth_draws,
        "truth": float(truth_a), "coverage": covered / draws,
        "se_over_sd": float(np.sqrt(np.mean(np.square(errors))) / np.std(values)),
        "difference_truth": float(truth_a - truth_b), "difference_coverage": diff_covered / draws,
        "difference_se_over_sd": float(np.sqrt(np.mean(np.square(diff_errors))) / np.std(diffs)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", default="16,32")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--truth-draws", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=RESULTS / f"coverage-{dt.date.today().isoformat()}.json")
    args = parser.parse_args()
    from bench_cpu import cpu_model

    started = time.perf_counter()
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        for seed, kind in enumerate(SPECTRA):
            population = Population(kind, dim)
            for multiple in MULTIPLES:
                n = max(2, round(multiple * dim))
                row = {"spectrum": kind, "dim": dim, "centered": population.centered,
                       **cell(population, n, args.draws, args.truth_draws, seed)}  # fmt: skip
                rows.append(row)
                print(f"{kind:19s} D={dim:3d} N={row['n']:4d}  coverage {row['coverage']:.3f}  "
                      f"SE/SD {row['se_over_sd']:.2f}  paired: coverage {row['difference_coverage']:.3f}  "
                      f"SE/SD {row['difference_se_over_sd']:.2f}", flush=True)
    result = {
        "benchmark": "bench/bench_coverage.py", "command": f"python bench/bench_coverage.py --dims {args.dims} "
        f"--draws {args.draws} --truth-draws {args.truth_draws}", "date": dt.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "platform": platform.platform()}, "blocks": 10, "level": 0.95,
        "seconds": round(time.perf_counter() - started, 1), "cells": rows,
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
