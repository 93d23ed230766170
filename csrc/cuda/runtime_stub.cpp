// Stand-in for csrc/cuda/runtime.cu when the module is built without nvcc.
#include <cstdio>

#include "rankme_fast/rankme_fast.h"

extern "C" {

int rf_cuda_compiled(void) { return 0; }

int rf_cuda_device_count(int* count, char* err, size_t err_len) {
  *count = 0;
  std::snprintf(err, err_len, "rankme_fast._C was built without CUDA (nvcc was not found or RANKME_FAST_CUDA=OFF)");
  return 1;
}

}  // extern "C"
