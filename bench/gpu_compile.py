"""Ahead-of-time compile checks of the GPU kernels, on a machine without a GPU: what a first run
on an A100 or H100 would otherwise find out at launch.

* Triton: every kernel, tile width, input dtype, centring shift, epilogue and autotune config
  the backends can launch (`launch_cases`), compiled by Triton for sm_80 and sm_90. Each must
  fit a block's shared memory, spill no registers (stack frame within `STACK_BUDGET`), and run
  its products on tensor cores where the precision promises them (wgmma on sm_90, mma.sync on
  sm_80 for bf16, fp16, tf32 and tf32x3; plain FMAs for fp32 "ieee").
* CUDA: the exact SYRK kernels as built into rankme_fast._C for each CMakeLists target
  (`cuobjdump -res-usage`): registers within the 255 of a 256-thread block, no spills, static
  plus dynamic shared memory within the arch's limit; every target arch can hold the kernel.

`tests/kernels/test_gpu_compile.py` runs the launchable cases in `make test`;

    python bench/gpu_compile.py              # every config, also the ones pruned, both epilogues
                                             # -> bench/results/gpu-compile-<date>.json

records the figures of the full sweep (each case's, and whether the backends launch it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Most dynamic shared memory one block may opt into, bytes (CUDA programming guide, "compute
# capabilities"): 163 KB on sm_80, 227 KB on sm_90, 64 KB on sm_75.
SHARED_LIMIT = {75: 65536, 80: 166912, 86: 101376, 89: 101376, 90: 232448}
TRITON_ARCHS = (80, 90)
STACK_BUDGET = 64  # bytes per thread: the calling convention's own frame is 8; spills show above it
TENSOR_CORE = {80: "mma.sync", 90: "wgmma"}
PTX_TYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class TritonCase:
    """One compiled instance of the Triton SYRK (or, kernel="reduce", its split reduction)."""

    arch: int
    kernel: str  # "syrk" or "reduce"
    dtype: str
    precision: str
    block: int
    shift: bool
    mode: int  # triton_kernels.ATOMIC or WORKSPACE
    wide_offsets: bool  # 64-bit column offsets
    block_k: int
    warps: int
    stages: int

    @property
    def tensor_cores_expected(self) -> bool:
        return self.kernel == "syrk" and not (self.dtype == "float32" and self.precision == "ieee")


def launch_cases(modes: tuple[int, ...] | None = None) -> list[TritonCase]:
    """What the triton backends launch on sm_80/sm_90: bf16/fp16, or fp32 through tf32x3; the
    tile widths of `tile_size` (shifted batches and 64-bit column offsets: 64 only); each
    epilogue; the kept configs; and the split reduction of the deterministic backend."""
    import torch

    from rankme_fast.backends import triton_kernels as tk

    modes = modes or (tk.ATOMIC, tk.WORKSPACE)
    cases = []
    for arch in TRITON_ARCHS:
        for dtype, precision in (("bfloat16", "ieee"), ("float16", "ieee"), ("float32", "tf32x3")):
            for block, shift in ((64, False), (64, True), (128, False)):
                for mode in modes:
                    for wide in (False, True) if (block, shift) == (64, False) else (False,):
                        for block_k, warps, stages in tk.configs_for(block, getattr(torch, dtype)):
                            cases.append(TritonCase(arch, "syrk", dtype, precision, block, shift, mode, wide, block_k,
                                                    warps, stages))  # fmt: skip
        for block in (64, 128):
            cases.append(TritonCase(arch, "reduce", "float32", "ieee", block, False, tk.WORKSPACE, False, 0, 4, 1))
    return cases


def sweep_cases() -> list[TritonCase]:
    """Every config of the table for every width, dtype and precision, kept by the backends or
    not (the figures behind the table), and every launchable case."""
    from rankme_fast.backends import triton_kernels as tk

    every = sorted({config for configs in tk.CONFIGS.values() for config in configs})
    cases = []
    for arch in TRITON_ARCHS:
        for dtype, precision in (("bfloat16", "ieee"), ("float16", "ieee"), ("float32", "tf32x3"),
                                 ("float32", "tf32"), ("float32", "ieee")):  # fmt: skip
            for block, shift in ((64, False), (64, True), (128, False), (128, True)):
                for mode in (tk.ATOMIC, tk.WORKSPACE):
                    for block_k, warps, stages in every:
                        cases.append(TritonCase(arch, "syrk", dtype, precision, block, shift, mode, False, block_k,
                                                warps, stages))  # fmt: skip
    listed = set(cases)
    return cases + [c for c in launch_cases() if c not in listed]


def compile_triton(case: TritonCase) -> dict[str, object]:
    """Compile one case for its arch; its shared memory, registers, stack and instructions."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from rankme_fast.backends import triton_kernels as tk

    pointers = {"z_ptr": "*" + PTX_TYPE[case.dtype], "shift_ptr": "*fp64", "gram_ptr": "*fp64", "colsum_ptr": "*fp64",
                "ws_ptr": "*fp32", "ws_col_ptr": "*fp32"}  # fmt: skip
    if case.kernel == "syrk":
        fn = tk._syrk_kernel
        constants = {"HAS_SHIFT": case.shift, "COLSUM": False, "MODE": case.mode, "WIDE_OFFSETS": case.wide_offsets,
                     "INPUT_PRECISION": case.precision, "BLOCK": case.block, "BLOCK_K": case.block_k,
                     "GROUP": tk.TILE_GROUP}  # fmt: skip
    else:
        fn = tk._reduce_splits_kernel
        constants = {"BLOCK": case.block, "ROWS": tk.REDUCE_ROWS, "GROUP": tk.TILE_GROUP}
    signature = {name: pointers.get(name, "i32") for name in fn.arg_names}
    signature.update(dict.fromkeys(constants, "constexpr"))
    kernel = triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=constants),
        target=GPUTarget("cuda", case.arch, 32),
        options={"num_warps": case.warps, "num_stages": case.stages, "enable_fp_fusion": True},
    )
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        usage = resource_usage(cubin)
    (figures,) = usage.values()
    ptx = kernel.asm["ptx"]
    return {
        "shared_bytes": int(kernel.metadata.shared) + figures["shared_bytes"],
        "registers": figures["registers"],
        "stack_bytes": figures["stack_bytes"],
        "local_bytes": figures["local_bytes"],
        "tensor_cores": TENSOR_CORE[case.arch] in ptx,
        "any_mma": "mma" in ptx,
    }


def triton_problems(case: TritonCase, figures: dict[str, object]) -> list[str]:
    """What is wrong with a compiled case: empty when it fits, does not spill, and uses the
    tensor cores exactly where its precision says."""
    problems = []
    if figures["shared_bytes"] > SHARED_LIMIT[case.arch]:
        limit = SHARED_LIMIT[case.arch]
        problems.append(f"{figures['shared_bytes']} bytes of shared memory > sm_{case.arch}'s {limit}")
    if figures["stack_bytes"] > STACK_BUDGET or figures["local_bytes"]:
        problems.append(f"spills: stack {figures['stack_bytes']} bytes/thread > {STACK_BUDGET}")
    if case.tensor_cores_expected and not figures["tensor_cores"]:
        problems.append(f"no {TENSOR_CORE[case.arch]} instructions: the products are not on tensor cores")
    if not case.tensor_cores_expected and figures["any_mma"]:
        problems.append("tensor-core instructions where the precision asks for full float32 (ieee)")
    return problems


def resource_usage(binary: Path, arch: int | None = None) -> dict[str, dict[str, int]]:
    """Kernel name -> registers, stack, local and static shared bytes, from cuobjdump."""
    command = [str(cuobjdump()), "-res-usage", *(["-arch", f"sm_{arch}"] if arch else []), str(binary)]
    text = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    found = {}
    for name, line in re.findall(r"Function (\S+):\n\s*(REG:.*)", text):
        fields = dict(re.findall(r"(\w+):(\d+)", line))
        found[name] = {"registers": int(fields["REG"]), "stack_bytes": int(fields["STACK"]),
                       "local_bytes": int(fields["LOCAL"]), "shared_bytes": int(fields["SHARED"])}  # fmt: skip
    return found


def cuobjdump() -> Path:
    """The cuobjdump that Triton's wheel carries (or the CUDA toolkit's)."""
    import shutil

    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if bundled.exists():
        return bundled
    found = shutil.which("cuobjdump") or shutil.which("cuobjdump", path="/usr/local/cuda/bin")
    if found is None:
        raise FileNotFoundError("no cuobjdump (Triton's wheel or the CUDA toolkit)")
    return Path(found)


# -- the CUDA kernel ----------------------------------------------------------------------------


def cuda_architectures() -> list[str]:
    """The CMAKE_CUDA_ARCHITECTURES default in CMakeLists.txt, e.g. ["80-real", "90-real", ...]."""
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"set\(CMAKE_CUDA_ARCHITECTURES ([^)]*)\)", text).group(1).split()


def cuda_dynamic_shared_bytes() -> int:
    """kSmemBytes of csrc/cuda/syrk_kernel.cuh: two buffers of two operands' stages, and the shifts."""
    text = (ROOT / "csrc" / "cuda" / "syrk_kernel.cuh").read_text()
    value = {name: int(number) for name, number in re.findall(r"constexpr int (k\w+) = (\d+);", text)}
    formula = "kSmemBytes = (2 * 2 * kStage + 2 * kTile) * sizeof(double)"
    assert formula in text, f"{formula!r} changed in syrk_kernel.cuh: update cuda_dynamic_shared_bytes"
    stage = value["kDepth"] * (value["kTile"] + 4)  # kLd = kTile + 4
    return (2 * 2 * stage + 2 * value["kTile"]) * 8


def cuda_records(module: Path) -> list[dict[str, object]]:
    """Per real arch of the build, per kernel instance: its figures and problems."""
    dynamic = cuda_dynamic_shared_bytes()
    records = []
    for target in cuda_architectures():
        arch = int(target.split("-")[0])
        problems = [] if dynamic <= SHARED_LIMIT[arch] else [
            f"the kernel needs {dynamic} bytes of shared memory; sm_{arch} has {SHARED_LIMIT[arch]}"]  # fmt: skip
        if not target.endswith("-real"):  # PTX for the driver to compile: no machine code to read
            records.append({"target": target, "arch": arch, "kernel": "(PTX)", "problems": problems})
            continue
        for name, figures in resource_usage(module, arch).items():
            if "syrk_kernel" not in name:
                continue
            mine = list(problems)
            if figures["registers"] > 255:
                mine.append(f"{figures['registers']} registers > 255")
            if figures["stack_bytes"] or figures["local_bytes"]:
                mine.append(f"spills: stack {figures['stack_bytes']}, local {figures['local_bytes']} bytes/thread")
            if figures["shared_bytes"] + dynamic > SHARED_LIMIT[arch]:
                mine.append(f"{figures['shared_bytes'] + dynamic} bytes of shared memory > {SHARED_LIMIT[arch]}")
            records.append({"target": target, "arch": arch, "kernel": name, **figures,
                            "dynamic_shared_bytes": dynamic, "problems": mine})  # fmt: skip
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launchable", action="store_true", help="only what the backends launch")
    parser.add_argument("--out", type=Path, default=RESULTS / f"gpu-compile-{dt.date.today().isoformat()}.json")
    args = parser.parse_args()
    import triton

    import rankme_fast as rf

    launched = set(launch_cases())
    records = []
    for case in launch_cases() if args.launchable else sweep_cases():
        figures = compile_triton(case)
        records.append({**asdict(case), **figures, "launched_by_backends": case in launched,
                        "problems": triton_problems(case, figures)})  # fmt: skip
        print(json.dumps(records[-1]))
    result = {
        "date": dt.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "versions": {"triton": triton.__version__, "rankme_fast": rf.__version__},
        "command": "python bench/gpu_compile.py" + (" --launchable" if args.launchable else ""),
        "shared_limit_bytes": SHARED_LIMIT,
        "stack_budget_bytes": STACK_BUDGET,
        "triton": records,
        "cuda": cuda_records(Path(rf._C.__file__)) if rf._C is not None and rf._C.cuda_compiled else [],
    }
    launched_problems = [r for r in records if r["launched_by_backends"] and r["problems"]]
    result["summary"] = {
        "triton_cases": len(records),
        "launched_cases": sum(r["launched_by_backends"] for r in records),
        "launched_with_problems": len(launched_problems),
        "cuda_kernels_with_problems": sum(bool(r["problems"]) for r in result["cuda"]),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"]), f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
