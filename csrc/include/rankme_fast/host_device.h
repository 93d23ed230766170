// RF_HOST_DEVICE marks functions that nvcc compiles for both the host and the GPU (and the
// host compiler, for the CPU tests, as plain functions).
#pragma once

#if defined(__CUDACC__)
#define RF_HOST_DEVICE __host__ __device__
#else
#define RF_HOST_DEVICE
#endif
