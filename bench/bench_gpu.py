"""GPU benchmark: builds the package, runs the GPU tests and stops unless they pass, then times
(CUDA events through triton.testing.do_bench, medians, L2 flushed between runs) in sections.
Every timed kernel's output is first checked against a float64 reference on the same data; a
wrong one ends its section (recorded as failed, the other sections still run), so no time of a
wrong kernel is ever recorded. Sections:

* triton: the Triton SYRK vs torch.mm(Z.T, Z) for bf16, fp16, fp32 (tf32x3 / tf32 / ieee) at
  D in {512, ..., 8192}, N in {262144, 25600}, against the measured bf16 GEMM peak (8192³),
  each SYRK's rate counting only the triangle's N·D(D+1)/2 multiply-adds;
* cuda: the exact CUDA SYRK (float64 tensor cores) vs torch's float64 route
  (Zd = Z.double(); Zd.T @ Zd, cast included) and vs fp32 torch.mm(Z.T, Z), N=262144,
  D in {1024, 2048, 4096, 8192}, each kernel variant, and the float64 eigensolve at each D
  (where the time of an exact RankMe goes);
* e2e: rf.rankme (fast, exact) vs torch.linalg.svdvals(Z.float()), N=25600, D in {1024, 2048, 4096};
* self_check: the one-time cost of each GPU backend's first-use self-check (rankme_fast.backends.self_check)
  per input dtype and precision, on first use (Triton compiles then) and again once compiled;
* training: bench/bench_training.py --device cuda (RankMeMetric per-step update vs a model
  step, compute vs queue + SVD), into its own JSON beside the results (<out>-training.json);
  needs torchmetrics in the device's Python, else the section records why it was skipped.

Each section merges its numbers into bench/results/gpu-<date>-<device>.json (or --out) as soon
as it ends, so a run cut off later still leaves its figures, and prints a markdown table.

Correctness checks compare against float64 with a bound that follows what is checked
(`gram_tolerance`): float32 sums of N rows, the rounding of products (tf32), and the dtype the
result is stored in (torch.mm of bf16/fp16 returns bf16/fp16). fp16 inputs are scaled so that
torch.mm's fp16 Gram cannot overflow (its diagonal would pass 65504 at N = 262144).

    python3 bench/bench_gpu.py                          # make OFFLINE=1, GPU tests, every section
    python3 bench/bench_gpu.py --sections cuda,e2e      # some sections (tests still run first)
    python3 bench/bench_gpu.py --no-build --sections cuda   # timings only, venv already built
    python3 bench/bench_gpu.py --quick                  # smaller sizes, for a first look
    python3 bench/bench_gpu.py --dry-run --out X.json   # every section's control flow and check on the
                                                        # CPU: Triton's interpreter, tiny shapes, no GPU

scripts/gpu_run.sh runs the build, the GPU tests and `--quick` as one script for a GPU lent for
minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = ROOT / "bench" / "results"


SECTIONS = ("triton", "cuda", "e2e", "self_check", "training")
# The test files with GPU cases (each takes the device as a parameter or has a GPU part).
GPU_TESTS = ["tests/kernels/test_cuda_kernel.py", "tests/kernels/test_triton.py", "tests/kernels/test_self_check.py",
             "tests/core/test_agreement.py", "tests/core/test_compiled.py", "tests/core/test_slq.py",
             "tests/integrations/test_distributed.py"]  # fmt: skip


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
    parser.add_argument("--dry-run", action="store_true", help="on the CPU: Triton interpreter, tiny shapes")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--markers", default="not slow", help="pytest -m expression for the GPU tests")
    parser.add_argument("--no-build", action="store_true", help="skip make and the tests (already done)")
    parser.add_argument("--tests", type=Path, default=None, help=argparse.SUPPRESS)  # JSON from the build step
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.sections = [name for name in args.sections.split(",") if name]
    if unknown := set(args.sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}")
    if args.dry_run:
        if os.environ.get("TRITON_INTERPRET") != "1":  # read when Triton is imported: set it, start again
            os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "TRITON_INTERPRET": "1"})
        run_timings(args, None)
        return
    if not args.no_build:
        tests = build_and_test(args.markers)
        record = ROOT / ".venv" / "gpu-tests.json"
        record.write_text(json.dumps(tests))
        forwarded = [a for a in sys.argv[1:] if a != "--no-build"]
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, "--no-build", "--tests", str(record), *forwarded])
    tests = json.loads(args.tests.read_text()) if args.tests else None
    run_timings(args, tests)


class Target:
    """Where the sections run: the GPU, or with --dry-run the CPU (Triton's interpreter, tiny
    shapes, wall-clock timing), so that every section, check and write is exercised anywhere."""

    def __init__(self, quick: bool, dry_run: bool) -> None:
        self.quick, self.dry_run = quick, dry_run
        self.device = "cpu" if dry_run else "cuda"

    def size(self, full, quick, dry):
        return dry if self.dry_run else quick if self.quick else full

    def median_ms(self, fn) -> float:
        if self.dry_run:
            times = []
            for _ in range(3):
                started = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - started))
            return statistics.median(times)
        return median_ms(fn)


def run_timings(args: argparse.Namespace, tests: dict[str, object] | None) -> None:
    import torch
    import triton

    target = Target(args.quick, args.dry_run)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device (or --dry-run)")
    if args.dry_run:
        name, multiprocessors, cuda = "cpu (dry run: Triton interpreter)", os.cpu_count(), None
    else:
        props = torch.cuda.get_device_properties(torch.device("cuda"))
        name, multiprocessors, cuda = props.name, props.multi_processor_count, torch.version.cuda
    torch.manual_seed(0)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    date = dt.date.today().isoformat()
    out = args.out or RESULTS / f"gpu-{date}-{slug}.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update({
        "date": date,
        "device": name,
        "multiprocessors": multiprocessors,
        "dry_run": args.dry_run,
        "versions": {"torch": torch.__version__, "triton": triton.__version__, "cuda": cuda},
    })  # fmt: skip
    if tests is not None:
        result["tests"] = tests
    failed = []
    for section_name in args.sections:
        run = {"triton": triton_section, "cuda": cuda_section, "e2e": end_to_end_section,
               "self_check": self_check_section, "training": training_section}  # fmt: skip
        try:
            section = run[section_name](target, out)
        except Exception as error:  # a wrong kernel (CheckFailed) or a bug: recorded, and the next section runs
            section = {"failed": f"{type(error).__name__}: {error}"}
            failed.append(section_name)
            print(f"section {section_name} failed: {section['failed']}", file=sys.stderr)
        flags = (" --quick" if args.quick else "") + (" --dry-run" if args.dry_run else "")
        section["command"] = f"python3 bench/bench_gpu.py --sections {section_name}{flags}"
        result[section_name] = section
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))  # after each section: a later one may run out of time
    print(f"\nwrote {out}")
    if failed:
        raise SystemExit(f"sections that failed: {', '.join(failed)} (reasons in {out})")


class CheckFailed(Exception):
    """A kernel's output is off its float64 reference: none of its times is recorded."""


def training_section(target: Target, out: Path) -> dict[str, object]:
    """bench_training.py on the device, in a child process writing its own JSON beside `out`."""
    command = [sys.executable, str(ROOT / "bench" / "bench_training.py"), "--device", target.device,
               "--out", str(out.with_name(out.stem + "-training.json"))]  # fmt: skip
    if target.quick:
        command += ["--steps", "20", "--rounds", "3", "--svd-rounds", "1"]
    if target.dry_run:
        command += ["--steps", "2", "--rounds", "1", "--svd-rounds", "1", "--no-compiled"]
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


UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "tf32": 2.0**-11, "float16": 2.0**-11,
                 "bfloat16": 2.0**-8}  # fmt: skip


def gram_tolerance(rows: int, stored: str = "float64", products: str = "float32") -> float:
    """Relative error (Frobenius, lower triangle) a Gram of `rows` rows of random data may have
    against float64 when its products are rounded as `products` ("float32": exact for 16-bit
    inputs; "tf32": inputs rounded to 10 bits), summed in float32 and stored as `stored`: one
    unit of the stored dtype, 8 of the products' rounding, and 4·√rows float32 roundings for the
    sums (random signs; a block-wise sum is tighter)."""
    return UNIT_ROUNDOFF[stored] + 8 * UNIT_ROUNDOFF[products] + 4 * math.sqrt(rows) * UNIT_ROUNDOFF["float32"]


def fp16_scale(rows: int) -> float:
    """Scale for fp16 inputs of `rows` unit-variance rows: the diagonal of torch.mm's fp16 Gram
    (about rows·scale²) then stays near 16384, well below fp16's largest value, 65504."""
    return min(1.0, math.sqrt(16384 / rows))


def checked(label: str, kernel, reference, tolerance: float):
    """Run `kernel()` once and compare what it returns (a Gram, whose lower triangle counts, or
    a number) with `reference`: the relative error must be within `tolerance`, else the section
    ends here (CheckFailed). Returns `kernel` for timing."""
    import torch

    out = kernel()
    if isinstance(out, torch.Tensor):
        lower = torch.tril(torch.ones_like(reference, dtype=torch.bool))
        error = float((out.double() - reference)[lower].norm() / reference[lower].norm())
    else:
        error = abs(float(out) - float(reference)) / abs(float(reference))
    if not error <= tolerance:  # NaN fails too
        raise CheckFailed(f"{label}: relative error {error:.2e} against float64 exceeds {tolerance:.1e}")
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


def triton_section(target: Target, out: Path) -> dict[str, object]:
    import torch

    from rankme_fast.backends.triton_kernels import syrk_update

    device = target.device
    size = target.size(8192, 4096, 256)
    operands = [torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2)]
    peak_tflops = 2 * size**3 / target.median_ms(lambda: operands[0] @ operands[1]) / 1e9
    operands.clear()
    print(f"measured bf16 GEMM peak {peak_tflops:.0f} TFLOP/s ({size}³)")

    dims = target.size([512, 1024, 2048, 4096, 8192], [512, 2048], [64])
    row_counts = target.size([262144, 25600], [25600], [300])
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
                scale = fp16_scale(rows) if dtype == torch.float16 else 1.0
                z = (torch.randn(rows, dim, device=device) * scale).to(dtype)
                reference = float64_gram(z)
                products = "tf32" if precision == "tf32" else "float32"
                state = torch.zeros(dim, dim, dtype=torch.float64, device=device)

                def once(z=z, s=state, p=precision):
                    s.zero_()
                    syrk_update(z, s, input_precision=p)
                    return s

                bound = gram_tolerance(rows, "float64", products)
                checked(f"Triton SYRK {kind} N={rows} D={dim}", once, reference, bound)
                triton_ms = target.median_ms(lambda z=z, s=state, p=precision: syrk_update(z, s, input_precision=p))
                if device == "cuda":
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                stored = str(dtype).removeprefix("torch.")
                mm = checked(f"torch.mm {kind} N={rows} D={dim}", lambda z=z: torch.mm(z.T, z), reference,
                             gram_tolerance(rows, stored, "tf32" if tf32 else "float32"))  # fmt: skip
                mm_ms = target.median_ms(mm)
                if device == "cuda":
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
                if device == "cuda":
                    torch.cuda.empty_cache()

    print_table(rows_out, [
        ("N", "rows", "{}"), ("D", "dim", "{}"), ("input", "kind", "{}"), ("Triton ms", "triton_ms", "{:.3f}"),
        ("torch.mm ms", "torch_mm_ms", "{:.3f}"), ("x", "speedup_vs_torch_mm", "{:.2f}"),
        ("useful TFLOP/s", "triton_useful_tflops", "{:.0f}"), ("% bf16 peak", "pct_of_bf16_peak", "{:.0f}"),
    ])  # fmt: skip
    target_rows = [r for r in rows_out if r["kind"] == "bf16" and r["rows"] == 262144 and r["dim"] >= 2048]
    acceptance = {
        "bf16_min_speedup_vs_torch_mm_D>=2048_N=262144": min((r["speedup_vs_torch_mm"] for r in target_rows),
                                                             default=None),
        "bf16_min_pct_of_peak_D>=2048_N=262144": min((r["pct_of_bf16_peak"] for r in target_rows), default=None),
    }  # fmt: skip
    print(f"acceptance (Triton section): {json.dumps(acceptance)}")
    return {
        "bf16_gemm_peak_tflops": peak_tflops,
        "gram": rows_out,
        "acceptance": acceptance,
        "targets": {"bf16 speedup vs torch.mm": 1.6, "pct of bf16 peak": 60},
    }


def cuda_section(target: Target, out: Path) -> dict[str, object]:
    import torch

    device = target.device
    rows = target.size(262144, 65536, 1000)
    dims = target.size([1024, 2048, 4096, 8192], [1024, 2048], [64, 96])
    kernels = exact_kernels(target)
    size = target.size(8192, 4096, 256)
    operands = [torch.randn(size, size, device=device, dtype=torch.float64) for _ in range(2)]
    dgemm_tflops = 2 * size**3 / target.median_ms(lambda: operands[0] @ operands[1]) / 1e9
    operands.clear()
    print(f"measured float64 GEMM {dgemm_tflops:.1f} TFLOP/s ({size}³)")

    def float64_route(z):
        zd = z.double()
        return torch.mm(zd.T, zd)

    rows_out = []
    for dim in dims:
        z = torch.randn(rows, dim, device=device)
        reference = float64_gram(z)
        state = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        entry: dict[str, object] = {"rows": rows, "dim": dim, "input": "float32"}
        for variant, add in kernels.items():

            def once(z=z, s=state, add=add):
                s.zero_()
                add(z, s)
                return s

            checked(f"exact SYRK {variant} D={dim}", once, reference, 1e-12)
            entry[f"cuda_{variant}_ms"] = target.median_ms(lambda z=z, s=state, add=add: add(z, s))
        best = min(kernels, key=lambda v: entry[f"cuda_{v}_ms"])  # the fastest, by its time
        entry["cuda_variant"] = best
        if not target.dry_run:
            from rankme_fast.backends import cuda_backend as cuda

            entry["cuda_auto_variant"] = cuda.syrk_update(z[:1], state)[0]  # what variant="auto" runs
        entry["cuda_ms"] = entry[f"cuda_{best}_ms"]
        route = checked(f"float64 route D={dim}", lambda z=z: float64_route(z), reference, 1e-12)
        entry["torch_float64_route_ms"] = target.median_ms(route)
        mm = checked(f"torch.mm fp32 D={dim}", lambda z=z: torch.mm(z.T, z), reference, gram_tolerance(rows, "float32"))
        entry["torch_mm_fp32_ms"] = target.median_ms(mm)
        del reference
        entry["speedup_vs_float64_route"] = entry["torch_float64_route_ms"] / entry["cuda_ms"]
        entry["speedup_vs_torch_mm_fp32"] = entry["torch_mm_fp32_ms"] / entry["cuda_ms"]
        entry["cuda_useful_tflops"] = rows * dim * (dim + 1) / entry["cuda_ms"] / 1e9
        entry["pct_of_dgemm_rate"] = 100 * entry["cuda_useful_tflops"] / dgemm_tflops
        del z
        symmetric = torch.randn(dim, dim, dtype=torch.float64, device=device)
        symmetric = symmetric @ symmetric.T
        entry["eigvalsh_fp64_ms"] = target.median_ms(lambda m=symmetric: torch.linalg.eigvalsh(m))
        entry["gram_share_of_exact_rankme"] = entry["cuda_ms"] / (entry["cuda_ms"] + entry["eigvalsh_fp64_ms"])
        rows_out.append(entry)
        del state, symmetric
        if device == "cuda":
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


def exact_kernels(target: Target) -> dict[str, object]:
    """Variant name -> add(z, gram): each CUDA SYRK variant the GPU has; in a dry run the CPU's
    exact kernel stands in for them (the section's flow and checks are what a dry run tests)."""
    import torch

    if target.dry_run:
        from rankme_fast._inputs import kernel_input
        from rankme_fast.backends.cpu_backend import CpuBackend

        return {"cpu-stand-in": lambda z, gram: CpuBackend().add_gram(kernel_input(z), gram, None, "exact")}
    from rankme_fast.backends import cuda_backend as cuda

    major = torch.cuda.get_device_capability()[0]
    variants = [v for v, need in (("dmma-16x8x8", 9), ("dmma-8x8x4", 8), ("simt", 0)) if major >= need]
    return {v: (lambda z, gram, v=v: cuda.syrk_update(z, gram, variant=v)) for v in variants}


def end_to_end_section(target: Target, out: Path) -> dict[str, object]:
    import torch

    import rankme_fast as rf

    rows = target.size(25600, 25600, 500)
    rows_out = []
    for dim in target.size([1024, 2048, 4096], [1024, 2048], [64]):
        z = torch.randn(rows, dim, device=target.device)
        reference = rf.metrics.rankme(torch.linalg.svdvals(z.double()).cpu().numpy())
        fast = checked(f"rf.rankme fast D={dim}", lambda z=z: rf.rankme(z, precision="fast"), reference, 1e-3)
        exact = checked(f"rf.rankme exact D={dim}", lambda z=z: rf.rankme(z, precision="exact"), reference, 1e-9)
        svd = lambda z=z: torch.linalg.svdvals(z.float())  # noqa: E731
        checked(f"svdvals fp32 D={dim}", lambda s=svd: rf.metrics.rankme(s().double().cpu().numpy()), reference, 1e-3)
        entry = {
            "rows": rows, "dim": dim,
            "rankme_fast_ms": target.median_ms(fast),
            "rankme_exact_ms": target.median_ms(exact),
            "svdvals_fp32_ms": target.median_ms(svd),
        }  # fmt: skip
        entry["fast_speedup_vs_svdvals"] = entry["svdvals_fp32_ms"] / entry["rankme_fast_ms"]
        entry["exact_speedup_vs_svdvals"] = entry["svdvals_fp32_ms"] / entry["rankme_exact_ms"]
        rows_out.append(entry)
        print(f"end to end D={dim}: fast {entry['rankme_fast_ms']:.2f} ms, exact {entry['rankme_exact_ms']:.2f} ms, "
              f"svdvals {entry['svdvals_fp32_ms']:.2f} ms")
        del z
    at_2048 = [e["fast_speedup_vs_svdvals"] for e in rows_out if e["dim"] == 2048]
    return {
        "end_to_end": rows_out,
        "acceptance": {"fast_rankme_speedup_vs_svdvals_D=2048": at_2048[0] if at_2048 else None},
        "targets": {"fast rankme vs svdvals": 20},
    }


def self_check_section(target: Target, out: Path) -> dict[str, object]:
    """Seconds each GPU backend's first-use self-check takes, per dtype and precision: first
    in this process (Triton compiles the kernel for the check's shape then) and once more with
    the kernel compiled (the check alone)."""
    import torch

    from rankme_fast._inputs import kernel_input, torch_dtype
    from rankme_fast.backends import _REGISTRY, self_check

    device = torch.device(target.device)
    rows_out = []
    for name in ("cuda", "triton", "triton-deterministic"):
        backend = _REGISTRY[name]
        for precision in ("exact", "fast"):
            for dtype in ("float64", "float32", "float16", "bfloat16"):
                matrix = kernel_input(torch.zeros(2, 2, device=device, dtype=torch_dtype(dtype)))
                if backend.unavailable_reason(matrix, precision) is not None:
                    continue
                entry: dict[str, object] = {"backend": name, "precision": precision, "dtype": dtype}
                for run in ("first_s", "compiled_s"):
                    self_check.forget()
                    entry["result"] = self_check.failure(backend, device, dtype, precision) or "passed"
                    entry[run] = self_check.seconds(backend, device, dtype, precision)
                rows_out.append(entry)
    print_table(rows_out, [("backend", "backend", "{}"), ("precision", "precision", "{}"), ("dtype", "dtype", "{}"),
                           ("first s", "first_s", "{:.3f}"), ("compiled s", "compiled_s", "{:.4f}"),
                           ("result", "result", "{}")])  # fmt: skip
    return {"self_checks": rows_out}


if __name__ == "__main__":
    main()
