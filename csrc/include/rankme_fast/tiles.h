// Index math of the lower-triangle tile grid: tile id t in [0, T(T+1)/2) <-> (row tile i,
// column tile j) with j <= i, row-major over the triangle. Shared by the CPU and CUDA kernels
// so that a 1-D launch covers only one triangle, with no idle tiles.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define RF_HOST_DEVICE __host__ __device__
#else
#define RF_HOST_DEVICE
#endif

namespace rankme_fast {

RF_HOST_DEVICE inline int64_t triangle_tile_count(int64_t tiles_per_side) {
  return tiles_per_side * (tiles_per_side + 1) / 2;
}

// Row tile i is the largest i with i(i+1)/2 <= t. The floating-point square root is
// corrected by one step each way, so the result is exact for any t below 2^52.
RF_HOST_DEVICE inline void triangle_tile_coords(int64_t t, int64_t* row_tile, int64_t* col_tile) {
  int64_t i = static_cast<int64_t>((std::sqrt(8.0 * static_cast<double>(t) + 1.0) - 1.0) * 0.5);
  while (i * (i + 1) / 2 > t) --i;
  while ((i + 1) * (i + 2) / 2 <= t) ++i;
  *row_tile = i;
  *col_tile = t - i * (i + 1) / 2;
}

}  // namespace rankme_fast
