// SYRK through OpenBLAS (scipy-openblas32) on row blocks. Inputs already in the compute dtype
// with unit column stride go to BLAS in place; others are packed block by block with the cast
// and shift fused. precision=fast: float32 SYRK within a block, blocks added in float64.
#include <algorithm>
#include <climits>
#include <vector>

#include "kernels.h"

#ifdef RANKME_FAST_HAVE_BLAS
#include <cblas.h>
#endif

namespace rankme_fast {

#ifdef RANKME_FAST_HAVE_BLAS
namespace {

constexpr int64_t kMaxBlasRows = INT_MAX / 2;

bool usable_in_place(const rf_matrix_view& z, int32_t want_dtype, const double* shift) {
  return z.dtype == want_dtype && shift == nullptr && z.col_stride == 1 &&
         (z.row_stride >= z.cols || z.rows == 1) && z.row_stride <= INT_MAX;
}

// Calls f(block_pointer, block_rows, lda) over row blocks of z in the dtype T.
template <typename T, typename F>
void for_each_block(const rf_matrix_view& z, const double* shift, int32_t want_dtype, F&& f) {
  if (usable_in_place(z, want_dtype, shift)) {
    const int64_t lda = std::max<int64_t>(z.row_stride, z.cols);
    const int64_t block = want_dtype == RF_FLOAT64 ? kMaxBlasRows
                                                   : packed_block_rows(z.rows, z.cols, sizeof(T));
    for (int64_t r0 = 0; r0 < z.rows; r0 += block)
      f(static_cast<const T*>(z.data) + r0 * z.row_stride, std::min(block, z.rows - r0), lda);
    return;
  }
  const int64_t block = packed_block_rows(z.rows, z.cols, sizeof(T));
  std::vector<T> buffer(static_cast<size_t>(block * z.cols));
  for (int64_t r0 = 0; r0 < z.rows; r0 += block) {
    const int64_t count = std::min(block, z.rows - r0);
    dispatch_dtype(z.dtype, [&](auto tag) { pack_rows<decltype(tag), T>(z, r0, count, shift, buffer.data()); });
    f(buffer.data(), count, z.cols);
  }
}

}  // namespace

bool blas_available() { return true; }
const char* blas_name() { return "scipy-openblas32"; }

void syrk_blas_update(const rf_matrix_view& z, const double* shift, double* gram, int32_t precision) {
  const int n = static_cast<int>(z.cols);
  if (precision == RF_EXACT) {
    for_each_block<double>(z, shift, RF_FLOAT64, [&](const double* a, int64_t k, int64_t lda) {
      scipy_cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, n, static_cast<int>(k), 1.0, a,
                        static_cast<int>(lda), 1.0, gram, n);
    });
    return;
  }
  std::vector<float> block_gram(static_cast<size_t>(z.cols) * z.cols);
  for_each_block<float>(z, shift, RF_FLOAT32, [&](const float* a, int64_t k, int64_t lda) {
    scipy_cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, n, static_cast<int>(k), 1.0f, a,
                      static_cast<int>(lda), 0.0f, block_gram.data(), n);
    for (int64_t i = 0; i < z.cols; ++i) {  // one thread: see pack_rows
      const float* src = block_gram.data() + i * z.cols;
      double* dst = gram + i * z.cols;
      for (int64_t j = 0; j <= i; ++j) dst[j] += static_cast<double>(src[j]);
    }
  });
}

#else

bool blas_available() { return false; }
const char* blas_name() { return "none"; }
void syrk_blas_update(const rf_matrix_view&, const double*, double*, int32_t) {}

#endif

int64_t packed_block_rows(int64_t rows, int64_t cols, int64_t elem_bytes) {
  constexpr int64_t kMaxBytes = int64_t(128) << 20;
  int64_t block = std::clamp<int64_t>(2 * cols, 256, 16384);
  block = std::min(block, std::max<int64_t>(64, kMaxBytes / (elem_bytes * cols)));
  return std::max<int64_t>(1, std::min(block, rows));
}

}  // namespace rankme_fast
