"""The Triton SYRK (rankme_fast.backends.triton_kernels): against float64 on a GPU, or under the interpreter on
CPU tensors when TRITON_INTERPRET=1 (`make test` runs this file a second time so). Tiny shapes
under the interpreter: it runs every program in Python."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import SPECTRA, make_embeddings, reference_rankme, relative_error, tolerance
from hypothesis import given, settings
from hypothesis import strategies as st
from layouts import held_inputs

import rankme_fast as rf
from rankme_fast.backends.triton_backend import interpreter_enabled, triton_installed

pytestmark = pytest.mark.skipif(not triton_installed(), reason="Triton is not installed")

if interpreter_enabled():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None
needs_kernel = pytest.mark.skipif(
    DEVICE is None, reason="no GPU: these run under TRITON_INTERPRET=1 (make test's second pass)"
)
if triton_installed():
    import triton
    import triton.language as tl

    from rankme_fast.backends.triton_kernels import TILE_GROUP, _grouped_tile_coords, _tile_coords

    @triton.jit
    def _tile_coords_of_range(out_i, out_j, COUNT: tl.constexpr):
        t = tl.program_id(0) * COUNT + tl.arange(0, COUNT)
        i, j = _tile_coords(t)
        tl.store(out_i + t, i)
        tl.store(out_j + t, j)

    @triton.jit
    def _grouped_coords_of_range(out_i, out_j, n_blocks, COUNT: tl.constexpr, GROUP: tl.constexpr):
        t = tl.arange(0, COUNT)
        i, j = _grouped_tile_coords(t, n_blocks, GROUP)
        tl.store(out_i + t, i)
        tl.store(out_j + t, j)


INPUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def syrk(*args, **kwargs):
    from rankme_fast.backends.triton_kernels import syrk_update

    return syrk_update(*args, **kwargs)


def lower_error(gram: torch.Tensor, reference: torch.Tensor) -> float:
    """Relative Frobenius error of the lower triangle."""
    diff = torch.tril(gram.cpu() - reference)
    return float(diff.norm() / torch.tril(reference).norm().clamp(min=1e-300))


def gram_reference(z: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    zd = z.double().cpu()
    if shift is not None:
        zd = zd - shift.cpu()
    return zd.T @ zd


def allowed(dtype: torch.dtype, shifted: bool) -> float:
    """fp32 sums; a shifted fp16/bf16 batch is re-rounded to its dtype before the product."""
    if shifted and not (interpreter_enabled() and dtype == torch.bfloat16):
        return 8 * UNIT_ROUNDOFF[dtype] + 1e-5
    return 1e-5


@needs_kernel
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("kind", SPECTRA)
def test_gram_matches_float64_on_every_spectrum(dtype, kind):
    z = torch.from_numpy(make_embeddings(kind, 300, 70, seed=SPECTRA.index(kind))).to(dtype).to(DEVICE)
    gram = torch.zeros(70, 70, dtype=torch.float64, device=DEVICE)
    syrk(z, gram)
    assert lower_error(gram, gram_reference(z)) <= allowed(dtype, False)


@needs_kernel
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (33, 1), (257, 37), (700, 100), (520, 65)])
@pytest.mark.parametrize("splits", [None, 3])
@pytest.mark.parametrize("deterministic", [False, True])
def test_ragged_shapes_splits_and_reductions(dtype, rows, cols, splits, deterministic):
    z = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows * cols)).to(dtype).to(DEVICE)
    start = torch.randn(cols, cols, dtype=torch.float64).to(DEVICE)  # added to, never overwritten
    gram = start.clone()
    sums = torch.ones(cols, dtype=torch.float64, device=DEVICE)
    syrk(z, gram, column_sums=sums, splits=splits, deterministic=deterministic)
    assert lower_error(gram - start, gram_reference(z)) <= allowed(dtype, False)
    assert torch.equal(torch.triu(gram, 1), torch.triu(start, 1)), "the upper triangle was written"
    expected_sums = 1 + z.double().sum(dim=0)
    assert torch.allclose(sums, expected_sums, rtol=1e-5, atol=1e-4 * rows)


@needs_kernel
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("splits", [1, 2])
def test_fused_shift_centres_in_the_load(dtype, splits):
    z = torch.from_numpy(make_embeddings("large_mean", 400, 40, seed=3)).to(dtype).to(DEVICE)
    shift = z.double().mean(dim=0)
    gram = torch.zeros(40, 40, dtype=torch.float64, device=DEVICE)
    syrk(z, gram, shift=shift, splits=splits)
    assert lower_error(gram, gram_reference(z, shift)) <= allowed(dtype, True)


@needs_kernel
@pytest.mark.parametrize(
    "view",
    [lambda x: x[:, ::2], lambda x: x.T.contiguous().T, lambda x: x[::3], lambda x: x[5:, 3:]],
    ids=["column-step", "column-major", "row-step", "offset"],
)
def test_strided_inputs_are_read_in_place(view):
    base = torch.randn(600, 90, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    z = view(base)
    gram = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64, device=DEVICE)
    syrk(z, gram, splits=2)
    assert lower_error(gram, gram_reference(z)) <= 1e-5


@needs_kernel
def test_column_offsets_past_two_to_the_31_elements():
    """Column-major input whose last column starts 2³¹ elements from the first: the column
    offsets are 64-bit (4 GiB of address space; only the 12 values read are ever written)."""
    rows, cols, stride = 4, 3, 2**30
    storage = torch.empty((cols - 1) * stride + rows, dtype=torch.float16, device=DEVICE)
    z = storage.as_strided((rows, cols), (1, stride))
    for c in range(cols):
        storage[c * stride : c * stride + rows] = torch.arange(1, rows + 1, dtype=torch.float16) * (c + 1)
    gram = torch.zeros(cols, cols, dtype=torch.float64, device=DEVICE)
    syrk(z, gram)
    assert torch.equal(torch.tril(gram).cpu(), torch.tril(gram_reference(z)))


@needs_kernel
def test_deterministic_reduction_is_bitwise_repeatable():
    z = torch.randn(900, 64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    results = []
    for _ in range(2):
        gram = torch.zeros(64, 64, dtype=torch.float64, device=DEVICE)
        syrk(z, gram, splits=3, deterministic=True)
        results.append(gram)
    assert torch.equal(results[0], results[1])


@needs_kernel
def test_bad_input_is_refused_and_state_untouched():
    z = torch.randn(40, 8, device=DEVICE)
    gram = torch.randn(8, 8, dtype=torch.float64, device=DEVICE)
    before = gram.clone()
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        syrk(z.double(), gram)
    with pytest.raises(ValueError, match=r"gram must be a contiguous \(8, 8\) float64"):
        syrk(z, gram.float())
    with pytest.raises(ValueError, match="shift must be"):
        syrk(z, gram, shift=torch.zeros(7, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match="input_precision"):
        syrk(z, gram, input_precision="tf16")
    with pytest.raises(ValueError, match="splits"):
        syrk(z, gram, splits=0)
    assert torch.equal(gram, before)


@needs_kernel
def test_tile_ids_cover_the_triangle_exactly():
    """The id -> (i, j) map, vectorised over a million ids (D up to ~185k at 128-wide tiles)."""
    count = 1 << 20
    out_i = torch.empty(count, dtype=torch.int32, device=DEVICE)
    out_j = torch.empty_like(out_i)
    per_program = 4096  # one program over all ids would be one enormous GPU kernel to compile
    _tile_coords_of_range[(count // per_program,)](out_i, out_j, COUNT=per_program)
    i = np.floor((np.sqrt(8 * np.arange(count, dtype=np.float64) + 1) - 1) / 2).astype(np.int64)
    assert np.array_equal(out_i.cpu().numpy(), i)
    assert np.array_equal(out_j.cpu().numpy(), np.arange(count) - i * (i + 1) // 2)


@needs_kernel
@pytest.mark.parametrize("n_blocks", [1, 2, 7, 8, 9, 23, 64, 130])
def test_launch_order_visits_every_lower_tile_once_in_bands(n_blocks):
    tiles = n_blocks * (n_blocks + 1) // 2
    count = 1 << (tiles - 1).bit_length()
    out_i = torch.full((count,), -1, dtype=torch.int32, device=DEVICE)
    out_j = torch.full_like(out_i, -1)
    _grouped_coords_of_range[(1,)](out_i, out_j, n_blocks, COUNT=count, GROUP=TILE_GROUP)
    pairs = list(zip(out_i.cpu().tolist()[:tiles], out_j.cpu().tolist()[:tiles], strict=True))
    assert sorted(pairs) == [(i, j) for i in range(n_blocks) for j in range(i + 1)]
    bands = [i // TILE_GROUP for i, _ in pairs]
    assert bands == sorted(bands), "the ids must walk the bands of tile rows in order"


@needs_kernel
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["isotropic", "power_law", "rank_deficient_noise"])
def test_rankme_through_the_triton_backend(dtype, kind):
    z = torch.from_numpy(make_embeddings(kind, 512, 96, seed=7)).to(dtype)
    value = rf.rankme(z.to(DEVICE), backend="triton", precision="fast")
    assert relative_error(value, reference_rankme(z)) <= tolerance(z, "fast")


@needs_kernel
def test_streaming_centred_accumulator_on_triton():
    z = torch.from_numpy(make_embeddings("large_mean", 800, 48, seed=5)).float().to(DEVICE)
    acc = rf.GramAccumulator(centered=True, precision="fast", backend="triton-deterministic")
    for batch in z.split(300):
        acc.update(batch)
    assert acc.last_backend == "triton-deterministic"
    assert relative_error(acc.rankme(), reference_rankme(z.cpu(), centered=True)) <= 1e-4


@needs_kernel
def test_exact_is_refused_with_a_reason():
    z = torch.randn(64, 16, device=DEVICE)
    with pytest.raises(ValueError, match="fast path only"):
        rf.rankme(z, backend="triton", precision="exact")


@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA device")
def test_auto_uses_triton_for_fast_cuda_input_and_the_exact_kernel_for_exact():
    z = torch.randn(2000, 64, device="cuda")
    fast = rf.GramAccumulator(precision="fast").update(z)
    exact = rf.GramAccumulator(precision="exact").update(z)
    assert fast.last_backend == "triton"
    # exact CUDA input: the float64 CUDA kernel where _C was built with it, else plain torch
    assert exact.last_backend == ("cuda" if rf.available_backends()["cuda"] is None else "torch")
    assert "triton" in exact.not_chosen


@needs_kernel
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
def test_the_kernel_passes_its_first_use_self_check(dtype):
    from rankme_fast.backends import self_check

    self_check.forget()
    acc = rf.GramAccumulator(precision="fast", backend="triton").update(torch.randn(300, 24, device=DEVICE).to(dtype))
    assert acc.last_backend == "triton"
    assert self_check.failure(rf.backends._REGISTRY["triton"], torch.device(DEVICE), acc_dtype(dtype), "fast") is None


@needs_kernel
def test_a_sabotaged_kernel_fails_its_self_check_and_is_skipped(monkeypatch):
    from rankme_fast.backends import self_check
    from rankme_fast.backends import triton_kernels as triton_syrk

    real = triton_syrk.syrk_update
    monkeypatch.setattr(triton_syrk, "syrk_update", lambda z, gram, **kw: real(z[:-1], gram, **kw))  # loses a row
    monkeypatch.setattr(rf.backends, "_PREFERENCE", ("triton", "torch"))  # also for CPU tensors (interpreter)
    self_check.forget()
    z = torch.randn(300, 24, device=DEVICE)
    try:
        with pytest.warns(RuntimeWarning, match="'triton' failed its self-check"):
            acc = rf.GramAccumulator(precision="fast", backend="auto").update(z)
        assert acc.last_backend != "triton" and "self-check" in acc.not_chosen["triton"]
        assert "self-check" in rf.available_backends("fast")["triton"]
        with pytest.raises(ValueError, match="self-check"):
            rf.GramAccumulator(precision="fast", backend="triton").update(z)
    finally:
        self_check.forget()


def acc_dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# Whatever layout, byte order and leading dimensions the input has (tests/layouts.py), the Triton
# backend gives the RankMe of a float64 SVD of the same values, in one call and in random splits.
# Few examples: the interpreter runs every program in Python.
@needs_kernel
@settings(max_examples=max(6, settings().max_examples // 4))
@given(
    held=held_inputs(dtypes=tuple(str(d).removeprefix("torch.") for d in INPUT_DTYPES), max_rows=24, max_cols=10),
    cuts=st.lists(st.integers(0, 30), max_size=3),
)
def test_any_input_through_the_triton_backend(held, cuts):
    chunks = held.row_chunks(cuts)
    if DEVICE == "cuda":  # GPU tensors of the same layouts
        chunks = [torch.as_tensor(np.asarray(c, dtype=np.float32) if not isinstance(c, torch.Tensor) else c)
                  .to(DEVICE) for c in chunks]  # fmt: skip
    acc = rf.GramAccumulator(precision="fast", backend="triton")
    for chunk in chunks:
        acc.update(chunk)
    assert acc.count == held.values.shape[0]
    reference = reference_rankme(held.values)
    assert relative_error(acc.rankme(), reference) <= tolerance(held.values, "fast"), held
