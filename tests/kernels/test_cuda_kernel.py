"""The CUDA SYRK: without a GPU, its logic (the tile grid index math, the launch plan, the
warp-level fragment maps against the PTX operand layouts, the kernel source itself under CPU
emulation: tests/kernels/cpp), argument checking, and a clear reason when no GPU can be used;
with one, the kernel itself against float64 references (every variant, dtype, stride, split,
offsets past 2³¹, memcheck)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from common import DTYPES

import rankme_fast as rf
from rankme_fast.backends import cuda_backend as cuda

ROOT = Path(__file__).resolve().parents[2]
needs_native = pytest.mark.skipif(rf._C is None, reason="rankme_fast._C is not built")


def _build_and_run(source: str, tmp_path: Path, standard: str, *extra: str) -> str:
    """Compile tests/kernels/cpp/<source> against the kernel headers with the host compiler, run it."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    binary = tmp_path / Path(source).stem
    include = [f"-I{ROOT / 'csrc' / sub}" for sub in ("cuda", "include", "cpu")]
    command = [compiler, f"-std={standard}", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
               *extra, *include, str(ROOT / "tests" / "kernels" / "cpp" / source), "-o", str(binary)]  # fmt: skip
    build = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout[-3000:]
    return result.stdout


def test_warp_tile_maps_match_the_tensor_core_layouts(tmp_path):
    _build_and_run("warp_tile_test.cpp", tmp_path, "c++17")


@pytest.mark.slow
def test_cuda_kernel_source_runs_correctly_under_cpu_emulation(tmp_path):
    """syrk_kernel.cuh itself, one fiber per CUDA thread (tests/kernels/cpp/cuda_emulation.h): every
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


# ---- on a GPU ----------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
def test_cuda_runtime_visible_to_native_module():
    if rf._C is None or not rf._C.cuda_compiled:
        pytest.skip("rankme_fast._C built without CUDA")
    assert rf._C.cuda_device_count() >= 1


VARIANT_NEEDS = {"dmma-16x8x8": 9, "dmma-8x8x4": 8, "simt": 0}  # minimum compute capability major


def _skip_unless_usable(variant: str) -> None:
    if rf._C is None or not rf._C.cuda_compiled:
        pytest.skip("rankme_fast._C built without CUDA")
    if torch.cuda.get_device_capability()[0] < VARIANT_NEEDS[variant]:
        pytest.skip(f"{variant} needs compute capability {VARIANT_NEEDS[variant]}.0")


def _poisoned_state(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random lower triangle (so += is checked) and a sentinel upper triangle (never written)."""
    lower = torch.tril(torch.ones(dim, dim, dtype=torch.bool, device="cuda"))
    start = torch.randn(dim, dim, dtype=torch.float64, device="cuda")
    return torch.where(lower, start, torch.full_like(start, 12345.0)), lower


def _check_added(gram, before, lower, reference, tol=1e-13):
    torch.cuda.synchronize()
    assert torch.equal(gram[~lower], before[~lower]), "the upper triangle was written"
    added = (gram - before)[lower].cpu()
    expected = reference[lower.cpu()]
    assert float((added - expected).norm() / expected.norm().clamp(min=1e-300)) <= tol


def _reference(z: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    x = z.detach().cpu().double()
    if shift is not None:
        x = x - shift.cpu()
    return x.T @ x


@needs_cuda
@pytest.mark.parametrize("variant", list(VARIANT_NEEDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1000, 130), (257, 300), (33, 1), (4100, 64), (3, 129), (2000, 256)])
def test_cuda_kernel_matches_float64_gram(variant, dtype, shape, rng):
    _skip_unless_usable(variant)
    z = torch.from_numpy(rng.standard_normal(shape)).to(dtype).cuda()
    gram, lower = _poisoned_state(shape[1])
    before = gram.clone()
    used, splits = cuda.syrk_update(z, gram, variant=variant)
    assert used == variant and splits >= 1
    _check_added(gram, before, lower, _reference(z))


@needs_cuda
@pytest.mark.parametrize("variant", list(VARIANT_NEEDS))
@pytest.mark.parametrize("splits", [1, 3, 64])
def test_cuda_kernel_shift_column_sums_and_splits(variant, splits, rng):
    _skip_unless_usable(variant)
    z = torch.from_numpy(rng.standard_normal((3000, 200)) + 40.0).float().cuda()
    shift = torch.from_numpy(rng.standard_normal(200) + 40.0).cuda()
    sums = torch.from_numpy(rng.standard_normal(200)).cuda()
    sums_before = sums.clone()
    gram, lower = _poisoned_state(200)
    before = gram.clone()
    _, used_splits = cuda.syrk_update(z, gram, shift=shift, column_sums=sums, variant=variant, splits=splits)
    assert used_splits == splits
    _check_added(gram, before, lower, _reference(z, shift))
    expected_sums = z.cpu().double().sum(dim=0)
    assert float(((sums - sums_before).cpu() - expected_sums).abs().max()) <= 1e-9 * float(expected_sums.abs().max())


@pytest.mark.parametrize("variant", list(VARIANT_NEEDS))
@pytest.mark.parametrize(
    "view",
    [
        "unaligned_columns", "partial_last_vector", "every_third_row", "column_major", "every_other_column",
        "expanded_rows",
    ],
)  # fmt: skip
@needs_cuda
def test_cuda_kernel_reads_any_strides(variant, view, rng):
    _skip_unless_usable(variant)
    base = torch.from_numpy(rng.standard_normal((600, 264))).float().cuda()
    z = {
        "unaligned_columns": base[:, 3:131],  # rows 16-byte multiples, start 12 bytes off: scalar loads
        "partial_last_vector": base[:, :134],  # 16-byte loads, then a 2-column group at the edge
        "every_third_row": base[::3],
        "column_major": base.t().contiguous().t(),
        "every_other_column": base[:, ::2],
        "expanded_rows": base[0].expand(50, -1),  # row stride 0
    }[view]
    gram, lower = _poisoned_state(z.shape[1])
    before = gram.clone()
    cuda.syrk_update(z, gram, variant=variant)
    _check_added(gram, before, lower, _reference(z))


@needs_cuda
def test_cuda_kernel_row_offsets_beyond_32_bits():
    _skip_unless_usable("simt")
    rows, dim = (1 << 31) // 64 + 4096, 64  # the last rows start past element 2^31
    z = torch.randn(rows, dim, device="cuda", dtype=torch.float16)
    gram = torch.zeros(dim, dim, dtype=torch.float64, device="cuda")
    cuda.syrk_update(z, gram)
    reference = torch.zeros_like(gram)
    for chunk in z.split(1 << 22):
        wide = chunk.double()
        reference += wide.T @ wide
    lower = torch.tril(torch.ones(dim, dim, dtype=torch.bool, device="cuda"))
    assert float((gram - reference)[lower].norm() / reference[lower].norm()) <= 1e-12


@needs_cuda
def test_cuda_kernel_refuses_host_memory_with_a_clear_message():
    _skip_unless_usable("simt")
    z = torch.ones(16, 8)
    gram = torch.zeros(8, 8, dtype=torch.float64, device="cuda")
    with pytest.raises(RuntimeError, match="z is not in the memory of CUDA device"):
        rf._C.cuda_syrk_update(z.data_ptr(), rf._C.DTYPE_FLOAT32, 16, 8, 8, 1, gram.data_ptr(), device=0)
    assert not gram.any()


_SANITIZER_SCRIPT = textwrap.dedent(
    """
    import torch
    from rankme_fast.backends import cuda_backend as cuda
    major = torch.cuda.get_device_capability()[0]
    variants = [v for v, need in (("dmma-16x8x8", 9), ("dmma-8x8x4", 8), ("simt", 0)) if major >= need]
    for variant in variants:
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            for rows, dim, splits in ((130, 131, 1), (300, 70, 3)):
                z = torch.randn(rows, dim, device="cuda").to(dtype)
                gram = torch.zeros(dim, dim, dtype=torch.float64, device="cuda")
                sums = torch.zeros(dim, dtype=torch.float64, device="cuda")
                shift = torch.randn(dim, dtype=torch.float64, device="cuda")
                cuda.syrk_update(z[:, 1:], gram[1:, 1:].contiguous(), variant=variant, splits=splits)
                cuda.syrk_update(z, gram, shift=shift, column_sums=sums, variant=variant, splits=splits)
    torch.cuda.synchronize()
    print("done")
    """
)


@needs_cuda
@pytest.mark.slow
def test_cuda_kernel_is_memcheck_clean():
    _skip_unless_usable("simt")
    sanitizer = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if os.path.exists(p)), None
    )
    if sanitizer is None:
        pytest.skip("compute-sanitizer is not installed")
    result = subprocess.run(
        [sanitizer, "--tool", "memcheck", "--error-exitcode", "3", sys.executable, "-c", _SANITIZER_SCRIPT],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0 and "done" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in result.stdout + result.stderr


