// Stand-ins for the CUDA built-ins that csrc/cuda/syrk_kernel.cuh uses, so that the kernel
// source itself runs on the CPU: one std::thread per CUDA thread, std::barrier for
// __syncthreads, a per-warp barrier and exchange buffer for the warp-wide tensor-core
// instructions (computed from mma_truth.h's layouts), a mutex for float64 atomics. Shared
// memory starts as NaN, so a read of anything the kernel did not write shows in the result.
// Slow and only for tiny shapes; include it before syrk_kernel.cuh.
#pragma once
#define RF_CUDA_EMULATION 1

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "convert.h"  // csrc/cpu: exact half/bfloat16 -> float

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct EmulatedDim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmulatedDim3 blockIdx, threadIdx;

struct double2 {
  double x, y;
};
inline double2 make_double2(double x, double y) { return {x, y}; }
struct alignas(8) uint2 {
  uint32_t x, y;
};
struct alignas(16) uint4 {
  uint32_t x, y, z, w;
};
template <class T>
T __ldg(const T* p) {
  return *p;
}

struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return rankme_fast::half_to_float(h.bits); }
inline float __bfloat162float(__nv_bfloat16 b) { return rankme_fast::bfloat16_to_float(b.bits); }

namespace emulation {

constexpr int kWarpSize = 32;

struct Warp {
  std::barrier<> barrier{kWarpSize};
  double a[kWarpSize][4], b[kWarpSize][2], c[kWarpSize][4];
};

struct Block {
  explicit Block(size_t smem_doubles, int threads)
      : smem(smem_doubles, std::numeric_limits<double>::quiet_NaN()), barrier(threads), warps(threads / kWarpSize) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  std::vector<double> smem;
  std::barrier<> barrier;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* current = nullptr;
inline std::mutex atomics;

inline Warp& warp() { return *current->warps[threadIdx.x / kWarpSize]; }

// Runs kernel(args) for every block of a (grid_x, grid_y) grid, one block after another.
template <class Kernel, class Args>
void launch(Kernel kernel, unsigned grid_x, unsigned grid_y, int threads, size_t smem_bytes, const Args& args) {
  for (unsigned by = 0; by < grid_y; ++by)
    for (unsigned bx = 0; bx < grid_x; ++bx) {
      Block block(smem_bytes / sizeof(double), threads);
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          blockIdx = {bx, by, 0};
          threadIdx = {static_cast<unsigned>(t), 0, 0};
          current = &block;
          kernel(args);
        });
      for (auto& thread : pool) thread.join();
    }
}

}  // namespace emulation

inline double* dynamic_shared() { return emulation::current->smem.data(); }
inline void __syncthreads() { emulation::current->barrier.arrive_and_wait(); }
inline double atomicAdd(double* address, double value) {
  std::lock_guard<std::mutex> lock(emulation::atomics);
  const double old = *address;
  *address = old + value;
  return old;
}
