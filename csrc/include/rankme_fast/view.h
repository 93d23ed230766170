// Helpers on rf_matrix_view shared by the CPU and CUDA entry points.
#pragma once
#include "rankme_fast/rankme_fast.h"

namespace rankme_fast {

inline int64_t element_bytes(int32_t dtype) { return dtype == RF_FLOAT64 ? 8 : dtype == RF_FLOAT32 ? 4 : 2; }

inline bool valid_view(const rf_matrix_view* z) {
  return z && z->data && z->rows > 0 && z->cols > 0 && z->dtype >= RF_FLOAT64 && z->dtype <= RF_BFLOAT16;
}

// A Gram matrix does not depend on row order, so a negative row stride is flipped.
inline rf_matrix_view rows_ascending(const rf_matrix_view& z) {
  rf_matrix_view v = z;
  if (v.row_stride < 0) {
    v.data = static_cast<const char*>(v.data) + (v.rows - 1) * v.row_stride * element_bytes(v.dtype);
    v.row_stride = -v.row_stride;
  }
  return v;
}

}  // namespace rankme_fast
