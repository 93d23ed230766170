"""The CUDA SYRK's logic that can be checked without a GPU: the tile grid index math, the
warp-level fragment maps against the PTX operand layouts (tests/cpp/warp_tile_test.cpp),
argument checking, and a clear reason when no GPU can be used. tests/test_gpu.py runs the
kernel itself when a GPU is present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import rankme_fast as rf
from rankme_fast.backends import cuda_backend as cuda

ROOT = Path(__file__).resolve().parents[1]
needs_native = pytest.mark.skipif(rf._C is None, reason="rankme_fast._C is not built")


def _build_and_run(source: str, tmp_path: Path, standard: str, *extra: str) -> str:
    """Compile tests/cpp/<source> against the kernel headers with the host compiler, run it."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    binary = tmp_path / Path(source).stem
    include = [f"-I{ROOT / 'csrc' / sub}" for sub in ("cuda", "include", "cpu")]
    command = [compiler, f"-std={standard}", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
               *extra, *include, str(ROOT / "tests" / "cpp" / source), "-o", str(binary)]  # fmt: skip
    build = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout[-3000:]
    return result.stdout


def test_warp_tile_maps_match_the_tensor_core_layouts(tmp_path):
    _build_and_run("warp_tile_test.cpp", tmp_path, "c++17")


@pytest.mark.slow
def test_cuda_kernel_source_runs_correctly_under_cpu_emulation(tmp_path):
    """syrk_kernel.cuh itself, one fiber per CUDA thread (tests/cpp/cuda_emulation.h): every
    variant and dtype, the 16-byte and scalar load paths, shift, column sums, direct and atomic
    epilogues."""
    output = _build_and_run("syrk_emulation_test.cpp", tmp_path, "c++20", "-fno-strict-aliasing")
    assert output.count(": ok") >= 50


@needs_native
@pytest.mark.parametrize("tiles_per_side", [1, 2, 7, 8, 9, 16, 17, 64])
def test_grouped_tile_order_is_a_bijection_onto_the_lower_triangle(tiles_per_side):
    total = tiles_per_side * (tiles_per_side + 1) // 2
    coords = [rf._C.grouped_tile_coords(t, tiles_per_side, 8) for t in range(total)]
    assert sorted(coords) == [(i, j) for i in range(tiles_per_side) for j in range(i + 1)]
    # Ids come in bands of 8 tile rows: a band's ids all precede the next band's.
    bands = [i // 8 for i, _ in coords]
    assert bands == sorted(bands)


@needs_native
def test_tile_order_without_grouping_is_row_major_and_exact_for_large_ids():
    assert [rf._C.grouped_tile_coords(t, 4) for t in range(6)] == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    for i in (46340, 10**6, 3 * 10**7):  # where a float square root alone would round wrongly
        first = i * (i + 1) // 2
        assert rf._C.grouped_tile_coords(first, i + 1) == (i, 0)
        assert rf._C.grouped_tile_coords(first - 1, i + 1) == (i - 1, i - 1)
    # Wider bands than the grid: the grouped order is the plain one.
    plain = [rf._C.grouped_tile_coords(t, 5) for t in range(15)]
    assert [rf._C.grouped_tile_coords(t, 5, 8) for t in range(15)] == plain


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"z": torch.zeros(4, 3, dtype=torch.int32)}, TypeError, "dtype"),
        ({"z": torch.zeros(4)}, ValueError, "2-D"),
        ({"gram": torch.zeros(2, 2, dtype=torch.float64)}, ValueError, r"\(3, 3\) float64"),
        ({"gram": torch.zeros(3, 3, dtype=torch.float32)}, ValueError, "float64"),
        ({"shift": torch.zeros(2, dtype=torch.float64)}, ValueError, "shift"),
        ({"column_sums": torch.zeros(3)}, ValueError, "column_sums"),
        ({"variant": "wmma"}, ValueError, "variant"),
        ({"splits": 0}, ValueError, "splits"),
        ({}, ValueError, "CUDA device"),
    ],
)
def test_syrk_update_rejects_bad_arguments_before_any_launch(kwargs, error, match):
    args = {"z": torch.zeros(4, 3), "gram": torch.randn(3, 3, dtype=torch.float64)} | kwargs
    z, gram = args.pop("z"), args.pop("gram")
    gram_before = gram.clone()
    with pytest.raises(error, match=match):
        cuda.syrk_update(z, gram, **args)
    assert torch.equal(gram, gram_before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_a_gpu_the_cuda_backend_says_why():
    reason = rf.available_backends()["cuda"]
    assert reason is not None and ("CUDA" in reason or "built without CUDA" in reason)
    with pytest.raises(ValueError, match="backend 'cuda' cannot take this input"):
        rf.GramAccumulator(backend="cuda").update(torch.ones(4, 3))


@needs_native
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_native_call_without_a_gpu_raises_with_the_cuda_message():
    z = torch.ones(8, 4)
    gram = torch.zeros(4, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"CUDA|without CUDA"):
        rf._C.cuda_syrk_update(z.data_ptr(), rf._C.DTYPE_FLOAT32, 8, 4, 4, 1, gram.data_ptr())
    assert not gram.any()


def _cuobjdump() -> str | None:
    """cuobjdump from the CUDA toolkit, or the copy Triton's wheel carries."""
    found = shutil.which("cuobjdump") or shutil.which("cuobjdump", path="/usr/local/cuda/bin")
    if found:
        return found
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


@needs_native
def test_cuda_build_runs_float64_products_on_tensor_cores():
    if not rf._C.cuda_compiled:
        pytest.skip("rankme_fast._C built without CUDA")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit or Triton) to disassemble the build")

    def sass(arch: str) -> str:
        command = [tool, "--dump-sass", "-arch", arch, rf._C.__file__]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout

    hopper, ampere = sass("sm_90"), sass("sm_80")
    assert "DMMA.16x8x8" in hopper and "DMMA.8x8x4" in hopper  # both tensor-core variants on Hopper
    assert "DMMA.884" in ampere and "DMMA.16x8x8" not in ampere  # m8n8k4 only on Ampere
