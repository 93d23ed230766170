// Exact streaming SYRK on the GPU: gram[lower] += (Z - shift)^T (Z - shift) with float64
// products and sums, one triangle only.
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
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "rankme_fast/rankme_fast.h"
#include "rankme_fast/tiles.h"
#include "rankme_fast/view.h"
#include "warp_tile.h"

namespace rankme_fast {
namespace {

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
  int64_t rows_per_split, tiles_per_side;
  int vectorised;  // col_stride 1, rows 4-element aligned: 4 columns per load instruction
  int atomic;      // several splits add into the same tile
};

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
  extern __shared__ __align__(16) double smem[];  // [buffer][operand][kDepth][kLd], then the shifts
  double* const s_shift = smem + 4 * kStage;        // [operand][column]

  int64_t ti, tj;
  grouped_tile_coords(blockIdx.x, p.tiles_per_side, kGroup, &ti, &tj);
  const bool diagonal = ti == tj;
  const int operands = diagonal ? 1 : 2;
  const int64_t x0[2] = {ti * kTile, tj * kTile};
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * p.rows_per_split;
  const int64_t end = begin + p.rows_per_split < p.rows ? begin + p.rows_per_split : p.rows;

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

// ---- host side ------------------------------------------------------------------------------

int fail(char* err, size_t err_len, const char* what, cudaError_t status) {
  std::snprintf(err, err_len, "%s: %s (%s)", what, cudaGetErrorString(status), cudaGetErrorName(status));
  return 1;
}

int fail(char* err, size_t err_len, const char* message) {
  std::snprintf(err, err_len, "%s", message);
  return 1;
}

struct Launch {
  dim3 grid;
  Params params;
  cudaStream_t stream;
};

template <typename T, class Variant>
cudaError_t blocks_per_multiprocessor(int* blocks) {
  const auto kernel = syrk_kernel<T, Variant>;
  cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  if (status == cudaSuccess) status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kernel, kThreads, kSmemBytes);
  return status;
}

template <typename T, class Variant>
cudaError_t launch(const Launch& l) {
  syrk_kernel<T, Variant><<<l.grid, kThreads, kSmemBytes, l.stream>>>(l.params);
  return cudaGetLastError();
}

struct Occupancy {
  int* blocks;
  template <typename T, class V>
  cudaError_t operator()() const { return blocks_per_multiprocessor<T, V>(blocks); }
};

struct Launcher {
  const Launch* l;
  template <typename T, class V>
  cudaError_t operator()() const { return launch<T, V>(*l); }
};

// Calls f.template operator()<T, Variant>() for the runtime dtype and variant codes.
template <class F>
cudaError_t dispatch(int32_t dtype, int32_t variant, const F& f) {
  auto by_variant = [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    switch (variant) {
      case RF_CUDA_DMMA_16X8X8:
        return f.template operator()<T, warp_tile::Dmma16x8x8>();
      case RF_CUDA_DMMA_8X8X4:
        return f.template operator()<T, warp_tile::Dmma8x8x4>();
      default:
        return f.template operator()<T, warp_tile::Simt>();
    }
  };
  switch (dtype) {
    case RF_FLOAT64:
      return by_variant(double{});
    case RF_FLOAT32:
      return by_variant(float{});
    case RF_FLOAT16:
      return by_variant(__half{});
    default:
      return by_variant(__nv_bfloat16{});
  }
}

int32_t best_variant(int major) {
  return major >= 9 ? RF_CUDA_DMMA_16X8X8 : major >= 8 ? RF_CUDA_DMMA_8X8X4 : RF_CUDA_SIMT;
}

const char* variant_name(int32_t variant) {
  switch (variant) {
    case RF_CUDA_DMMA_16X8X8:
      return "dmma-16x8x8";
    case RF_CUDA_DMMA_8X8X4:
      return "dmma-8x8x4";
    default:
      return "simt";
  }
}

// Row splits: minimise (waves of blocks) x (rows per block + the epilogue's cost in rows).
int64_t choose_splits(int64_t rows, int64_t tiles, int64_t concurrent_blocks) {
  const int64_t most = std::max<int64_t>(1, std::min<int64_t>({rows / kMinSplitRows, 65535, 4 * concurrent_blocks}));
  int64_t best = 1;
  double best_cost = 0.0;
  for (int64_t s = 1; s <= most; ++s) {
    const int64_t waves = (tiles * s + concurrent_blocks - 1) / concurrent_blocks;
    const double cost = static_cast<double>(waves) * (static_cast<double>(rows) / s + kEpilogueRows);
    if (s == 1 || cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

bool on_device(const void* ptr, int device) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, ptr) != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error
    return false;
  }
  return (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged) &&
         attributes.device == device;
}

// Runs the update with `device` current, restoring the caller's device afterwards.
int syrk_on_device(const rf_matrix_view& z, const double* shift, double* gram, double* column_sums, int device,
                   cudaStream_t stream, int32_t variant, int64_t splits, int32_t* used_variant, int64_t* used_splits,
                   char* err, size_t err_len) {
  int major = 0, minor = 0, multiprocessors = 0;
  cudaError_t status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (status == cudaSuccess)
    status = cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
  if (status != cudaSuccess) return fail(err, err_len, "cannot query the CUDA device", status);
  if (variant == RF_CUDA_AUTO) variant = best_variant(major);
  if ((variant == RF_CUDA_DMMA_16X8X8 && major < 9) || (variant == RF_CUDA_DMMA_8X8X4 && major < 8)) {
    std::snprintf(err, err_len, "variant %s needs a newer GPU than compute capability %d.%d", variant_name(variant),
                  major, minor);
    return 1;
  }
  const void* pointers[] = {z.data, gram, shift, column_sums};
  const char* names[] = {"z", "gram", "shift", "column_sums"};
  for (int n = 0; n < 4; ++n)
    if (pointers[n] != nullptr && !on_device(pointers[n], device)) {
      std::snprintf(err, err_len, "%s is not in the memory of CUDA device %d", names[n], device);
      return 1;
    }

  int per_multiprocessor = 0;
  status = dispatch(z.dtype, variant, Occupancy{&per_multiprocessor});
  if (status != cudaSuccess) return fail(err, err_len, "cannot configure the CUDA SYRK kernel", status);
  const int64_t tiles_per_side = (z.cols + kTile - 1) / kTile;
  const int64_t tiles = triangle_tile_count(tiles_per_side);
  if (splits <= 0)
    splits = choose_splits(z.rows, tiles, std::max(1, per_multiprocessor) * static_cast<int64_t>(multiprocessors));
  splits = std::min<int64_t>({splits, (z.rows + kDepth - 1) / kDepth, 65535});
  const int64_t rows_per_split = ((z.rows + splits - 1) / splits + kDepth - 1) / kDepth * kDepth;
  splits = (z.rows + rows_per_split - 1) / rows_per_split;
  if (tiles > 0x7fffffff) return fail(err, err_len, "D is too large for one launch");

  const int64_t bytes = element_bytes(z.dtype);
  const bool vectorised = z.col_stride == 1 && z.row_stride % 4 == 0 &&
                          reinterpret_cast<uintptr_t>(z.data) % static_cast<uintptr_t>(4 * bytes) == 0;
  Launch l;
  l.grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
  l.stream = stream;
  l.params = Params{z.data, z.rows, z.cols, z.row_stride, z.col_stride, shift, gram, column_sums,
                    rows_per_split, tiles_per_side, vectorised ? 1 : 0, splits > 1 ? 1 : 0};
  status = dispatch(z.dtype, variant, Launcher{&l});
  if (status != cudaSuccess) return fail(err, err_len, "the CUDA SYRK kernel failed to launch", status);
  if (used_variant) *used_variant = variant;
  if (used_splits) *used_splits = splits;
  return 0;
}

}  // namespace
}  // namespace rankme_fast

extern "C" {

int rf_cuda_syrk_update(const rf_matrix_view* z, const double* shift, double* gram, double* column_sums,
                        int32_t device, void* stream, int32_t variant, int64_t splits, int32_t* used_variant,
                        int64_t* used_splits, char* err, size_t err_len) {
  using namespace rankme_fast;
  if (!valid_view(z)) return fail(err, err_len, "invalid matrix view (null data, empty shape or unknown dtype)");
  if (!gram) return fail(err, err_len, "gram pointer is null");
  if (variant < RF_CUDA_AUTO || variant > RF_CUDA_SIMT) return fail(err, err_len, "unknown CUDA kernel variant");
  int previous = 0;
  cudaError_t status = cudaGetDevice(&previous);
  if (status == cudaSuccess && previous != device) status = cudaSetDevice(device);
  if (status != cudaSuccess) return fail(err, err_len, "CUDA is unavailable", status);
  const int result = syrk_on_device(rows_ascending(*z), shift, gram, column_sums, device,
                                    static_cast<cudaStream_t>(stream), variant, splits, used_variant, used_splits,
                                    err, err_len);
  if (previous != device) cudaSetDevice(previous);
  return result;
}

}  // extern "C"
