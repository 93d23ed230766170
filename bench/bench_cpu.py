"""Side-by-side CPU benchmark (one process, interleaved rounds, medians and ratios).

End to end: rf.rankme (exact, fast) vs torch.linalg.svdvals fp32, numpy.linalg.svd fp64 and
plain torch Z.T @ Z + eigvalsh. Gram step alone: the C++ kernel (BLAS and tiled, exact and
fast) vs torch.mm(Z.T, Z) fp32 and the float64 route Zd = Z.double(); Zd.T @ Zd; bfloat16
input (fast) vs torch's bf16 Zb.T @ Zb; the AVX2 variant forced vs OpenBLAS; on CPUs with AMX
tiles, the amx variant forced (bf16 input, and fp32 through the bf16 split). Peak: each
compiled variant's multiply-add unit (float64 and float32 FMA, bfloat16 dot, bfloat16 tile
product), measured here, and each kernel's rate as a fraction of its unit's peak.
Writes bench/results/cpu-<date>.json and prints markdown tables.

    python bench/bench_cpu.py [--rows 25600] [--dim 2048] [--rounds 5]
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

# OpenBLAS worker threads otherwise spin ~0.1 s after each call, taking the cores from whatever
# case runs next in the interleaved rounds; with the shortest timeout they sleep at once.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np
import torch

import rankme_fast as rf
from rankme_fast._inputs import kernel_input
from rankme_fast.backends.cpu_backend import CpuBackend, cpu_info, instruction_set

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (a VM may show only "AMD EPYC":
    family 25 is Zen 3/4, 26 is Zen 5)."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return platform.processor()
    return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def gram_with(kernel: str, precision: str, z: torch.Tensor, isa: str | None = None) -> Callable[[], object]:
    """The C++ Gram step of `z`; `isa` forces the tiled kernel's instruction-set variant."""
    backend, matrix = CpuBackend(kernel), kernel_input(z)

    def run() -> torch.Tensor:
        gram = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64)
        if isa is None:
            backend.add_gram(matrix, gram, None, precision)
        else:
            with instruction_set(isa):
                backend.add_gram(matrix, gram, None, precision)
        return gram

    return run


def unit_peaks(seconds: float) -> dict[str, dict[str, float]]:
    """GFLOP/s of each runnable variant's float64 FMA, float32 FMA, bfloat16 dot product and
    bfloat16 tile product (TDPBF16PS: the amx variant only; 0 elsewhere)."""
    runnable = [name for name, runs in cpu_info()["variants"].items() if runs]
    kinds = ("fp64", "fp32", "bf16", "tile-bf16")
    return {isa: {kind: rf._C.cpu_peak_gflops(isa, kind, seconds) for kind in kinds} for isa in runnable}


def torch_gram_eig_rankme(z: torch.Tensor) -> float:
    zd = z.double()
    eig = torch.linalg.eigvalsh(zd.T @ zd).clamp(min=0).flip(0)
    return rf.metrics.rankme(eig.sqrt().numpy())


def time_interleaved(
    cases: dict[str, Callable[[], object]], rounds: int, sync: Callable[[], None] = lambda: None
) -> dict[str, list[float]]:
    """Each round runs every case once; the order rotates so no case always goes first.
    `sync` (e.g. torch.cuda.synchronize) runs before the clock starts and before it stops."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync()
            start = time.perf_counter()
            cases[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=25600)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--svd-rounds", type=int, default=3, help="rounds of the slow SVD baselines")
    parser.add_argument("--peak-seconds", type=float, default=1.0, help="length of each unit-peak measurement")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    n, d = args.rows, args.dim
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    zn = z.numpy()
    zb = z.bfloat16()

    # Accuracy first: every RankMe against float64 SVD of the same fp32 values.
    sigma = np.linalg.svd(zn.astype(np.float64), compute_uv=False)
    reference = rf.metrics.rankme(sigma)
    values = {
        "rf.rankme exact": rf.rankme(z),
        "rf.rankme fast": rf.rankme(z, precision="fast"),
        "torch.linalg.svdvals fp32": rf.metrics.rankme(torch.linalg.svdvals(z).double().numpy()),
        "torch Z.T@Z fp64 + eigvalsh": torch_gram_eig_rankme(z),
    }

    # bfloat16 input: the C++ fast Gram (float32 sums into a float64 state) and torch's bf16
    # matmul (whose result is itself rounded to bfloat16), against float64 of the same values
    zb64 = zb.double()
    gram_b = zb64.T @ zb64
    lower = torch.tril(torch.ones(d, d, dtype=torch.bool))

    def gram_error(gram: torch.Tensor) -> float:
        return float((gram.double() - gram_b)[lower].norm() / gram_b[lower].norm())

    bf16_accuracy = {
        "C++ tiled fast bf16": gram_error(gram_with("tiled", "fast", zb)()),
        "torch Zb.T@Zb bf16": gram_error(torch.mm(zb.T, zb)),
    }
    del zb64

    end_to_end = {
        "rf.rankme exact": lambda: rf.rankme(z),
        "rf.rankme fast": lambda: rf.rankme(z, precision="fast"),
        "torch.linalg.svdvals fp32": lambda: torch.linalg.svdvals(z),
        "torch Z.T@Z fp64 + eigvalsh": lambda: torch_gram_eig_rankme(z),
        "numpy.linalg.svd fp64": lambda: np.linalg.svd(zn.astype(np.float64), compute_uv=False),
    }
    kernels = ["blas", "tiled"] if rf._C is not None and rf._C.blas else ["tiled"]
    gram_step: dict[str, Callable[[], object]] = {
        "torch.mm(Z.T, Z) fp32": lambda: torch.mm(z.T, z),
        "torch Zd=Z.double(); Zd.T@Zd": lambda: (lambda zd: zd.T @ zd)(z.double()),
        "torch Zb.T@Zb bf16": lambda: torch.mm(zb.T, zb),
    }
    for kernel in kernels:
        gram_step[f"C++ {kernel} exact"] = gram_with(kernel, "exact", z)
        gram_step[f"C++ {kernel} fast"] = gram_with(kernel, "fast", z)
    gram_step["C++ tiled fast bf16"] = gram_with("tiled", "fast", zb)
    has_tiles = cpu_info()["variants"].get("amx", False)
    if has_tiles:  # the tile kernel forced, next to what the measured dispatch picks
        gram_step["C++ tiled-amx fast bf16"] = gram_with("tiled", "fast", zb, isa="amx")
        gram_step["C++ tiled-amx fast"] = gram_with("tiled", "fast", z, isa="amx")
    has_avx2 = cpu_info()["variants"].get("avx2", False)
    if has_avx2:
        gram_step["C++ tiled-avx2 exact"] = gram_with("tiled", "exact", z, isa="avx2")
        gram_step["C++ tiled-avx2 fast"] = gram_with("tiled", "fast", z, isa="avx2")
    gram64 = (lambda zd: zd.T @ zd)(z.double())
    eig = {"torch.linalg.eigvalsh fp64 DxD": lambda: torch.linalg.eigvalsh(gram64)}

    for case in (end_to_end, gram_step, eig):  # warm-up: thread pools, allocator, BLAS buffers
        for run in case.values():
            run()
    t_end = time_interleaved(end_to_end, args.svd_rounds)
    t_gram = time_interleaved(gram_step, args.rounds)
    t_eig = time_interleaved(eig, args.rounds)
    peaks = unit_peaks(args.peak_seconds)

    def summary(times: dict[str, list[float]]) -> dict[str, dict]:
        return {k: {"median_s": statistics.median(v), "min_s": min(v), "runs_s": v} for k, v in times.items()}

    med = {k: statistics.median(v) for k, v in {**t_end, **t_gram, **t_eig}.items()}
    best = rf._C.auto_kernel() if rf._C is not None else "tiled"  # what backend="cpu" runs
    ratios = {
        "rankme exact vs svdvals fp32": med["torch.linalg.svdvals fp32"] / med["rf.rankme exact"],
        "rankme fast vs svdvals fp32": med["torch.linalg.svdvals fp32"] / med["rf.rankme fast"],
        "C++ exact Gram vs torch fp64 route": med["torch Zd=Z.double(); Zd.T@Zd"] / med[f"C++ {best} exact"],
        "C++ fast Gram vs torch.mm fp32": med["torch.mm(Z.T, Z) fp32"] / med[f"C++ {best} fast"],
        "C++ fast Gram, bf16 input, vs torch bf16 Zb.T@Zb": med["torch Zb.T@Zb bf16"] / med["C++ tiled fast bf16"],
    }
    if has_tiles:
        ratios["amx tiles fast Gram, bf16 input, vs torch bf16 Zb.T@Zb"] = (
            med["torch Zb.T@Zb bf16"] / med["C++ tiled-amx fast bf16"])  # fmt: skip
        ratios["amx tiles fast Gram (bf16 split) vs torch.mm fp32"] = (
            med["torch.mm(Z.T, Z) fp32"] / med["C++ tiled-amx fast"])  # fmt: skip
    if has_avx2 and "C++ blas exact" in med:
        ratios["AVX2 variant exact vs OpenBLAS dsyrk"] = med["C++ blas exact"] / med["C++ tiled-avx2 exact"]
        ratios["AVX2 variant fast vs OpenBLAS ssyrk"] = med["C++ blas fast"] / med["C++ tiled-avx2 fast"]
    in_use = cpu_info()["in_use"] if rf._C is not None else None
    unit_of = {  # which unit bounds each C++ case, and the variant that ran it
        "C++ tiled exact": (in_use, "fp64"), "C++ tiled fast": (in_use, "fp32"),
        "C++ tiled fast bf16": (in_use, "bf16" if in_use == "avx512bf16" else "fp32"),
        "C++ tiled-avx2 exact": ("avx2", "fp64"), "C++ tiled-avx2 fast": ("avx2", "fp32"),
        "C++ tiled-amx fast bf16": ("amx", "tile-bf16"), "C++ tiled-amx fast": ("amx", "tile-bf16"),
    }
    useful_flops = n * d * (d + 1)
    fraction_of_peak = {
        name: {"variant": isa, "unit": unit, "useful_gflops": useful_flops / med[name] / 1e9,
               "unit_peak_gflops": peaks[isa][unit], "fraction": useful_flops / med[name] / 1e9 / peaks[isa][unit]}
        for name, (isa, unit) in unit_of.items() if name in med and isa in peaks and peaks[isa][unit] > 0
    }  # fmt: skip
    floor = {
        "gram_multiply_adds": n * d * (d + 1) // 2,
        "gram_flops": n * d * (d + 1),
        "full_gemm_flops": 2 * n * d * d,
        "eigensolve_flops_approx": int(4 / 3 * d**3),
        "input_bytes_fp32": n * d * 4,
        "state_bytes_fp64": d * d * 8,
    }
    result = {
        "benchmark": "bench/bench_cpu.py",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(), "logical_cores": os.cpu_count(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "rankme_fast": rf.__version__, "blas": None if rf._C is None else rf._C.blas,
            "tiled_simd": None if rf._C is None else rf._C.tiled_simd(),
            "auto_kernel": None if rf._C is None else rf._C.auto_kernel(),
            "cpu": cpu_info(),
        },
        "shape": {"rows": n, "dim": d, "dtype": "float32"},
        "rounds": {"gram": args.rounds, "end_to_end": args.svd_rounds},
        "floor": floor,
        "end_to_end": summary(t_end),
        "gram_step": summary(t_gram),
        "eigensolve": summary(t_eig),
        "ratios_of_medians": ratios,
        "unit_peaks_gflops": peaks,
        "fraction_of_unit_peak": fraction_of_peak,
        "bf16_gram_relative_error_vs_float64": bf16_accuracy,
        "accuracy_vs_float64_svd": {k: {"rankme": v, "rel_error": abs(v - reference) / reference}
                                    for k, v in values.items()} | {"reference_rankme": reference},
    }
    out = args.out or RESULTS / f"cpu-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"N={n} D={d} fp32 on {result['machine']['cpu']} ({os.cpu_count()} cores); medians of interleaved runs\n")
    print("| step | median s | GFLOP/s (useful) | rel err vs fp64 SVD |\n|---|---:|---:|---:|")
    for name, seconds in med.items():
        flops = floor["gram_flops"] if name in t_gram else None
        rate = f"{flops / seconds / 1e9:.0f}" if flops else ""
        err = result["accuracy_vs_float64_svd"].get(name, {}).get("rel_error")
        print(f"| {name} | {seconds:.3f} | {rate} | {'' if err is None else f'{err:.1e}'} |")
    print("\n| ratio (median over median) | x |\n|---|---:|")
    for name, ratio in ratios.items():
        print(f"| {name} | {ratio:.2f} |")
    print("\n| variant | fp64 FMA GF/s | fp32 FMA GF/s | bf16 dot GF/s | bf16 tile GF/s |\n|---|---:|---:|---:|---:|")
    for isa, rates in peaks.items():
        print(f"| {isa} | {rates['fp64']:.0f} | {rates['fp32']:.0f} | {rates['bf16']:.0f} | {rates['tile-bf16']:.0f} |")
    print("\n| kernel | variant | unit | useful GF/s | of unit peak |\n|---|---|---|---:|---:|")
    for name, row in fraction_of_peak.items():
        print(f"| {name} | {row['variant']} | {row['unit']} | {row['useful_gflops']:.0f} | {row['fraction']:.0%} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
