// C ABI of the CPU kernels: checks the view, normalises it (a Gram matrix does not depend on
// row order, so negative row strides are flipped) and routes to the BLAS or tiled SYRK.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels.h"
#include "rankme_fast/view.h"

using namespace rankme_fast;

namespace {

int fail(char* err, size_t err_len, const char* message) {
  if (err && err_len) std::snprintf(err, err_len, "%s", message);
  return 1;
}

}  // namespace

extern "C" {

int rf_cpu_syrk_update(const rf_matrix_view* z, const double* shift, double* gram, int32_t precision,
                       int32_t kernel, char* err, size_t err_len) {
  if (kernel < RF_KERNEL_AUTO || kernel > RF_KERNEL_TILED) return fail(err, err_len, "unknown kernel code");
  if (!valid_view(z)) return fail(err, err_len, "invalid matrix view (null data, empty shape or unknown dtype)");
  const int route = kernel == RF_KERNEL_AUTO ? rf_cpu_route(z->dtype, precision, z->cols)
                    : kernel == RF_KERNEL_BLAS ? RF_ROUTE_BLAS
                                               : rf_cpu_isa_index_in_use();
  return rf_cpu_syrk_update_with(z, shift, gram, precision, route, err, err_len);
}

int rf_cpu_syrk_update_with(const rf_matrix_view* z, const double* shift, double* gram, int32_t precision,
                            int route, char* err, size_t err_len) {
  if (!valid_view(z)) return fail(err, err_len, "invalid matrix view (null data, empty shape or unknown dtype)");
  if (!gram) return fail(err, err_len, "gram pointer is null");
  if (precision != RF_EXACT && precision != RF_FAST) return fail(err, err_len, "unknown precision code");
  if (route == RF_ROUTE_BLAS && !blas_available())
    return fail(err, err_len, "kernel 'blas' requested but rankme_fast._C was built without a BLAS");
  if (route != RF_ROUTE_UNSET && route != RF_ROUTE_BLAS && !rf_cpu_isa_runs_here(route))
    return fail(err, err_len, "that instruction-set variant cannot run on this CPU");
  const rf_matrix_view v = rows_ascending(*z);
  try {
    if (route == RF_ROUTE_UNSET) route = rf_cpu_auto_kernel() == RF_KERNEL_BLAS ? RF_ROUTE_BLAS : rf_cpu_isa_index_in_use();
    if (route == RF_ROUTE_BLAS)
      syrk_blas_update(v, shift, gram, precision);
    else
      syrk_tiled_update_variant(route, v, shift, gram, precision);
  } catch (const std::bad_alloc&) {
    return fail(err, err_len, "out of memory allocating the packing buffer");
  }
  return 0;
}

int64_t rf_cpu_count_nonfinite_rows(const rf_matrix_view* z) {
  if (!valid_view(z)) return -1;
  const rf_matrix_view v = *z;
  int64_t bad = 0;
  dispatch_dtype(v.dtype, [&](auto tag) {
    using Tag = decltype(tag);
#pragma omp parallel for schedule(static) reduction(+ : bad) if (v.rows * v.cols > (1 << 16))
    for (int64_t r = 0; r < v.rows; ++r) {
      const auto* row = row_pointer<Tag>(v, r);
      bool finite = true;
      if (v.col_stride == 1) {
        finite = !any_nonfinite<Tag>(row, v.cols);
      } else {
        for (int64_t c = 0; c < v.cols; ++c) finite &= Load<Tag>::finite(row[c * v.col_stride]);
      }
      bad += finite ? 0 : 1;
    }
  });
  return bad;
}

int rf_cpu_column_mean(const rf_matrix_view* z, double* out, char* err, size_t err_len) {
  if (!valid_view(z)) return fail(err, err_len, "invalid matrix view (null data, empty shape or unknown dtype)");
  const rf_matrix_view v = *z;
  // A fixed number of row chunks, summed in a fixed order: deterministic for any thread count.
  // Small inputs stay on one thread: waking a team costs more than the sums (and far more
  // when other processes hold the cores).
  constexpr int64_t kChunks = 16;
  std::vector<double> partial(static_cast<size_t>(kChunks * v.cols), 0.0);
  dispatch_dtype(v.dtype, [&](auto tag) {
    using Tag = decltype(tag);
#pragma omp parallel for schedule(static) if (v.rows * v.cols > (1 << 16))
    for (int64_t chunk = 0; chunk < kChunks; ++chunk) {
      double* sums = partial.data() + chunk * v.cols;
      for (int64_t r = chunk * v.rows / kChunks; r < (chunk + 1) * v.rows / kChunks; ++r) {
        const auto* row = row_pointer<Tag>(v, r);
        for (int64_t c = 0; c < v.cols; ++c) sums[c] += Load<Tag>::get(row[c * v.col_stride]);
      }
    }
  });
  for (int64_t c = 0; c < v.cols; ++c) {
    double total = 0.0;
    for (int64_t chunk = 0; chunk < kChunks; ++chunk) total += partial[chunk * v.cols + c];
    out[c] = total / static_cast<double>(v.rows);
  }
  return 0;
}

int rf_cpu_has_blas(void) { return blas_available() ? 1 : 0; }
const char* rf_cpu_blas_name(void) { return blas_name(); }
const char* rf_cpu_tiled_simd(void) { return tiled_simd(); }

int32_t rf_cpu_auto_kernel(void) {
  const bool tiled_vectorised = std::string(tiled_simd()) != "sse2";
  return tiled_vectorised || !blas_available() ? RF_KERNEL_TILED : RF_KERNEL_BLAS;
}

}  // extern "C"
