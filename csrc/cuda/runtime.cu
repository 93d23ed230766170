// CUDA runtime queries behind the C ABI. Compiled only when nvcc is found; the module then
// imports on any machine and reports, on call, why no device can be used.
#include <cuda_runtime.h>

#include <cstdio>

#include "rankme_fast/rankme_fast.h"

extern "C" {

int rf_cuda_compiled(void) { return 1; }

int rf_cuda_device_count(int* count, char* err, size_t err_len) {
  *count = 0;
  const cudaError_t status = cudaGetDeviceCount(count);
  if (status != cudaSuccess) {
    std::snprintf(err, err_len, "CUDA is unavailable: %s (%s)", cudaGetErrorString(status),
                  cudaGetErrorName(status));
    *count = 0;
    return 1;
  }
  return 0;
}

}  // extern "C"
