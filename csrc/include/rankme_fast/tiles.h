// Index math of the lower-triangle tile grid: tile id t in [0, T(T+1)/2) <-> (row tile i,
// column tile j) with j <= i. The CUDA kernel launches one block per id, so a 1-D grid covers
// only one triangle with no idle blocks; the same functions are exposed through
// rankme_fast._C and tested on the CPU (tests/kernels/test_cuda_kernel.py).
#pragma once
#include <cmath>
#include <cstdint>

#include "rankme_fast/host_device.h"

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

// The same ids in bands of `group` tile rows walked column by column, so that the blocks
// running at one time share few column blocks of Z in L2 (the GEMM "swizzle" idea). Band b
// owns the ids from T(b*group) on, T(x) = x(x+1)/2: first its full columns j < b*group
// (`height` tiles each), then its own small triangle row by row. Mirrors the Triton kernel's
// _grouped_tile_coords.
RF_HOST_DEVICE inline void grouped_tile_coords(int64_t t, int64_t tiles_per_side, int64_t group, int64_t* row_tile,
                                               int64_t* col_tile) {
  int64_t row, col;
  triangle_tile_coords(t, &row, &col);
  const int64_t first = (row / group) * group;
  const int64_t rest = tiles_per_side - first;
  const int64_t height = rest < group ? rest : group;
  const int64_t local = t - first * (first + 1) / 2;
  const int64_t before_diagonal = first * height;
  if (local < before_diagonal) {
    *row_tile = first + local % height;
    *col_tile = local / height;
  } else {
    triangle_tile_coords(local - before_diagonal, &row, &col);
    *row_tile = first + row;
    *col_tile = first + col;
  }
}

}  // namespace rankme_fast
