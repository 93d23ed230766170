// The exact CUDA SYRK kernel and its launch plan (see syrk_cuda.cu for the CUDA runtime side).
// Kept apart so that tests/kernels/cpp/syrk_emulation_test.cpp can run this very code on the CPU, one
// fiber per CUDA thread (tests/kernels/cpp/cuda_emulation.h stands in for the CUDA built-ins).
//
// * One block per lower-triangle tile of 128 x 128 (blockIdx.x walks only those tiles, in bands
//   of tile rows for L2 reuse), times a number of row splits (blockIdx.y) chosen so that small
//   D still fills the GPU.
// * Each stage of 16 rows is read from Z in its own dtype (16-byte loads when the rows allow),
//   cast to float64 and shifted in registers, and stored to shared memory; diagonal tiles load
//   one operand. The next stage's loads are in flight while the current one is multiplied.
// * 8 warps each own a 64 x 32 piece of the tile in float64 registers (warp_tile.h): FP64
//   tensor cores (DMMA) on sm_80+, plain FMAs otherwise.
// * The tile is added into the state directly when one split owns it, else with float64
//   atomics; only entries on or below the diagonal are touched.
#pragma once
#include <cstdint>
#include <cstring>

#include "rankme_fast/rankme_fast.h"
#include "rankme_fast/tiles.h"
#include "rankme_fast/view.h"
#include "warp_tile.h"

namespace rankme_fast {
namespace cuda_syrk {

constexpr int kThreads = 256;                   // 8 warps: 2 (rows) x 4 (columns) of 64 x 32
constexpr int kTile = 128;                      // block tile edge
constexpr int kDepth = 16;                      // Z rows per shared-memory stage
constexpr int kLd = kTile + 4;                  // padded stage row: conflict-free fragment loads
constexpr int kStage = kDepth * kLd;            // doubles per operand per stage
constexpr int kGroup = 8;                       // tile rows per launch band
constexpr int64_t kMinSplitRows = 8 * kDepth;   // a split below this is mostly prologue/epilogue
constexpr int64_t kEpilogueRows = 4 * kDepth;   // the epilogue costs about as much as these rows
constexpr size_t kSmemBytes = (2 * 2 * kStage + 2 * kTile) * sizeof(double);
static_assert(kThreads / 32 == (kTile / warp_tile::kWarpRows) * (kTile / warp_tile::kWarpCols), "warp grid");
static_assert(kLd % 16 == 4, "fragment loads are conflict-free when ld = 4 (mod 16) doubles");

struct Params {
  const void* z;
  int64_t rows, cols, row_stride, col_stride;
  const double* shift;
  double* gram;
  double* column_sums;
  int64_t splits, tiles_per_side;  // split y takes rows [y·rows/splits, (y+1)·rows/splits)
  int vectorised;  // col_stride 1, rows 4-element aligned: 4 columns per load instruction
  int atomic;      // several splits add into the same tile
};

#if defined(__CUDACC__)
__device__ __forceinline__ double* dynamic_shared() {
  extern __shared__ __align__(16) double smem[];
  return smem;
}
#endif

__device__ __forceinline__ double to_double(double x) { return x; }
__device__ __forceinline__ double to_double(float x) { return x; }
__device__ __forceinline__ double to_double(__half x) { return __half2float(x); }
__device__ __forceinline__ double to_double(__nv_bfloat16 x) { return __bfloat162float(x); }

// Four consecutive columns of one row: one 8- or 16-byte load (two for float64) when allowed.
template <typename T>
__device__ __forceinline__ void load4(const T* p, bool vectorised, int64_t col_stride, int valid, T (&out)[4]) {
  if (vectorised && valid == 4) {
    if constexpr (sizeof(T) == 2) {
      const uint2 bits = __ldg(reinterpret_cast<const uint2*>(p));
      memcpy(out, &bits, sizeof bits);
    } else if constexpr (sizeof(T) == 4) {
      const uint4 bits = __ldg(reinterpret_cast<const uint4*>(p));
      memcpy(out, &bits, sizeof bits);
    } else {
      const uint4 lo = __ldg(reinterpret_cast<const uint4*>(p));
      const uint4 hi = __ldg(reinterpret_cast<const uint4*>(p) + 1);
      memcpy(out, &lo, sizeof lo);
      memcpy(out + 2, &hi, sizeof hi);
    }
    return;
  }
#pragma unroll
  for (int c = 0; c < 4; ++c)
    if (c < valid) out[c] = p[c * col_stride];
}

// One thread's share of a stage: rows `row` and `row + 8`, columns col4..col4+3, of each operand.
template <typename T>
struct Stage {
  T raw[2][2][4];  // [operand][row group][column]

  __device__ __forceinline__ void load(const Params& p, const int64_t (&x0)[2], int operands, int64_t k, int64_t end,
                                       int row, int col4) {
    const T* z = static_cast<const T*>(p.z);
#pragma unroll
    for (int op = 0; op < 2; ++op) {
      if (op >= operands) break;
#pragma unroll
      for (int g = 0; g < 2; ++g) {
        const int64_t r = k + row + 8 * g;
        const int64_t c = x0[op] + col4;
        const int64_t left = p.cols - c;
        const int valid = r < end ? static_cast<int>(left < 4 ? (left > 0 ? left : 0) : 4) : 0;
        if (valid) load4(z + r * p.row_stride + c * p.col_stride, p.vectorised, p.col_stride, valid, raw[op][g]);
      }
    }
  }

  // Cast, shift and zero the padding, then write float64 rows into the buffer at dst; the
  // diagonal tile's first operand also feeds the column sums.
  __device__ __forceinline__ void store(const Params& p, double* dst, const double* s_shift,
                                        const int64_t (&x0)[2], int operands, int64_t k, int64_t end, int row,
                                        int col4, double (&col_sum)[4], bool sum_columns) {
#pragma unroll
    for (int op = 0; op < 2; ++op) {
      if (op >= operands) break;
#pragma unroll
      for (int g = 0; g < 2; ++g) {
        const bool row_ok = k + row + 8 * g < end;
        double v[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const bool ok = row_ok && x0[op] + col4 + c < p.cols;
          const double x = ok ? to_double(raw[op][g][c]) : 0.0;
          if (op == 0 && sum_columns) col_sum[c] += x;
          v[c] = ok ? x - s_shift[op * kTile + col4 + c] : 0.0;
        }
        double2* out = reinterpret_cast<double2*>(dst + op * kStage + (row + 8 * g) * kLd + col4);
        out[0] = make_double2(v[0], v[1]);
        out[1] = make_double2(v[2], v[3]);
      }
    }
  }
};

template <typename T, class Variant>
__global__ void __launch_bounds__(kThreads, 1) syrk_kernel(Params p) {
  double* const smem = dynamic_shared();      // [buffer][operand][kDepth][kLd], then the shifts
  double* const s_shift = smem + 4 * kStage;        // [operand][column]

  int64_t ti, tj;
  grouped_tile_coords(blockIdx.x, p.tiles_per_side, kGroup, &ti, &tj);
  const bool diagonal = ti == tj;
  const int operands = diagonal ? 1 : 2;
  const int64_t x0[2] = {ti * kTile, tj * kTile};
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * p.rows / p.splits;
  const int64_t end = (static_cast<int64_t>(blockIdx.y) + 1) * p.rows / p.splits;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int row = tid / 32, col4 = 4 * (tid % 32);  // this thread's loads within a stage
  const int m0 = warp_tile::kWarpRows * (warp / 4), n0 = warp_tile::kWarpCols * (warp % 4);
  const bool sum_columns = p.column_sums != nullptr && diagonal;

  for (int x = tid; x < 2 * kTile; x += kThreads) {
    const int64_t c = (x < kTile ? x0[0] : x0[1]) + x % kTile;
    s_shift[x] = p.shift != nullptr && c < p.cols ? p.shift[c] : 0.0;
  }
  warp_tile::Acc acc;
#pragma unroll
  for (int a = 0; a < warp_tile::kRowFrags; ++a)
#pragma unroll
    for (int b = 0; b < warp_tile::kColFrags; ++b) acc[a][b][0] = acc[a][b][1] = 0.0;
  double col_sum[4] = {0.0, 0.0, 0.0, 0.0};
  __syncthreads();  // s_shift

  Stage<T> stage;
  stage.load(p, x0, operands, begin, end, row, col4);
  stage.store(p, smem, s_shift, x0, operands, begin, end, row, col4, col_sum, sum_columns);
  __syncthreads();
  int current = 0;
  for (int64_t k = begin; k < end; k += kDepth) {
    const bool more = k + kDepth < end;
    if (more) stage.load(p, x0, operands, k + kDepth, end, row, col4);  // in flight during the product
    const double* sA = smem + current * 2 * kStage;
    const double* sB = diagonal ? sA : sA + kStage;
    warp_tile::Product<Variant>::template run<kDepth>(sA, sB, kLd, m0, n0, lane, acc);
    // The other buffer was last read before the previous barrier, so it is free to overwrite.
    if (more) stage.store(p, smem + (current ^ 1) * 2 * kStage, s_shift, x0, operands, k + kDepth, end, row, col4, col_sum,
                          sum_columns);
    __syncthreads();
    current ^= 1;
  }

#pragma unroll
  for (int a = 0; a < warp_tile::kRowFrags; ++a)
#pragma unroll
    for (int b = 0; b < warp_tile::kColFrags; ++b)
#pragma unroll
      for (int v = 0; v < 2; ++v) {
        const warp_tile::Coord e = warp_tile::acc_coord(lane, a, b, v);
        const int64_t i = x0[0] + m0 + e.row, j = x0[1] + n0 + e.col;
        if (i < p.cols && j <= i) {
          double* dst = p.gram + i * p.cols + j;
          if (p.atomic)
            atomicAdd(dst, acc[a][b][v]);
          else
            *dst += acc[a][b][v];
        }
      }
  if (sum_columns)
#pragma unroll
    for (int c = 0; c < 4; ++c)
      if (x0[0] + col4 + c < p.cols) atomicAdd(p.column_sums + x0[0] + col4 + c, col_sum[c]);
}

// ---- launch plan (host, no CUDA calls) ------------------------------------------------------

struct Plan {
  unsigned tiles, splits;  // grid (tiles, splits)
  Params params;
};

// Row splits: minimise (waves of blocks) x (rows per block + the epilogue's cost in rows).
inline int64_t choose_splits(int64_t rows, int64_t tiles, int64_t concurrent_blocks) {
  const int64_t by_rows = rows / kMinSplitRows, by_grid = 4 * concurrent_blocks;
  int64_t most = by_rows < by_grid ? by_rows : by_grid;
  most = most < 1 ? 1 : most > 65535 ? 65535 : most;
  int64_t best = 1;
  double best_cost = 0.0;
  for (int64_t s = 1; s <= most; ++s) {
    const int64_t waves = (tiles * s + concurrent_blocks - 1) / concurrent_blocks;
    const double cost = static_cast<double>(waves) * (static_cast<double>(rows) / s + kEpilogueRows);
    if (s == 1 || cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

// z must be normalised (rows_ascending). splits <= 0 picks them for `concurrent_blocks`; a
// request is honoured up to one split per kDepth rows (and the grid's 65535), the rows shared
// out evenly (split sizes differ by one row at most).
inline Plan plan_launch(const rf_matrix_view& z, const double* shift, double* gram, double* column_sums,
                        int64_t splits, int64_t concurrent_blocks) {
  const int64_t tiles_per_side = (z.cols + kTile - 1) / kTile;
  const int64_t tiles = triangle_tile_count(tiles_per_side);
  if (splits <= 0) splits = choose_splits(z.rows, tiles, concurrent_blocks < 1 ? 1 : concurrent_blocks);
  const int64_t most = (z.rows + kDepth - 1) / kDepth;
  splits = splits < most ? splits : most;
  splits = splits < 65535 ? splits : 65535;
  const int64_t bytes = element_bytes(z.dtype);
  const bool vectorised = z.col_stride == 1 && z.row_stride % 4 == 0 &&
                          reinterpret_cast<uintptr_t>(z.data) % static_cast<uintptr_t>(4 * bytes) == 0;
  Plan plan;
  plan.tiles = static_cast<unsigned>(tiles);
  plan.splits = static_cast<unsigned>(splits);
  plan.params = Params{z.data, z.rows, z.cols, z.row_stride, z.col_stride, shift, gram, column_sums,
                       splits, tiles_per_side, vectorised ? 1 : 0, splits > 1 ? 1 : 0};
  return plan;
}

}  // namespace cuda_syrk
}  // namespace rankme_fast
