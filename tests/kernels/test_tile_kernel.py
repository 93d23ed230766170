"""The AMX tile kernel (csrc/cpu/tile_gram.h), testable on every CPU: its packing, 32 × 32 block
tiling, bfloat16 split and float64 flushes run here with the tile instruction done in software
(rf._C.tile_emulated_update; and the whole amx variant under RANKME_FAST_TILES=emulated), the
hardware kernel's forked self-test contains a fault, and where the CPU has AMX-BF16 the
hardware kernel itself is checked against float64 and against the software tiles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rankme_fast._inputs import kernel_input
from rankme_fast._native import native
from rankme_fast.backends.cpu_backend import CpuBackend, instruction_set

pytestmark = pytest.mark.skipif(native is None, reason="rankme_fast._C is not built")
BUILT = native is not None and "amx" in native.cpu_isa_variants()
HAS_TILES = BUILT and native.cpu_tile_check() == "passed"
CODES = {torch.float64: 0, torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}
U32 = 2.0**-24


def _emulated(z: torch.Tensor, shift: torch.Tensor | None = None, gram: np.ndarray | None = None) -> np.ndarray:
    """The tile kernel's fast-mode update of `gram` (zero lower triangle, upper poisoned with 7.0)."""
    d = z.shape[1]
    gram = np.triu(np.full((d, d), 7.0), 1) if gram is None else gram
    native.tile_emulated_update(z.data_ptr(), CODES[z.dtype], z.shape[0], d, z.stride(0), z.stride(1),
                                gram.ctypes.data, 0 if shift is None else shift.data_ptr())  # fmt: skip
    return gram


def _split_bound(x: np.ndarray) -> np.ndarray:
    """The split's bound per entry: ((4096 + 3)·u₃₂ + 3·2⁻¹⁶)·Σ|xᵢxⱼ| (x = z − shift)."""
    magnitude = np.abs(x)
    return ((4096 + 3) * U32 + 3 * 2.0**-16) * (magnitude.T @ magnitude)


def _direct_bound(x: np.ndarray) -> np.ndarray:
    """bfloat16 as it is: exact products, float32 sums over at most 4096 rows."""
    magnitude = np.abs(x)
    return min(len(x), 4096) * U32 * (magnitude.T @ magnitude)


def _check(gram: np.ndarray, x: np.ndarray, bound: np.ndarray) -> None:
    lower = np.tril(np.ones(gram.shape, dtype=bool))
    error = np.abs(gram - x.T @ x)[lower]
    assert np.all(error <= bound[lower]), float(np.max(error / np.maximum(bound[lower], 1e-300)))
    assert np.all(gram[~lower] == 7.0)  # the upper triangle is not touched


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (31, 15), (32, 16), (33, 17), (300, 64), (1100, 65),
                                            (4097, 33), (700, 130)])  # fmt: skip
def test_small_integers_come_out_exact_through_every_tile_and_chunk(dtype, rows, cols):
    """Integers up to 8 in magnitude are bfloat16 values (the split's low part is 0) and every
    sum here stays below 2²⁴: float32 sums are exact, so any packing, tiling or flushing slip
    shows as a wrong integer. Shapes around the 16-column tiles, 32-column blocks, the
    32-entry tile depth, the 256/512-row chunks and the 1024/4096-row flushes."""
    rng = np.random.default_rng(rows * 1000 + cols)
    z = torch.from_numpy(rng.integers(-8, 9, (rows, cols)).astype(np.float64)).to(dtype)
    gram = _emulated(z)
    x = z.double().numpy()
    _check(gram, x, np.zeros((cols, cols)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16, torch.float64])
def test_random_rows_keep_their_bound_in_every_layout(dtype):
    rng = np.random.default_rng(3)
    base = torch.from_numpy(rng.standard_normal((1500, 90)) * 3).to(dtype)
    bound = _direct_bound if dtype == torch.bfloat16 else _split_bound
    for view in (base, base[::3], base[:, ::2], base.T.contiguous().T, base[100:900, 5:80]):
        _check(_emulated(view), view.double().numpy(), bound(view.double().numpy()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_shift_goes_through_the_split_and_keeps_the_centred_bound(dtype):
    """(z − shift) is formed in float64 and rounded to float32 once before the split, so a mean
    far above the spread costs no more than the centred values' own bound."""
    rng = np.random.default_rng(4)
    z = torch.from_numpy(rng.standard_normal((2000, 40)) + 1e3).to(dtype)
    shift = z.double().mean(0)
    x = z.double().numpy() - shift.numpy()
    _check(_emulated(z, shift), x, _split_bound(x))


@pytest.mark.parametrize("case", ["columns 2^-20..2^20", "offset 1e4", "one large row", "float16"])
def test_the_split_keeps_its_bound_on_adversarial_inputs(case):
    rng = np.random.default_rng(7)
    z = rng.standard_normal((2 * 4096 + 333, 48))
    if case == "columns 2^-20..2^20":
        z *= 2.0 ** np.linspace(-20, 20, 48)
    if case == "offset 1e4":
        z += 1e4
    if case == "one large row":
        z[5] *= 1e6
    z = torch.from_numpy(z.astype(np.float16 if case == "float16" else np.float32))
    _check(_emulated(z), z.double().numpy(), _split_bound(z.double().numpy()))


def test_what_the_split_costs_rankme_next_to_the_float32_kernel():
    """The split drops lo·lo and the remainder r, both ~2⁻¹⁶ and systematic: harmless on a
    well-spread spectrum, about ten times the float32 kernel's RankMe error on a collapsed one
    (the precision docs quote this case)."""
    import rankme_fast as rf
    from rankme_fast.metrics import rankme

    rng = np.random.default_rng(0)
    spread = rng.standard_normal((8000, 128)) * np.arange(1, 129) ** -0.5
    collapsed = rng.standard_normal((8000, 8)) @ rng.standard_normal((8, 128)) + 1e-3 * rng.standard_normal((8000, 128))
    errors = {}
    for name, values in (("spread", spread), ("collapsed", collapsed)):
        z = torch.from_numpy(values).float()
        lower = np.tril(_emulated(z))
        spectrum = np.clip(np.linalg.eigvalsh(lower + np.tril(lower, -1).T), 0, None)
        reference = rf.rankme(z.double())
        with instruction_set(native.cpu_isa()):  # the default variant's float32 kernel, never the tiles
            float32_kernel = rf.rankme(z, precision="fast", backend="cpu-tiled")
        errors[name] = (abs(rankme(np.sqrt(spectrum)) - reference) / reference,
                        abs(float32_kernel - reference) / reference)  # fmt: skip
    assert errors["spread"][0] < 1e-6
    split, float32_kernel = errors["collapsed"]
    assert 5e-3 < split < 3e-2 and 5 * float32_kernel < split < 20 * float32_kernel, errors


def test_bfloat16_subnormals_count_as_zero_as_on_the_tile_unit():
    """TDPBF16PS reads bfloat16 subnormals as 0 (DAZ): the result is that of the rows with those
    entries zeroed, bit for bit."""
    rng = np.random.default_rng(5)
    z = torch.from_numpy(rng.standard_normal((200, 20))).to(torch.bfloat16)
    tiny = torch.zeros_like(z)
    tiny[rng.random(z.shape) < 0.2] = 1e-39  # below 2^-126: subnormal in bfloat16
    with_subnormals = torch.where(tiny != 0, tiny, z)
    cleaned = torch.where(tiny != 0, torch.zeros_like(z), z)
    assert np.array_equal(_emulated(with_subnormals), _emulated(cleaned))


def test_updates_add_into_the_state_and_a_bad_view_changes_nothing():
    rng = np.random.default_rng(6)
    z = torch.from_numpy(rng.standard_normal((500, 24))).float()
    gram = _emulated(z[:200])
    _emulated(z[200:], gram=gram)
    x = z.double().numpy()
    _check(gram, x, _split_bound(x))
    before = gram.copy()
    with pytest.raises(RuntimeError, match="invalid matrix view"):  # the C ABI refuses before any write
        native.tile_emulated_update(z.data_ptr(), 9, 500, 24, 24, 1, gram.ctypes.data, 0)
    assert np.array_equal(gram, before)


def test_a_fault_in_the_tile_self_test_kills_the_child_not_the_caller():
    """The hardware self-test runs in a forked child. Where the CPU has no tile units, forcing it
    executes a tile instruction there: the child dies of SIGILL and the caller hears why."""
    if not BUILT:
        pytest.skip("this build has no tile kernel (compiler without -mamx-tile)")
    found = native.cpu_tile_check(force=True)
    if "amx_bf16" in native.cpu_features().split() and "amx_permitted" in native.cpu_features().split():
        assert found == "passed"
    else:
        assert found == "the tile self-test died of signal 4 (Illegal instruction)"
        assert native.cpu_tile_check().startswith("not run: ")
        assert not native.cpu_isa_variants()["amx"]


def test_the_amx_variant_is_never_the_default():
    assert native.cpu_isa() != "amx"
    if BUILT and not HAS_TILES:
        with pytest.raises(ValueError, match="cannot run the amx kernels"):
            native.select_cpu_isa("amx")


_EMULATED_DISPATCH = """
import numpy as np, torch, rankme_fast as rf
from rankme_fast.backends import cpu_dispatch
assert rf._C.cpu_isa_variants()["amx"] and rf._C.cpu_isa() != "amx"
route = cpu_dispatch.route_for("float32", "fast", 200)
assert "tiled-amx" in route.seconds and route.kernel != "tiled-amx", route  # measured, and far too slow
z = torch.randn(3000, 200)
acc = rf.GramAccumulator(backend="cpu-tiled", precision="fast").update(z)
assert acc.last_kernel != "tiled-amx", acc.last_kernel
print("ok", route.why)
"""


@pytest.mark.slow
def test_the_amx_variant_passes_the_kernel_tests_on_software_tiles():
    """RANKME_FAST_TILES=emulated makes the amx variant run here with software tiles: every
    variant-parametrised kernel test runs on it (dtypes, strides, row blocks, flushes, thread
    counts), and the measured dispatch times it and, being slower, does not route to it."""
    if not BUILT or "avx512_bf16" not in native.cpu_features().split():
        pytest.skip("needs the amx variant built and a CPU with AVX-512 BF16 for the rest of it")
    env = {**os.environ, "RANKME_FAST_TILES": "emulated", "OMP_NUM_THREADS": "2"}
    kernel_tests = Path(__file__).with_name("test_cpu_kernel.py")
    chosen = "amx or same_bits or variants_agree or dispatch_picks"  # those that run amx
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", chosen,
                           str(kernel_tests)], env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert int(done.stdout.split(" passed")[0].split()[-1]) >= 60 and "skipped" not in done.stdout
    done = subprocess.run([sys.executable, "-c", _EMULATED_DISPATCH], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]


@pytest.mark.skipif(not HAS_TILES, reason="needs AMX-BF16 tiles (cpuid, XCR0 and Linux) and a passing self-test")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_the_hardware_tiles_match_float64_and_the_software_tiles(dtype):
    rng = np.random.default_rng(8)
    for z in (torch.from_numpy(rng.integers(-8, 9, (4097, 65)).astype(np.float64)).to(dtype),
              torch.from_numpy(rng.standard_normal((3001, 200)) * 3).to(dtype)):  # fmt: skip
        gram = torch.triu(torch.full((z.shape[1], z.shape[1]), 7.0, dtype=torch.float64), 1)
        with instruction_set("amx"):
            CpuBackend("tiled").add_gram(kernel_input(z), gram, None, "fast")
        x = z.double().numpy()
        bound = _direct_bound(x) if dtype == torch.bfloat16 else _split_bound(x)
        _check(gram.numpy(), x, bound)
        software = _emulated(z)
        lower = np.tril(np.ones(software.shape, dtype=bool))
        assert np.all(np.abs(gram.numpy() - software)[lower] <= 2 * bound[lower])
    assert native.cpu_peak_gflops("amx", "tile-bf16", 0.05) > 0
