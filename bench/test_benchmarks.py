"""pytest-benchmark suites of the headline cases, run by `make bench` (not by `make test`).

Every case keeps the side-by-side method of the other scripts here: before each timed round
of the case, its baseline runs once and is timed in the same round (pytest-benchmark's
untimed `setup` hook), and `extra_info` records the baseline's median and the ratio
baseline / case of the medians, so a result reads as a ratio even on a noisy machine.
Shapes are smaller than bench_cpu.py's so the whole suite takes a few minutes on 2 cores;
RANKME_FAST_BENCH_ROWS / _DIM set others.

    make bench      # writes bench/results/benchmarks-<date>.json, compares with the last one
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see bench_cpu.py

import numpy as np
import pytest
import torch
from bench_cpu import gram_with

import rankme_fast as rf
from rankme_fast._inputs import kernel_input
from rankme_fast.backends.cpu_backend import CpuBackend, cpu_info

ROWS = int(os.environ.get("RANKME_FAST_BENCH_ROWS", "8192"))
DIM = int(os.environ.get("RANKME_FAST_BENCH_DIM", "1024"))
ROUNDS = int(os.environ.get("RANKME_FAST_BENCH_ROUNDS", "5"))
VARIANTS = [name for name, runs in cpu_info()["variants"].items() if runs] if rf._C is not None else []


def side_by_side(benchmark, case: Callable[[], object], baseline: Callable[[], object], *, work: float) -> None:
    """Time `case` with pytest-benchmark and `baseline` in the same rounds; record both and the
    ratio of their medians (> 1: the case is faster), and `work`/s for the case."""
    baseline_times: list[float] = []

    def run_baseline() -> None:
        start = time.perf_counter()
        baseline()
        baseline_times.append(time.perf_counter() - start)

    case()  # warm-up: thread pools, first-use self-checks, compilation
    baseline()
    benchmark.pedantic(case, setup=run_baseline, rounds=ROUNDS, iterations=1)
    case_median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        baseline_median_s=statistics.median(baseline_times),
        ratio=statistics.median(baseline_times) / case_median,
        rate_per_s=work / case_median,
    )


@pytest.fixture(scope="module")
def z() -> torch.Tensor:
    return torch.randn(ROWS, DIM, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize("case", ["exact fp32", "fast fp32", "fast bf16"])
def test_cpu_gram_per_variant(benchmark, z, isa, case):
    """The tiled SYRK forced to each instruction set this CPU runs, against torch's own route
    for the same input: float64 products (exact), torch.mm in float32 or bfloat16 (fast)."""
    precision, dtype = case.split()
    x = z.bfloat16() if dtype == "bf16" else z
    baselines = {
        "exact": lambda: (lambda d: d.T @ d)(x.double()),
        "fast": lambda: torch.mm(x.T, x),
    }
    benchmark.group = f"CPU Gram {case}"
    side_by_side(benchmark, gram_with("tiled", precision, x, isa), baselines[precision], work=ROWS * DIM * (DIM + 1))


@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_rankme_end_to_end(benchmark, z, precision):
    """rf.rankme against torch.linalg.svdvals in float32 plus the same formula."""
    benchmark.group = "RankMe end to end"
    side_by_side(benchmark, lambda: rf.rankme(z, precision=precision),
                 lambda: rf.metrics.rankme(torch.linalg.svdvals(z).double().numpy()), work=ROWS)  # fmt: skip


def test_score_a_corpus(benchmark, tmp_path_factory):
    """`score_files` on .npy shards (fp16, a page-cache-warm corpus) against the bare update of
    the same rows already in memory: the share of the kernel's speed the job keeps."""
    from rankme_fast.scoring import ScoreOptions, score_files

    directory = tmp_path_factory.mktemp("corpus")
    rows = np.random.default_rng(0).standard_normal((4 * ROWS, 768)).astype(np.float16)
    for index, part in enumerate(np.array_split(rows, 4)):
        np.save(directory / f"shard{index}.npy", part)
    paths, options = [str(directory)], ScoreOptions(precision="fast", progress=False)
    batches = [torch.from_numpy(part) for part in np.array_split(rows, 16)]

    def in_memory() -> None:
        acc = rf.GramAccumulator(precision="fast")
        for batch in batches:
            acc.update(batch)

    benchmark.group = "scoring"
    side_by_side(benchmark, lambda: score_files(paths, options), in_memory, work=len(rows))


def test_slq_estimate(benchmark):
    """RankMe of a D = 3072 state by deflated SLQ against a dense float64 eigvalsh."""
    from rankme_fast import slq

    dim = 3072
    rng = np.random.default_rng(1)
    factor = torch.from_numpy(rng.standard_normal((dim, dim)) * np.arange(1, dim + 1) ** -0.7)
    gram = factor.T @ factor
    benchmark.group = "SLQ"
    side_by_side(benchmark, lambda: slq.estimate_rankme(gram, count=dim),
                 lambda: torch.linalg.eigvalsh(gram), work=1)  # fmt: skip


@pytest.mark.parametrize(("rows", "dim"), [(32, 256), (256, 2048)])
def test_training_update(benchmark, rows, dim):
    """RankMeMetric.update against the bare kernel call on the same batch (the difference is
    what the update costs outside its kernel)."""
    from rankme_fast.integrations import RankMeMetric

    embeddings = torch.randn(rows, dim)
    metric, matrix = RankMeMetric(dim), kernel_input(embeddings)
    backend, gram = CpuBackend(), torch.zeros(dim, dim, dtype=torch.float64)
    repeats = 200 if rows == 32 else 5
    benchmark.group = "training update"
    side_by_side(benchmark, lambda: [metric.update(embeddings) for _ in range(repeats)],
                 lambda: [backend.add_gram(matrix, gram, None, "exact") for _ in range(repeats)],
                 work=rows * repeats)  # fmt: skip
    benchmark.extra_info["outside_kernel_us"] = 1e6 * (benchmark.stats.stats.median
                                                        - benchmark.extra_info["baseline_median_s"]) / repeats

