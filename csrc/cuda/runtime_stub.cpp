// Stand-in for csrc/cuda/runtime.cu when the module is built without nvcc.
#include <cstdio>

#include "rankme_fast/rankme_fast.h"

extern "C" {

int rf_cuda_compiled(void) { return 0; }

static const char* const kNoCuda = "rankme_fast._C was built without CUDA (nvcc was not found or RANKME_FAST_CUDA=OFF)";

int rf_cuda_device_count(int* count, char* err, size_t err_len) {
  *count = 0;
  std::snprintf(err, err_len, "%s", kNoCuda);
  return 1;
}

int rf_cuda_device_info(int32_t, int32_t*, int32_t*, int32_t*, char* err, size_t err_len) {
  std::snprintf(err, err_len, "%s", kNoCuda);
  return 1;
}

int rf_cuda_syrk_update(const rf_matrix_view*, const double*, double*, double*, int32_t, void*, int32_t, int64_t,
                        int32_t, int32_t*, int64_t*, char* err, size_t err_len) {
  std::snprintf(err, err_len, "%s", kNoCuda);
  return 1;
}

}  // extern "C"
