// The measured rate of a unit: a step function (independent multiply-add chains, say) run by
// every thread of the OpenMP team, repeated until it takes about `seconds`. Internal linkage:
// each variant's file compiles its own copy with its own flags.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rankme_fast {
namespace {

// GFLOP/s of step(steps) in every thread, `flops` per step and thread.
template <typename Step>
double team_gflops(Step step, double flops, double seconds, int64_t steps) {
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    int threads = 1;
#pragma omp parallel
    {
#ifdef _OPENMP
#pragma omp single
      threads = omp_get_num_threads();
#endif
      step(steps);
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed >= seconds || steps > (int64_t(1) << 40)) return threads * flops * steps / elapsed / 1e9;
    steps *= elapsed > 0 ? std::max<int64_t>(2, static_cast<int64_t>(seconds / elapsed * 1.2)) : 16;
  }
}

}  // namespace
}  // namespace rankme_fast
