"""The C++ kernel itself: one triangle only, every stride and dtype read in place, casts exact
at the extremes of each dtype, and the tile grid covering odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rankme_fast as rf
from rankme_fast._inputs import as_matrix
from rankme_fast.backends.cpu_backend import CpuBackend

pytestmark = pytest.mark.skipif(rf._C is None, reason="rankme_fast._C is not built")
KERNELS = ["blas", "tiled"] if rf._C is not None and rf._C.blas else ["tiled"]


def _gram(z, kernel, precision="exact", shift=None):
    matrix = as_matrix(z)
    # zero lower triangle, poisoned upper one: the kernel must leave the 7.0s alone
    gram = torch.triu(torch.full((matrix.cols, matrix.cols), 7.0, dtype=torch.float64), 1)
    CpuBackend(kernel).add_gram(matrix, gram, shift, precision)
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
    assert backend.count_nonfinite_rows(as_matrix(z)) == 2
    clean = rng.standard_normal((1000, 7)) * 3 + 1e6
    mean = backend.column_mean(as_matrix(clean[::-1]))
    np.testing.assert_allclose(mean.numpy(), clean.mean(axis=0), rtol=1e-14)


def test_kernels_agree_with_each_other(rng):
    z = torch.from_numpy(rng.standard_normal((777, 150))).to(torch.bfloat16)
    results = [torch.tril(_gram(z, k)) for k in KERNELS]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-13, atol=1e-10)


@pytest.mark.parametrize("precision", ["exact", "fast"])
@pytest.mark.parametrize("rows", [255, 256, 257, 511, 513, 9001])
def test_tiled_kernel_across_row_blocks(precision, rows, rng):
    """Row counts around the packed-block sizes (256 float64, 512 float32 rows) and past the fast
    path's float64 flush (every 4096 rows); an odd width that fills no tile or panel evenly."""
    z = torch.from_numpy(rng.standard_normal((rows, 101))).float() + 3.0
    shift = z.double().mean(0)
    for s in (None, shift):
        gram = _gram(z, "tiled", precision, s)
        reference = _reference(z, s)
        tol = {"rtol": 1e-12, "atol": 1e-9} if precision == "exact" else {"rtol": 2e-5, "atol": 2e-5 * rows}
        torch.testing.assert_close(torch.tril(gram), torch.tril(reference), **tol)
        assert torch.all(torch.triu(gram, 1) == torch.triu(torch.full_like(gram, 7.0), 1))


def test_auto_kernel_is_reported():
    assert rf._C.auto_kernel in KERNELS
    assert rf._C.tiled_simd in ("avx512", "avx2", "sse2")
