"""The GPU kernels compiled ahead of time for Ampere (sm_80) and Hopper (sm_90) on this machine,
no GPU needed (bench/gpu_compile.py): every Triton kernel and config the backends can launch
fits a block's shared memory, spills no registers and uses the tensor cores where its precision
says; the CUDA kernels as built fit every target in CMakeLists; the autotuner re-tunes for
everything that changes a compiled program."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import rankme_fast as rf
from rankme_fast.backends.triton_backend import interpreter_enabled, triton_installed

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import gpu_compile

pytestmark = [
    pytest.mark.skipif(not triton_installed(), reason="Triton is not installed"),
    pytest.mark.skipif(interpreter_enabled(), reason="compiles real GPU code: not under the interpreter"),
]


def _cases() -> list:
    return gpu_compile.launch_cases() if triton_installed() and not interpreter_enabled() else []


@pytest.mark.slow
@pytest.mark.parametrize("case", _cases(), ids=lambda c: "-".join(str(v) for v in vars(c).values()))
def test_every_launched_triton_kernel_fits_does_not_spill_and_uses_tensor_cores(case):
    figures = gpu_compile.compile_triton(case)
    assert gpu_compile.triton_problems(case, figures) == [], figures


def test_every_tile_width_and_dtype_keeps_a_config():
    from rankme_fast.backends import triton_kernels as tk

    for block in (64, 128):
        for dtype in tk.INPUT_DTYPES:
            z = torch.zeros(1, 1, dtype=dtype)
            kept = tk._keep(tk._syrk_tuned.configs, {"z_ptr": z}, BLOCK=block)
            assert {(c.kwargs["BLOCK_K"], c.num_warps, c.num_stages) for c in kept} == set(tk.configs_for(block, dtype))


def test_the_autotuner_tunes_again_for_everything_that_changes_the_program():
    """A config tuned without the shift must not be reused with it: the shift needs more
    shared memory (fp32, 128 wide: 256 KB, beyond Hopper's 227 KB)."""
    from rankme_fast.backends import triton_kernels as tk

    constexprs = {name for name, p in zip(tk._syrk_kernel.arg_names, tk._syrk_kernel.params, strict=True)
                  if p.is_constexpr}  # fmt: skip
    assert constexprs - {"BLOCK_K", "GROUP"} <= set(tk._syrk_tuned.keys)
    assert "n_cols" in tk._syrk_tuned.keys


@pytest.mark.skipif(rf._C is None or not rf._C.cuda_compiled, reason="rankme_fast._C built without CUDA")
def test_the_cuda_kernels_fit_every_target_arch():
    records = gpu_compile.cuda_records(Path(rf._C.__file__))
    assert {r["arch"] for r in records} == {int(t.split("-")[0]) for t in gpu_compile.cuda_architectures()}
    assert sum(r["kernel"] != "(PTX)" for r in records) >= 12  # 4 dtypes x 3 variants per real arch
    assert [r for r in records if r["problems"]] == []
