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

int rf_cuda_device_info(int32_t device, int32_t* major, int32_t* minor, int32_t* multiprocessors, char* err,
                        size_t err_len) {
  int values[3] = {0, 0, 0};
  const cudaDeviceAttr attributes[3] = {cudaDevAttrComputeCapabilityMajor, cudaDevAttrComputeCapabilityMinor,
                                        cudaDevAttrMultiProcessorCount};
  for (int n = 0; n < 3; ++n) {
    const cudaError_t status = cudaDeviceGetAttribute(&values[n], attributes[n], device);
    if (status != cudaSuccess) {
      std::snprintf(err, err_len, "CUDA device %d is unavailable: %s (%s)", device, cudaGetErrorString(status),
                    cudaGetErrorName(status));
      return 1;
    }
  }
  *major = values[0];
  *minor = values[1];
  *multiprocessors = values[2];
  return 0;
}

}  // extern "C"
