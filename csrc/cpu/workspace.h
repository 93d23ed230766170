// What the CPU kernels share besides their arithmetic: 64-byte aligned work buffers and the
// OpenMP team. Internal linkage: each variant's file compiles its own copy with its own flags.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rankme_fast {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// `elements` values of T on a 64-byte boundary, uninitialised (zeroed with `zeroed`).
template <typename T>
std::unique_ptr<T[], FreeDeleter> aligned_buffer(int64_t elements, bool zeroed = false) {
  const size_t bytes = (std::max<size_t>(1, static_cast<size_t>(elements)) * sizeof(T) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  if (zeroed) std::memset(p, 0, bytes);
  return std::unique_ptr<T[], FreeDeleter>(static_cast<T*>(p));
}

#ifdef _OPENMP
inline int max_threads() { return omp_get_max_threads(); }
inline int thread_id() { return omp_get_thread_num(); }
#else
inline int max_threads() { return 1; }
inline int thread_id() { return 0; }
#endif

}  // namespace
}  // namespace rankme_fast
