// Stand-ins for the CUDA built-ins that csrc/cuda/syrk_kernel.cuh uses, so that the kernel
// source itself runs on the CPU: each CUDA thread of a block is a fiber (its own stack) on one
// OS thread; __syncthreads and the per-warp barrier of the warp-wide tensor-core instructions
// (computed from mma_truth.h's layouts) switch to the next fiber. Between two barriers the
// fibers of a block run one after another, in ascending thread order on one sweep and
// descending on the next, so a read of shared memory another thread writes without a barrier
// in between sees the unwritten value in one of the two orders: shared memory starts as NaN,
// and a read of anything the kernel did not write shows in the result. One OS thread keeps the
// run deterministic and cheap on a busy machine (OS threads and std::barrier, the earlier
// design, spent most of their time in the scheduler). Slow and only for tiny shapes; include
// it before syrk_kernel.cuh and before any system header.
#undef _FORTIFY_SOURCE  // longjmp between fiber stacks is what it would refuse
#pragma once
#define RF_CUDA_EMULATION 1

#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
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
inline EmulatedDim3 blockIdx, threadIdx;  // of the running fiber, set on each switch

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
constexpr size_t kStackBytes = 128 * 1024;

struct Fiber;
inline Fiber* running = nullptr;
inline jmp_buf scheduler;
void yield();

// A barrier of `count` fibers: the last to arrive releases the others and goes on.
struct Barrier {
  explicit Barrier(int count) : count(count) {}
  const int count;
  int arrived = 0;
  unsigned generation = 0;
  void arrive_and_wait();
};

struct Fiber {
  ucontext_t start;
  jmp_buf resume;
  std::unique_ptr<char[]> stack{new char[kStackBytes]};
  const Barrier* waiting = nullptr;
  unsigned generation = 0;
  bool started = false, done = false;
  bool runnable() const { return !done && (waiting == nullptr || waiting->generation != generation); }
};

inline void Barrier::arrive_and_wait() {
  const unsigned mine = generation;
  if (++arrived == count) {
    arrived = 0;
    ++generation;
    return;
  }
  running->waiting = this;
  running->generation = mine;
  yield();
}

inline void yield() {
  if (!_setjmp(running->resume)) _longjmp(scheduler, 1);
}

struct Warp {
  Barrier barrier{kWarpSize};
  double a[kWarpSize][4], b[kWarpSize][2], c[kWarpSize][4];
};

struct Block {
  explicit Block(size_t smem_doubles, int threads)
      : smem(smem_doubles, std::numeric_limits<double>::quiet_NaN()), barrier(threads), warps(threads / kWarpSize) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  std::vector<double> smem;
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline Block* current = nullptr;
inline std::function<void()> body;  // the kernel call every fiber of the block makes

inline Warp& warp() { return *current->warps[threadIdx.x / kWarpSize]; }

inline void fiber_main() {
  body();
  running->done = true;
  _longjmp(scheduler, 1);
}

// Runs fiber f until it waits at a barrier or ends (it comes back through _longjmp).
[[gnu::noinline]] inline void switch_to(Fiber& f) {
  if (_setjmp(scheduler)) return;
  if (f.started) _longjmp(f.resume, 1);
  f.started = true;
  ucontext_t here;
  swapcontext(&here, &f.start);  // the first entry
}

// Runs kernel(args) for every block of a (grid_x, grid_y) grid, one block after another.
template <class Kernel, class Args>
void launch(Kernel kernel, unsigned grid_x, unsigned grid_y, int threads, size_t smem_bytes, const Args& args) {
  body = [&] { kernel(args); };
  std::vector<Fiber> fibers(static_cast<size_t>(threads));
  for (unsigned by = 0; by < grid_y; ++by)
    for (unsigned bx = 0; bx < grid_x; ++bx) {
      Block block(smem_bytes / sizeof(double), threads);
      current = &block;
      for (Fiber& f : fibers) {
        f = Fiber{};
        getcontext(&f.start);
        f.start.uc_stack = {f.stack.get(), 0, kStackBytes};
        f.start.uc_link = nullptr;
        makecontext(&f.start, fiber_main, 0);
      }
      int remaining = threads;
      for (bool ascending = true; remaining > 0; ascending = !ascending) {
        bool progressed = false;
        for (int n = 0; n < threads; ++n) {
          const int t = ascending ? n : threads - 1 - n;
          Fiber& f = fibers[static_cast<size_t>(t)];
          if (!f.runnable()) continue;
          f.waiting = nullptr;
          running = &f;
          blockIdx = {bx, by, 0};
          threadIdx = {static_cast<unsigned>(t), 0, 0};
          switch_to(f);
          progressed = true;
          remaining -= f.done;
        }
        if (!progressed) {
          std::fprintf(stderr, "emulation: every thread of block (%u, %u) waits: a barrier not all reach\n", bx, by);
          std::abort();
        }
      }
    }
}

}  // namespace emulation

inline double* dynamic_shared() { return emulation::current->smem.data(); }
inline void __syncthreads() { emulation::current->barrier.arrive_and_wait(); }
inline double atomicAdd(double* address, double value) {  // one OS thread: nothing to lock
  const double old = *address;
  *address = old + value;
  return old;
}
