"""GPU benchmark, one call: builds the package, runs the GPU tests, then times (CUDA events
through triton.testing.do_bench, medians, L2 flushed between runs):

* the Triton SYRK vs torch.mm(Z.T, Z) for bf16, fp16, fp32 (tf32x3 / tf32 / ieee) at
  D in {512, ..., 8192}, N in {262144, 25600};
* the measured bf16 GEMM peak (8192³), and each SYRK's rate counting only the triangle's
  N·D(D+1)/2 multiply-adds, as TFLOP/s and % of that peak;
* end to end, rf.rankme (fast, exact) vs torch.linalg.svdvals(Z.float()) on the GPU, N=25600,
  D in {1024, 2048, 4096}, with the float64 eigensolve timed alone.

Writes bench/results/gpu-<date>-<device>.json and prints a markdown table.

    python3 bench/bench_gpu.py            # on the GPU box: make OFFLINE=1 venv, tests, timings
    python3 bench/bench_gpu.py --quick    # smaller sizes, for a first look
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


def build_and_test() -> dict[str, object]:
    """make OFFLINE=1 (system torch and Triton, nothing downloaded), then the GPU test files."""
    subprocess.run(["make", "OFFLINE=1", ".venv/.installed"], cwd=ROOT, check=True)
    tests = ["tests/test_triton.py", "tests/test_gpu.py", "tests/test_agreement.py"]
    run = subprocess.run([str(VENV_PYTHON), "-m", "pytest", "-q", *tests], cwd=ROOT, capture_output=True, text=True)
    print(run.stdout[-3000:], run.stderr[-2000:], sep="\n")
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "no output"
    return {"command": f"pytest -q {' '.join(tests)}", "returncode": run.returncode, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--no-build", action="store_true", help="skip make and the tests (already done)")
    parser.add_argument("--tests", type=Path, default=None, help=argparse.SUPPRESS)  # JSON from the build step
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.no_build:
        tests = build_and_test()
        record = ROOT / ".venv" / "gpu-tests.json"
        record.write_text(json.dumps(tests))
        forwarded = [a for a in sys.argv[1:] if a != "--no-build"]
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, "--no-build", "--tests", str(record), *forwarded])
    tests = json.loads(args.tests.read_text()) if args.tests else None
    run_timings(args, tests)


def run_timings(args: argparse.Namespace, tests: dict[str, object] | None) -> None:
    import torch
    import triton
    from triton.testing import do_bench

    import rankme_fast as rf
    from rankme_fast.triton.syrk import syrk_update

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    torch.manual_seed(0)

    def median_ms(fn) -> float:
        return float(do_bench(fn, warmup=50, rep=300, return_mode="median"))

    size = 8192 if not args.quick else 4096
    operands = [torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2)]
    peak_tflops = 2 * size**3 / median_ms(lambda: operands[0] @ operands[1]) / 1e9
    operands.clear()
    print(f"{props.name}: measured bf16 GEMM peak {peak_tflops:.0f} TFLOP/s ({size}³)")

    dims = [512, 1024, 2048, 4096, 8192] if not args.quick else [512, 2048]
    row_counts = [262144, 25600] if not args.quick else [25600]
    kinds = {  # name -> (input dtype, Triton fp32 input precision, torch.mm's TF32 switch)
        "bf16": (torch.bfloat16, "ieee", False),
        "fp16": (torch.float16, "ieee", False),
        "fp32-tf32x3": (torch.float32, "tf32x3", False),
        "fp32-tf32": (torch.float32, "tf32", True),
        "fp32-ieee": (torch.float32, "ieee", False),
    }
    gram_rows = []
    for rows in row_counts:
        for dim in dims:
            for kind, (dtype, precision, tf32) in kinds.items():
                z = torch.randn(rows, dim, device=device).to(dtype)
                state = torch.zeros(dim, dim, dtype=torch.float64, device=device)
                triton_ms = median_ms(lambda z=z, s=state, p=precision: syrk_update(z, s, input_precision=p))
                torch.backends.cuda.matmul.allow_tf32 = tf32
                mm_ms = median_ms(lambda z=z: torch.mm(z.T, z))
                torch.backends.cuda.matmul.allow_tf32 = False
                useful = rows * dim * (dim + 1)  # 2 x the triangle's multiply-adds
                row = {
                    "rows": rows, "dim": dim, "kind": kind, "triton_ms": triton_ms, "torch_mm_ms": mm_ms,
                    "speedup_vs_torch_mm": mm_ms / triton_ms,
                    "triton_useful_tflops": useful / triton_ms / 1e9,
                    "pct_of_bf16_peak": 100 * useful / triton_ms / 1e9 / peak_tflops,
                }  # fmt: skip
                gram_rows.append(row)
                print(f"N={rows} D={dim} {kind}: triton {triton_ms:.3f} ms, torch.mm {mm_ms:.3f} ms "
                      f"(x{row['speedup_vs_torch_mm']:.2f}), {row['triton_useful_tflops']:.0f} TFLOP/s useful")
                del z, state
                torch.cuda.empty_cache()

    end_to_end = []
    for dim in [1024, 2048, 4096] if not args.quick else [1024, 2048]:
        z = torch.randn(25600, dim, device=device)
        symmetric = torch.randn(dim, dim, dtype=torch.float64, device=device)
        symmetric = symmetric @ symmetric.T
        entry = {
            "rows": 25600, "dim": dim,
            "rankme_fast_ms": median_ms(lambda z=z: rf.rankme(z, precision="fast")),
            "rankme_exact_ms": median_ms(lambda z=z: rf.rankme(z, precision="exact")),
            "svdvals_fp32_ms": median_ms(lambda z=z: torch.linalg.svdvals(z.float())),
            "eigvalsh_fp64_ms": median_ms(lambda m=symmetric: torch.linalg.eigvalsh(m)),
        }  # fmt: skip
        entry["fast_speedup_vs_svdvals"] = entry["svdvals_fp32_ms"] / entry["rankme_fast_ms"]
        entry["exact_speedup_vs_svdvals"] = entry["svdvals_fp32_ms"] / entry["rankme_exact_ms"]
        end_to_end.append(entry)
        print(f"end to end D={dim}: fast {entry['rankme_fast_ms']:.2f} ms, exact {entry['rankme_exact_ms']:.2f} ms, "
              f"svdvals {entry['svdvals_fp32_ms']:.2f} ms")
        del z, symmetric

    target = [r for r in gram_rows if r["kind"] == "bf16" and r["rows"] == 262144 and r["dim"] >= 2048]
    e2e_2048 = [e for e in end_to_end if e["dim"] == 2048]
    acceptance = {
        "bf16_min_speedup_vs_torch_mm_D>=2048_N=262144": min((r["speedup_vs_torch_mm"] for r in target), default=None),
        "bf16_min_pct_of_peak_D>=2048_N=262144": min((r["pct_of_bf16_peak"] for r in target), default=None),
        "fast_rankme_speedup_vs_svdvals_D=2048": e2e_2048[0]["fast_speedup_vs_svdvals"] if e2e_2048 else None,
    }
    result = {
        "date": dt.date.today().isoformat(),
        "device": props.name,
        "multiprocessors": props.multi_processor_count,
        "versions": {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda},
        "command": "python3 bench/bench_gpu.py" + (" --quick" if args.quick else ""),
        "tests": tests,
        "bf16_gemm_peak_tflops": peak_tflops,
        "gram": gram_rows,
        "end_to_end": end_to_end,
        "acceptance": acceptance,
        "targets": {"bf16 speedup vs torch.mm": 1.6, "pct of bf16 peak": 60, "fast rankme vs svdvals": 20},
    }
    slug = re.sub(r"[^a-z0-9]+", "-", props.name.lower()).strip("-")
    out = args.out or RESULTS / f"gpu-{result['date']}-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("\n| N | D | input | Triton ms | torch.mm ms | x | useful TFLOP/s | % bf16 peak |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in gram_rows:
        print(f"| {r['rows']} | {r['dim']} | {r['kind']} | {r['triton_ms']:.3f} | {r['torch_mm_ms']:.3f} | "
              f"{r['speedup_vs_torch_mm']:.2f} | {r['triton_useful_tflops']:.0f} | {r['pct_of_bf16_peak']:.0f} |")
    print(f"\nacceptance: {json.dumps(acceptance)}\nwrote {out}")


if __name__ == "__main__":
    main()
