"""GPU benchmark: builds the package, runs the GPU tests and stops unless they pass, then times
(CUDA events through triton.testing.do_bench, medians, L2 flushed between runs) in sections.
Every timed kernel's output is first checked against a float64 reference on the same data; a
wrong one stops the run, so no time of a wrong kernel is ever recorded. Sections:

* triton: the Triton SYRK vs torch.mm(Z.T, Z) for bf16, fp16, fp32 (tf32x3 / tf32 / ieee) at
  D in {512, ..., 8192}, N in {262144, 25600}, against the measured bf16 GEMM peak (8192³),
  each SYRK's rate counting only the triangle's N·D(D+1)/2 multiply-adds;
* cuda: the exact CUDA SYRK (float64 tensor cores) vs torch's float64 route
  (Zd = Z.double(); Zd.T @ Zd, cast included) and vs fp32 torch.mm(Z.T, Z), N=262144,
  D in {1024, 2048, 4096, 8192}, each kernel variant, and the float64 eigensolve at each D
  (where the time of an exact RankMe goes);
* e2e: rf.rankme (fast, exact) vs torch.linalg.svdvals(Z.float()), N=25600, D in {1024, 2048, 4096};
* canary: the one-time cost of each GPU backend's first-use self-check (rankme_fast.backends.canary)
  per input dtype and precision, on first use (Triton compiles then) and again once compiled;
* training: bench/bench_training.py --device cuda (RankMeMetric per-step update vs a model
  step, compute vs queue + SVD), into its own results/training-cuda-<date>.json; needs
  torchmetrics in the device's Python, else the section records why it was skipped.

Each section merges its numbers into bench/results/gpu-<date>-<device>.json, so sections can
run in separate calls (the device allows 10 minutes per command), and prints a markdown table.

    python3 bench/bench_gpu.py                          # make OFFLINE=1, GPU tests, every section
    python3 bench/bench_gpu.py --sections cuda,e2e      # some sections (tests still run first)
    python3 bench/bench_gpu.py --no-build --sections cuda   # timings only, venv already built
    python3 bench/bench_gpu.py --quick                  # smaller sizes, for a first look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = ROOT / "bench" / "results"


SECTIONS = ("triton", "cuda", "e2e", "canary", "training")
GPU_TESTS = ["tests/test_triton.py", "tests/test_gpu.py", "tests/test_agreement.py", "tests/test_cuda_kernel.py"]


def build_and_test(markers: str) -> dict[str, object]:
    """make OFFLINE=1 (system torch and Triton, nothing downloaded), then the GPU test files;
    exits when any of them fails (or none ran): timings of failing kernels are not published."""
    subprocess.run(["make", "OFFLINE=1", ".venv/.installed"], cwd=ROOT, check=True)
    command = [str(VENV_PYTHON), "-m", "pytest", "-q", "-m", markers, *GPU_TESTS]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(run.stdout[-3000:], run.stderr[-2000:], sep="\n")
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "no output"
    if run.returncode != 0:
        raise SystemExit(f"the GPU tests did not pass ({summary}); no timings recorded")
    return {"command": " ".join(command[1:]), "returncode": run.returncode, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--markers", default="not slow", help="pytest -m expression for the GPU tests")
    parser.add_argument("--no-build", action="store_true", help="skip make and the tests (already done)")
    parser.add_argument("--tests", type=Path, default=None, help=argparse.SUPPRESS)  # JSON from the build step
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.sections = [name for name in args.sections.split(",") if name]
    if unknown := set(args.sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}")
    if not args.no_build:
        tests = build_and_test(args.markers)
        record = ROOT / ".venv" / "gpu-tests.json"
        record.write_text(json.dumps(tests))
        forwarded = [a for a in sys.argv[1:] if a != "--no-build"]
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, "--no-build", "--tests", str(record), *forwarded])
    tests = json.loads(args.tests.read_text()) if args.tests else None
    run_timings(args, tests)


def run_timings(args: argparse.Namespace, tests: dict[str, object] | None) -> None:
    import torch
    import triton

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    props = torch.cuda.get_device_properties(torch.device("cuda"))
    torch.manual_seed(0)
    slug = re.sub(r"[^a-z0-9]+", "-", props.name.lower()).strip("-")
    date = dt.date.today().isoformat()
    out = args.out or RESULTS / f"gpu-{date}-{slug}.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update({
        "date": date,
        "device": props.name,
        "multiprocessors": props.multi_processor_count,
        "versions": {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda},
    })  # fmt: skip
    if tests is not None:
        result["tests"] = tests
    for name in args.sections:
        run = {"triton": triton_section, "cuda": cuda_section, "e2e": end_to_end_section, "canary": canary_section,
               "training": training_section}  # fmt: skip
        section = run[name](args.quick)
        section["command"] = f"python3 bench/bench_gpu.py --sections {name}" + (" --quick" if args.quick else "")
        result[name] = section
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))  # after each section: a later one may run out of time
    print(f"\nwrote {out}")


def training_section(quick: bool) -> dict[str, object]:
    """bench_training.py on the GPU, in a child process (it writes its own JSON)."""
    command = [sys.executable, str(ROOT / "bench" / "bench_training.py"), "--device", "cuda"]
    if quick:
        command += ["--steps", "20", "--rounds", "3", "--svd-rounds", "1"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    print(done.stdout)
    if done.returncode != 0:
        return {"skipped": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    written = re.search(r"wrote (\S+)", done.stdout)
    return {"results": written.group(1) if written else None}


def print_table(rows: list[dict[str, object]], columns: list[tuple[str, str, str]]) -> None:
    """A markdown table: one (header, key, format) per column."""
    print("\n| " + " | ".join(header for header, _, _ in columns) + " |")
    print("|" + "---:|" * len(columns))
    for row in rows:
        print("| " + " | ".join(fmt.format(row[key]) for _, key, fmt in columns) + " |")


def checked(label: str, kernel, reference, tolerance: float):
    """Run `kernel()` once and compare what it returns (a Gram, whose lower triangle counts, or
    a number) with `reference`: the relative error must be within `tolerance`, else the
    benchmark stops here. Returns `kernel` for timing."""
    import torch

    out = kernel()
    if isinstance(out, torch.Tensor):
        lower = torch.tril(torch.ones_like(reference, dtype=torch.bool))
        error = float((out.double() - reference)[lower].norm() / reference[lower].norm())
    else:
        error = abs(float(out) - float(reference)) / abs(float(reference))
    if not error <= tolerance:  # NaN fails too
        raise SystemExit(f"{label}: relative error {error:.2e} against float64 exceeds {tolerance:.0e}; stopping")
    return kernel


def float64_gram(z):
    """ZᵀZ of exactly the values in z, in float64 on z's device (the reference)."""
    zd = z.double()
    return zd.T @ zd


def median_ms(fn) -> float:
    """Median over repeats lasting at least ~6 calls or 300 ms, after a timed warm-up call."""
    import torch
    from triton.testing import do_bench

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    start.record()
    fn()
    stop.record()
    torch.cuda.synchronize()
    once = start.elapsed_time(stop)
    return float(do_bench(fn, warmup=max(25, 2 * once), rep=max(300, 6 * once), return_mode="median"))


def triton_section(quick: bool) -> dict[str, object]:
    import torch

    from rankme_fast.backends.triton_kernels import syrk_update

    size = 8192 if not quick else 4096
    operands = [torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    peak_tflops = 2 * size**3 / median_ms(lambda: operands[0] @ operands[1]) / 1e9
    operands.clear()
    print(f"measured bf16 GEMM peak {peak_tflops:.0f} TFLOP/s ({size}³)")

    dims = [512, 1024, 2048, 4096, 8192] if not quick else [512, 2048]
    row_counts = [262144, 25600] if not quick else [25600]
    kinds = {  # name -> (input dtype, Triton fp32 input precision, torch.mm's TF32 switch)
        "bf16": (torch.bfloat16, "ieee", False),
        "fp16": (torch.float16, "ieee", False),
        "fp32-tf32x3": (torch.float32, "tf32x3", False),
        "fp32-tf32": (torch.float32, "tf32", True),
        "fp32-ieee": (torch.float32, "ieee", False),
    }
    rows_out = []
    for rows in row_counts:
        for dim in dims:
            for kind, (dtype, precision, tf32) in kinds.items():
                z = torch.randn(rows, dim, device="cuda").to(dtype)
                reference = float64_gram(z)
                tolerance = 1e-2 if precision == "tf32" else 1e-3
                state = torch.zeros(dim, dim, dtype=torch.float64, device="cuda")

                def once(z=z, s=state, p=precision):
                    s.zero_()
                    syrk_update(z, s, input_precision=p)
                    return s

                checked(f"Triton SYRK {kind} N={rows} D={dim}", once, reference, tolerance)
                triton_ms = median_ms(lambda z=z, s=state, p=precision: syrk_update(z, s, input_precision=p))
                torch.backends.cuda.matmul.allow_tf32 = tf32
                mm = checked(f"torch.mm {kind} N={rows} D={dim}", lambda z=z: torch.mm(z.T, z), reference, tolerance)
                mm_ms = median_ms(mm)
                torch.backends.cuda.matmul.allow_tf32 = False
                del reference
                useful = rows * dim * (dim + 1)  # 2 x the triangle's multiply-adds
                rows_out.append({
                    "rows": rows, "dim": dim, "kind": kind, "triton_ms": triton_ms, "torch_mm_ms": mm_ms,
                    "speedup_vs_torch_mm": mm_ms / triton_ms,
                    "triton_useful_tflops": useful / triton_ms / 1e9,
                    "pct_of_bf16_peak": 100 * useful / triton_ms / 1e9 / peak_tflops,
                })  # fmt: skip
                del z, state
                torch.cuda.empty_cache()

    print_table(rows_out, [
        ("N", "rows", "{}"), ("D", "dim", "{}"), ("input", "kind", "{}"), ("Triton ms", "triton_ms", "{:.3f}"),
        ("torch.mm ms", "torch_mm_ms", "{:.3f}"), ("x", "speedup_vs_torch_mm", "{:.2f}"),
        ("useful TFLOP/s", "triton_useful_tflops", "{:.0f}"), ("% bf16 peak", "pct_of_bf16_peak", "{:.0f}"),
    ])  # fmt: skip
    target = [r for r in rows_out if r["kind"] == "bf16" and r["rows"] == 262144 and r["dim"] >= 2048]
    acceptance = {
        "bf16_min_speedup_vs_torch_mm_D>=2048_N=262144": min((r["speedup_vs_torch_mm"] for r in target), default=None),
        "bf16_min_pct_of_peak_D>=2048_N=262144": min((r["pct_of_bf16_peak"] for r in target), default=None),
    }
    print(f"acceptance (Triton section): {json.dumps(acceptance)}")
    return {
        "bf16_gemm_peak_tflops": peak_tflops,
        "gram": rows_out,
        "acceptance": acceptance,
        "targets": {"bf16 speedup vs torch.mm": 1.6, "pct of bf16 peak": 60},
    }


def cuda_section(quick: bool) -> dict[str, object]:
    import torch

    from rankme_fast.backends import cuda_backend as cuda

    rows = 262144 if not quick else 65536
    dims = [1024, 2048, 4096, 8192] if not quick else [1024, 2048]
    major = torch.cuda.get_device_capability()[0]
    variants = [v for v, need in (("dmma-16x8x8", 9), ("dmma-8x8x4", 8), ("simt", 0)) if major >= need]
    size = 8192 if not quick else 4096
    operands = [torch.randn(size, size, device="cuda", dtype=torch.float64) for _ in range(2)]
    dgemm_tflops = 2 * size**3 / median_ms(lambda: operands[0] @ operands[1]) / 1e9
    operands.clear()
    print(f"measured float64 GEMM (cuBLAS) {dgemm_tflops:.1f} TFLOP/s ({size}³)")

    def float64_route(z):
        zd = z.double()
        return torch.mm(zd.T, zd)

    rows_out = []
    for dim in dims:
        z = torch.randn(rows, dim, device="cuda")
        reference = float64_gram(z)
        state = torch.zeros(dim, dim, dtype=torch.float64, device="cuda")
        entry: dict[str, object] = {"rows": rows, "dim": dim, "input": "float32"}
        for variant in variants:

            def once(z=z, s=state, v=variant):
                s.zero_()
                cuda.syrk_update(z, s, variant=v)
                return s

            checked(f"CUDA SYRK {variant} D={dim}", once, reference, 1e-12)
            entry[f"cuda_{variant}_ms"] = median_ms(lambda z=z, s=state, v=variant: cuda.syrk_update(z, s, variant=v))
        best = min(variants, key=lambda v: entry[f"cuda_{v}_ms"])  # the fastest, by its time
        entry["cuda_variant"] = best
        entry["cuda_auto_variant"] = cuda.syrk_update(z[:1], state)[0]  # what variant="auto" runs
        entry["cuda_ms"] = entry[f"cuda_{best}_ms"]
        route = checked(f"float64 route D={dim}", lambda z=z: float64_route(z), reference, 1e-12)
        entry["torch_float64_route_ms"] = median_ms(route)
        mm = checked(f"torch.mm fp32 D={dim}", lambda z=z: torch.mm(z.T, z), reference, 1e-3)
        entry["torch_mm_fp32_ms"] = median_ms(mm)
        del reference
        entry["speedup_vs_float64_route"] = entry["torch_float64_route_ms"] / entry["cuda_ms"]
        entry["speedup_vs_torch_mm_fp32"] = entry["torch_mm_fp32_ms"] / entry["cuda_ms"]
        entry["cuda_useful_tflops"] = rows * dim * (dim + 1) / entry["cuda_ms"] / 1e9
        entry["pct_of_dgemm_rate"] = 100 * entry["cuda_useful_tflops"] / dgemm_tflops
        del z
        symmetric = torch.randn(dim, dim, dtype=torch.float64, device="cuda")
        symmetric = symmetric @ symmetric.T
        entry["eigvalsh_fp64_ms"] = median_ms(lambda m=symmetric: torch.linalg.eigvalsh(m))
        entry["gram_share_of_exact_rankme"] = entry["cuda_ms"] / (entry["cuda_ms"] + entry["eigvalsh_fp64_ms"])
        rows_out.append(entry)
        del state, symmetric
        torch.cuda.empty_cache()

    print_table(rows_out, [
        ("N", "rows", "{}"), ("D", "dim", "{}"), ("fastest variant", "cuda_variant", "{}"),
        ("CUDA exact ms", "cuda_ms", "{:.2f}"),
        ("float64 route ms", "torch_float64_route_ms", "{:.2f}"), ("x", "speedup_vs_float64_route", "{:.2f}"),
        ("fp32 torch.mm ms", "torch_mm_fp32_ms", "{:.2f}"), ("x", "speedup_vs_torch_mm_fp32", "{:.2f}"),
        ("useful TFLOP/s", "cuda_useful_tflops", "{:.1f}"), ("eigvalsh ms", "eigvalsh_fp64_ms", "{:.1f}"),
        ("Gram share", "gram_share_of_exact_rankme", "{:.0%}"),
    ])  # fmt: skip
    acceptance = {
        "min_speedup_vs_float64_route": min(e["speedup_vs_float64_route"] for e in rows_out),
        "min_speedup_vs_torch_mm_fp32": min(e["speedup_vs_torch_mm_fp32"] for e in rows_out),
    }
    print(f"acceptance (CUDA section): {json.dumps(acceptance)}")
    return {
        "float64_gemm_tflops": dgemm_tflops,
        "gram": rows_out,
        "acceptance": acceptance,
        "targets": {"speedup vs float64 route": 1.5, "speedup vs fp32 torch.mm": 1.0},
    }


def end_to_end_section(quick: bool) -> dict[str, object]:
    import torch

    import rankme_fast as rf

    rows_out = []
    for dim in [1024, 2048, 4096] if not quick else [1024, 2048]:
        z = torch.randn(25600, dim, device="cuda")
        reference = rf.metrics.rankme(torch.linalg.svdvals(z.double()).cpu().numpy())
        fast = checked(f"rf.rankme fast D={dim}", lambda z=z: rf.rankme(z, precision="fast"), reference, 1e-3)
        exact = checked(f"rf.rankme exact D={dim}", lambda z=z: rf.rankme(z, precision="exact"), reference, 1e-9)
        svd = lambda z=z: torch.linalg.svdvals(z.float())  # noqa: E731
        checked(f"svdvals fp32 D={dim}", lambda s=svd: rf.metrics.rankme(s().double().cpu().numpy()), reference, 1e-3)
        entry = {
            "rows": 25600, "dim": dim,
            "rankme_fast_ms": median_ms(fast),
            "rankme_exact_ms": median_ms(exact),
            "svdvals_fp32_ms": median_ms(svd),
        }  # fmt: skip
        entry["fast_speedup_vs_svdvals"] = entry["svdvals_fp32_ms"] / entry["rankme_fast_ms"]
        entry["exact_speedup_vs_svdvals"] = entry["svdvals_fp32_ms"] / entry["rankme_exact_ms"]
        rows_out.append(entry)
        print(f"end to end D={dim}: fast {entry['rankme_fast_ms']:.2f} ms, exact {entry['rankme_exact_ms']:.2f} ms, "
              f"svdvals {entry['svdvals_fp32_ms']:.2f} ms")
        del z
    at_2048 = [e for e in rows_out if e["dim"] == 2048]
    return {
        "end_to_end": rows_out,
        "acceptance": {"fast_rankme_speedup_vs_svdvals_D=2048": at_2048[0]["fast_speedup_vs_svdvals"]},
        "targets": {"fast rankme vs svdvals": 20},
    }


def canary_section(quick: bool) -> dict[str, object]:
    """Seconds each GPU backend's first-use self-check takes, per dtype and precision: first
    in this process (Triton compiles the kernel for the check's shape then) and once more with
    the kernel compiled (the check alone)."""
    import torch

    from rankme_fast._inputs import as_matrix, torch_dtype
    from rankme_fast.backends import _REGISTRY, canary

    device = torch.device("cuda")
    rows_out = []
    for name in ("cuda", "triton", "triton-deterministic"):
        backend = _REGISTRY[name]
        for precision in ("exact", "fast"):
            for dtype in ("float64", "float32", "float16", "bfloat16"):
                matrix = as_matrix(torch.zeros(2, 2, device=device, dtype=torch_dtype(dtype)))
                if backend.unavailable_reason(matrix, precision) is not None:
                    continue
                entry: dict[str, object] = {"backend": name, "precision": precision, "dtype": dtype}
                for run in ("first_s", "compiled_s"):
                    canary.forget()
                    entry["verdict"] = canary.verdict(backend, device, dtype, precision) or "passed"
                    entry[run] = canary.seconds_spent[(name, str(device), dtype, precision)]
                rows_out.append(entry)
    print_table(rows_out, [("backend", "backend", "{}"), ("precision", "precision", "{}"), ("dtype", "dtype", "{}"),
                           ("first s", "first_s", "{:.3f}"), ("compiled s", "compiled_s", "{:.4f}"),
                           ("verdict", "verdict", "{}")])  # fmt: skip
    return {"self_checks": rows_out}


if __name__ == "__main__":
    main()
