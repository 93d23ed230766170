"""The C++ kernel itself, BLAS route and every instruction-set variant of the tiled kernel that
this CPU can run: one triangle only, every stride and dtype read in place, casts exact at the
extremes of each dtype, the tile grid covering odd sizes, and the run-time dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rankme_fast as rf
from rankme_fast._inputs import kernel_input
from rankme_fast.backends.cpu_backend import CpuBackend, cpu_info, instruction_set

pytestmark = pytest.mark.skipif(rf._C is None, reason="rankme_fast._C is not built")
# Every instruction set this CPU can run, so each compiled variant is tested where it can be.
ISAS = [name for name, runs in cpu_info()["variants"].items() if runs] if rf._C is not None else []
KERNELS = (["blas"] if rf._C is not None and rf._C.blas else []) + [f"tiled-{isa}" for isa in ISAS]


def _gram(z, kernel, precision="exact", shift=None):
    matrix = kernel_input(z)
    # zero lower triangle, poisoned upper one: the kernel must leave the 7.0s alone
    gram = torch.triu(torch.full((matrix.cols, matrix.cols), 7.0, dtype=torch.float64), 1)
    if kernel == "blas":
        CpuBackend("blas").add_gram(matrix, gram, shift, precision)
    else:
        with instruction_set(kernel.removeprefix("tiled-")):
            CpuBackend("tiled").add_gram(matrix, gram, shift, precision)
    return gram


def _reference(z, shift=None):
    x = z.double() if isinstance(z, torch.Tensor) else torch.from_numpy(np.asarray(z, dtype=np.float64))
    x = x.reshape(-1, x.shape[-1])
    if shift is not None:
        x = x - shift
    return x.T @ x


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("d", [1, 2, 63, 64, 65, 127, 129, 200])
def test_lower_triangle_only_and_exact(kernel, d, rng):
    z = torch.from_numpy(rng.standard_normal((301, d)))
    gram = _gram(z, kernel)
    torch.testing.assert_close(torch.tril(gram), torch.tril(_reference(z)), rtol=1e-13, atol=1e-11)
    assert torch.all(torch.triu(gram, 1) == torch.triu(torch.full_like(gram, 7.0), 1))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2],  # column stride 2
        lambda a: a[::3],  # row stride 3x
        lambda a: a[::-1],  # negative row stride (numpy)
        lambda a: a[:, ::-1],  # negative column stride
        lambda a: a.T,  # column-major
        lambda a: a[5:40, 3:17],  # offset window
        lambda a: np.broadcast_to(a[:1], (20, a.shape[1])),  # zero row stride
    ],
)
def test_strided_numpy_views_read_in_place(kernel, view, rng):
    base = rng.standard_normal((60, 50)).astype(np.float32)
    z = view(base)
    gram = _gram(z, kernel)
    torch.testing.assert_close(torch.tril(gram), torch.tril(_reference(z)), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("kernel", KERNELS)
def test_shift_is_fused_in_float64(kernel, rng):
    z = torch.from_numpy(rng.standard_normal((200, 33))).float() + 1000.0
    shift = z.double().mean(0)
    gram = _gram(z, kernel, shift=shift)
    torch.testing.assert_close(torch.tril(gram), torch.tril(_reference(z, shift)), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS)
def test_float16_squares_beyond_float16_range(kernel):
    """Rows near 65504: products overflow float16 and float32 sums of them stay exact in float64."""
    z = torch.tensor([[65504.0, -65504.0, 60000.0], [65000.0, 1.0, -65504.0]], dtype=torch.float16)
    gram = _gram(z, kernel)
    torch.testing.assert_close(torch.tril(gram), torch.tril(_reference(z)), rtol=0, atol=0)
    assert torch.isfinite(gram).all()


@pytest.mark.parametrize("kernel", KERNELS)
def test_products_that_underflow_float32(kernel):
    z = torch.full((4, 3), 1e-30, dtype=torch.float32)  # squares are 1e-60: zero in float32
    gram = _gram(z, kernel)
    assert float(gram[0, 0]) == pytest.approx(4 * float(z[0, 0]) ** 2, rel=1e-12)
    z64 = torch.full((3, 2), 1e-160, dtype=torch.float64)  # products in float64's subnormal range
    assert float(_gram(z64, kernel)[1, 0]) == float((z64.T @ z64)[1, 0]) > 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_float16_value_is_decoded_exactly(kernel):
    """All 63488 finite float16 bit patterns, two per row with 1.0: gram[1, 0] = Σ v exactly."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    values = bits.view(np.float16)
    values = values[np.isfinite(values)]
    expected = values.astype(np.float64)
    z = np.stack([np.ones_like(values), values], axis=1)  # (63488, 2) float16
    for part in np.array_split(np.arange(len(values)), 8):  # several sums, each exact in float64
        gram = _gram(z[part], kernel)
        assert float(gram[1, 0]) == float(expected[part].sum())
        assert float(gram[1, 1]) == float(np.sum(expected[part] ** 2))


@pytest.mark.parametrize("kernel", KERNELS)
def test_bfloat16_extremes(kernel):
    z = torch.tensor([[3.3895e38, -1e-38], [1e-40, 2.0]], dtype=torch.bfloat16)  # max, normal, subnormal
    gram = _gram(z, kernel)
    torch.testing.assert_close(torch.tril(gram), torch.tril(_reference(z)), rtol=0, atol=0)


def test_nonfinite_row_count_and_column_mean(rng):
    z = rng.standard_normal((1000, 7)).astype(np.float32)
    z[[3, 3, 500], [0, 6, 2]] = [np.nan, np.inf, -np.inf]
    backend = CpuBackend()
    assert backend.count_nonfinite_rows(kernel_input(z)) == 2
    clean = rng.standard_normal((1000, 7)) * 3 + 1e6
    mean = backend.column_mean(kernel_input(clean[::-1]))
    np.testing.assert_allclose(mean.numpy(), clean.mean(axis=0), rtol=1e-14)


def test_kernels_agree_with_each_other(rng):
    z = torch.from_numpy(rng.standard_normal((777, 150))).to(torch.bfloat16)
    results = [torch.tril(_gram(z, k)) for k in KERNELS]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-13, atol=1e-10)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("precision", ["exact", "fast"])
@pytest.mark.parametrize("rows", [255, 256, 257, 511, 513, 9001])
def test_tiled_kernel_across_row_blocks(isa, precision, rows, rng):
    """Row counts around the packed-block sizes (256 float64, 512 float32 rows) and past the fast
    path's float64 flush (every 4096 rows); an odd width that fills no tile or panel evenly."""
    z = torch.from_numpy(rng.standard_normal((rows, 101))).float() + 3.0
    shift = z.double().mean(0)
    for s in (None, shift):
        gram = _gram(z, f"tiled-{isa}", precision, s)
        reference = _reference(z, s)
        if precision == "fast" and isa == "amx":  # the bfloat16 split (test_tile_kernel.py): its own bound
            x = (z.double() - (0 if s is None else s)).abs()
            bound = ((4096 + 3) * 2.0**-24 + 3 * 2.0**-16) * (x.T @ x)
            assert torch.all(torch.tril((gram - reference).abs() - bound) <= 0)
        else:
            tol = {"rtol": 1e-12, "atol": 1e-9} if precision == "exact" else {"rtol": 2e-5, "atol": 2e-5 * rows}
            torch.testing.assert_close(torch.tril(gram), torch.tril(reference), **tol)
        assert torch.all(torch.triu(gram, 1) == torch.triu(torch.full_like(gram, 7.0), 1))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows", [1, 2, 3, 1023, 1024, 1025, 4097, 9001])
@pytest.mark.parametrize("cols", [1, 17, 48, 101])
def test_bfloat16_fast_path_against_float64(isa, rows, cols, rng):
    """bfloat16 input at precision="fast": on AVX-512-BF16 rows are packed in pairs for VDPBF16PS
    (odd row counts pad one zero row; 1024 rows a block; float64 flush every 4096 rows). The
    products are exact in float32 either way, so only the float32 sums differ from float64."""
    z = torch.from_numpy(rng.standard_normal((rows, cols)) * 3).to(torch.bfloat16)
    for view in (z, z[1:], z.T.contiguous().T):  # contiguous, offset by a row, column-major
        if view.shape[0] == 0:
            continue
        gram = _gram(view, f"tiled-{isa}", "fast")
        reference = _reference(view)
        # float32 recursive sums of at most 4096 products between float64 flushes: each entry is
        # off by at most 4096·2^-24·Σ|products|, and Σ|a·b| ≤ the largest diagonal entry
        bound = 1.01 * min(view.shape[0], 4096) * 2.0**-24 * float(reference.diagonal().max())
        assert float((torch.tril(gram) - torch.tril(reference)).abs().max()) <= bound
        assert torch.all(torch.triu(gram, 1) == torch.triu(torch.full_like(gram, 7.0), 1))


def test_variants_agree_on_bfloat16_fast_input(rng):
    z = torch.from_numpy(rng.standard_normal((3001, 77))).to(torch.bfloat16)
    results = {isa: torch.tril(_gram(z, f"tiled-{isa}", "fast")) for isa in ISAS}
    first = next(iter(results.values()))
    for isa, gram in results.items():
        torch.testing.assert_close(gram, first, rtol=3e-6, atol=3e-6 * float(first.abs().max()), msg=isa)


def test_dispatch_picks_the_best_variant_that_runs_and_reports_it():
    info = cpu_info()
    runnable = [name for name, runs in info["variants"].items() if runs]
    defaults = [name for name in runnable if name != "amx"]  # amx only where measured faster
    assert runnable[0] == "baseline" and info["in_use"] == defaults[-1]
    assert rf._C.auto_kernel() in ("blas", "tiled")
    assert rf._C.tiled_simd() in ("avx512bf16", "avx512", "avx2", "sse2")
    if "avx512_bf16" in info["features"] and "os_avx512" in info["features"]:
        assert info["in_use"] == "avx512bf16"
    acc = rf.GramAccumulator(backend="cpu-tiled").update(np.ones((3, 4)))
    assert acc.last_kernel == f"tiled-{info['in_use']}"
    for name in runnable:
        with instruction_set(name):
            assert rf._C.cpu_isa() == name
            assert rf.GramAccumulator(backend="cpu-tiled").update(np.ones((3, 4))).last_kernel == f"tiled-{name}"
    assert rf._C.cpu_isa() == info["in_use"]
    with pytest.raises(ValueError, match="unknown instruction set 'sse9'; built: baseline"):
        rf._C.select_cpu_isa("sse9")


def test_forcing_a_variant_by_environment(tmp_path):
    import subprocess
    import sys

    code = "import rankme_fast as rf; print(rf._C.cpu_isa())"
    for name in ISAS:
        env = {**__import__("os").environ, "RANKME_FAST_CPU_ISA": name}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.split()[-1] == name, done.stderr
    missing = [name for name, runs in cpu_info()["variants"].items() if not runs] or ["sse9"]
    env = {**__import__("os").environ, "RANKME_FAST_CPU_ISA": missing[0]}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and f"RANKME_FAST_CPU_ISA={missing[0]}" in done.stderr


@pytest.mark.parametrize("isa", ISAS)
def test_peak_microbenchmark_runs_for_each_variant(isa):
    assert rf._C.cpu_peak_gflops(isa, "fp64", 0.02) > 0
    assert rf._C.cpu_peak_gflops(isa, "fp32", 0.02) > 0
    bf16 = rf._C.cpu_peak_gflops(isa, "bf16", 0.02)
    assert (bf16 > 0) == (isa in ("avx512bf16", "amx"))  # amx: the avx512bf16 units beside the tiles
    tiles = rf._C.cpu_peak_gflops(isa, "tile-bf16", 0.02)
    assert (tiles > 0) == (isa == "amx" and rf._C.cpu_tile_check() == "passed")


_THREADED = """
import hashlib, sys
import numpy as np, torch
from rankme_fast._inputs import kernel_input
from rankme_fast.backends.cpu_backend import CpuBackend, instruction_set
rng = np.random.default_rng(0)
z = torch.from_numpy(rng.standard_normal((3001, 301)) * np.arange(1, 302) ** -0.5 + 2.0)
for isa in sys.argv[1:]:
    for dtype, precision in ((torch.float64, "exact"), (torch.float32, "exact"), (torch.float32, "fast"),
                             (torch.bfloat16, "fast")):
        for shift in (None, z.to(dtype).double().mean(0)):
            gram = torch.zeros(301, 301, dtype=torch.float64)
            with instruction_set(isa):
                CpuBackend("tiled").add_gram(kernel_input(z.to(dtype)), gram, shift, precision)
            print(isa, dtype, precision, shift is None, hashlib.sha256(torch.tril(gram).numpy().tobytes()).hexdigest())
"""


def test_the_tiled_kernel_gives_the_same_bits_on_one_thread_and_on_two():
    """Each thread owns whole groups of Gram rows and sums the rows in one order, so the result
    does not depend on the thread count: the test suite itself may run with one thread each."""
    import os
    import subprocess
    import sys

    runs = {}
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", _THREADED, *ISAS], env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        runs[threads] = done.stdout.splitlines()
    assert len(runs["1"]) == 8 * len(ISAS) and runs["1"] == runs["2"]
