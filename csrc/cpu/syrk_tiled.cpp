// The project's own SYRK: OpenMP over the tiles of the lower triangle only, row blocks packed
// into column panels with the cast and shift fused, a register-blocked micro-kernel. Used
// where no BLAS was found at build time, and as the CPU mirror of the CUDA tile math.
#include <algorithm>
#include <vector>

#include "kernels.h"
#include "rankme_fast/tiles.h"

namespace rankme_fast {
namespace {

constexpr int64_t kTile = 64;        // columns per panel / tile side
constexpr int64_t kRowBlock = 256;   // rows packed at a time
constexpr int kMicroRows = 8;        // micro-tile rows (a values broadcast)

// Packs rows [r0, r0+count) into panels: panel p holds columns [p*kTile, p*kTile + kTile)
// as count x kTile, zero-padded past the last column.
template <typename Tag, typename Acc>
void pack_panels(const rf_matrix_view& z, int64_t r0, int64_t count, const double* shift,
                 int64_t panels, Acc* out) {
  const int64_t cols = z.cols;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < count; ++r) {
    const auto* src = row_pointer<Tag>(z, r0 + r);
    for (int64_t p = 0; p < panels; ++p) {
      Acc* dst = out + (p * count + r) * kTile;
      const int64_t c0 = p * kTile, c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c) {
        const double v = Load<Tag>::get(src[c * z.col_stride]);
        dst[c - c0] = static_cast<Acc>(shift ? v - shift[c] : v);
      }
      for (int64_t c = c1; c < c0 + kTile; ++c) dst[c - c0] = Acc(0);
    }
  }
}

// acc[8][NR] over the sub-tile (ii, jj) of one tile: sum over k of a[k][ii+r] * b[k][jj+c].
template <typename Acc, int NR>
void micro_kernel(const Acc* a, const Acc* b, int64_t count, Acc (*acc)[NR]) {
  for (int r = 0; r < kMicroRows; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = Acc(0);
  for (int64_t k = 0; k < count; ++k) {
    const Acc* ak = a + k * kTile;
    const Acc* bk = b + k * kTile;
#pragma GCC unroll 8
    for (int r = 0; r < kMicroRows; ++r) {
      const Acc ar = ak[r];
#pragma GCC unroll 32
      for (int c = 0; c < NR; ++c) acc[r][c] += ar * bk[c];
    }
  }
}

template <typename Acc>
void tile_update(const Acc* panel_i, const Acc* panel_j, int64_t count, int64_t ti, int64_t tj,
                 int64_t cols, double* gram) {
  constexpr int NR = 128 / sizeof(Acc);  // two 64-byte vectors per micro-row
  alignas(64) Acc acc[kMicroRows][NR];
  for (int64_t ii = 0; ii < kTile; ii += kMicroRows) {
    const int64_t row0 = ti * kTile + ii;
    if (row0 >= cols) break;
    for (int64_t jj = 0; jj < kTile; jj += NR) {
      const int64_t col0 = tj * kTile + jj;
      if (col0 >= cols || col0 > row0 + kMicroRows - 1) break;  // past the edge or the diagonal
      micro_kernel<Acc, NR>(panel_i + ii, panel_j + jj, count, acc);
      for (int r = 0; r < kMicroRows; ++r) {
        const int64_t row = row0 + r;
        if (row >= cols) break;
        const int64_t last = std::min({col0 + NR, cols, row + 1});
        double* out = gram + row * cols;
        for (int64_t col = col0; col < last; ++col) out[col] += static_cast<double>(acc[r][col - col0]);
      }
    }
  }
}

template <typename Tag, typename Acc>
void syrk_tiled(const rf_matrix_view& z, const double* shift, double* gram) {
  const int64_t cols = z.cols;
  const int64_t panels = (cols + kTile - 1) / kTile;
  const int64_t tiles = triangle_tile_count(panels);
  const int64_t block = std::min<int64_t>(kRowBlock, z.rows);
  std::vector<Acc> packed(static_cast<size_t>(panels * block * kTile));
  for (int64_t r0 = 0; r0 < z.rows; r0 += block) {
    const int64_t count = std::min(block, z.rows - r0);
    pack_panels<Tag, Acc>(z, r0, count, shift, panels, packed.data());
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      int64_t ti, tj;
      triangle_tile_coords(t, &ti, &tj);
      tile_update<Acc>(packed.data() + ti * count * kTile, packed.data() + tj * count * kTile, count,
                       ti, tj, cols, gram);
    }
  }
}

}  // namespace

void syrk_tiled_update(const rf_matrix_view& z, const double* shift, double* gram, int32_t precision) {
  dispatch_dtype(z.dtype, [&](auto tag) {
    using Tag = decltype(tag);
    if (precision == RF_FAST)
      syrk_tiled<Tag, float>(z, shift, gram);
    else
      syrk_tiled<Tag, double>(z, shift, gram);
  });
}

}  // namespace rankme_fast
