// The project's own SYRK, BLIS style, on blocks of rows of z:
//  * the block is packed once (cast and shift fused) into column panels NR columns wide;
//  * each thread takes a group of Gram rows and copies their columns of the block into
//    contiguous micro-panels MR wide, which stay in L1 while they are broadcast;
//  * a register-blocked micro-kernel multiplies one micro-panel (MR rows of the Gram) by one
//    column panel (NR columns, SIMD vectors streamed from L2) over the block's rows, and adds
//    its MR x NR sums straight into a tile-major copy of the triangle (one contiguous stream
//    per tile), which goes into the float64 state once per call (exact) or every 4096 rows (fast:
//    float32 sums within those rows, float64 across them);
//  * only tiles that touch the lower triangle are computed.
//
// This file is compiled once per instruction set (CMakeLists.txt: baseline x86-64, AVX2+FMA,
// AVX-512, AVX-512-BF16), each copy with its own flags and in its own namespace RF_ISA_NS, and
// csrc/cpu/dispatch.cpp picks one at run time. With AVX-512-BF16, bfloat16 input in fast mode is
// packed as pairs of rows and multiplied by VDPBF16PS (two exact bf16 products added into each
// float32 lane: twice the float32 FMA rate) into the same float32 sums. Shapes were chosen by
// measurement on AVX-512 (bench/README.md); the vector-extension code compiles to AVX2 or SSE2
// with a smaller register tile.
#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include "kernels.h"
#include "unit_rate.h"
#include "workspace.h"

#ifndef RF_ISA_NS
#error "compile with -DRF_ISA_NS=<namespace of this instruction set> (see CMakeLists.txt)"
#endif

namespace rankme_fast {
namespace RF_ISA_NS {
namespace {

// Register tile from the build target: MR x (NR / lanes) accumulators, the NR / lanes panel
// vectors and one broadcast fit the register file (32 zmm with AVX-512, 16 otherwise).
#if defined(__AVX512BF16__)
constexpr const char* kSimdName = "avx512bf16";
constexpr int kVectorBytes = 64;
constexpr int kMicroRows = 9;
constexpr int kPanelVectors = 3;
#elif defined(__AVX512F__)
constexpr const char* kSimdName = "avx512";
constexpr int kVectorBytes = 64;
constexpr int kMicroRows = 9;
constexpr int kPanelVectors = 3;
#elif defined(__AVX2__)
constexpr const char* kSimdName = "avx2";
constexpr int kVectorBytes = 32;
constexpr int kMicroRows = 6;
constexpr int kPanelVectors = 2;
#else
constexpr const char* kSimdName = "sse2";
constexpr int kVectorBytes = 16;
constexpr int kMicroRows = 6;
constexpr int kPanelVectors = 2;
#endif
// A packed pair of bfloat16 values: rows 2k (low half) and 2k + 1 (high half) of one column,
// the operand layout of VDPBF16PS, which adds both products of a lane's pair into its float32.
struct Bf16Pair {
  uint32_t bits;
};

template <typename Packed>
constexpr int64_t rows_per_element() { return std::is_same_v<Packed, Bf16Pair> ? 2 : 1; }
// NR: columns per panel (lanes of a vector of Packed times the panel vectors).
template <typename Packed>
constexpr int64_t panel_width() { return static_cast<int64_t>(kVectorBytes / sizeof(Packed)) * kPanelVectors; }
// Input rows per packed block: the micro-panel (MR x block values) stays in L1 while it is broadcast.
template <typename Packed>
constexpr int64_t row_block() { return sizeof(Packed) == sizeof(double) ? 256 : 512 * rows_per_element<Packed>(); }
// precision=fast sums float32 products over at most this many rows before adding in float64.
constexpr int64_t kFastRowsPerFlush = 4096;
constexpr int64_t kPanelsPerPass = 4;  // column panels reused by a row group (stay in L2)
constexpr int64_t kRowGroup = 8;       // micro-panels per thread work item

// Rows [r0, r0+count) into panels: panel p holds columns [p*NR, p*NR + NR) as
// ceil(count / rows_per_element) x NR values, zero past the last column (and, for bfloat16
// pairs, past the last row). Runs as an OpenMP for (ends with a barrier).
template <typename Tag, typename Packed>
void pack_panels(const rf_matrix_view& z, int64_t r0, int64_t count, const double* shift, int64_t panels,
                 Packed* out) {
  constexpr int64_t NR = panel_width<Packed>();
  const int64_t cols = z.cols, cs = z.col_stride;
  if constexpr (std::is_same_v<Packed, Bf16Pair>) {  // bfloat16 input, no shift: the bits as they are
    const int64_t pairs = (count + 1) / 2;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < pairs; ++k) {
      const uint16_t* even = row_pointer<Tag>(z, r0 + 2 * k);
      const uint16_t* odd = 2 * k + 1 < count ? row_pointer<Tag>(z, r0 + 2 * k + 1) : nullptr;
      for (int64_t p = 0; p < panels; ++p) {
        Packed* dst = out + (p * pairs + k) * NR;
        const int64_t c0 = p * NR, c1 = std::min(cols, c0 + NR);
        for (int64_t c = c0; c < c1; ++c)
          dst[c - c0].bits = uint32_t(even[c * cs]) | (odd ? uint32_t(odd[c * cs]) << 16 : 0u);
        for (int64_t c = c1; c < c0 + NR; ++c) dst[c - c0].bits = 0;
      }
    }
  } else {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < count; ++r) {
      const auto* src = row_pointer<Tag>(z, r0 + r);
      for (int64_t p = 0; p < panels; ++p) {
        Packed* dst = out + (p * count + r) * NR;
        const int64_t c0 = p * NR, c1 = std::min(cols, c0 + NR);
        if (shift) {
          for (int64_t c = c0; c < c1; ++c)
            dst[c - c0] = static_cast<Packed>(Load<Tag>::get(src[c * cs]) - shift[c]);
        } else if (cs == 1) {
          for (int64_t c = c0; c < c1; ++c) dst[c - c0] = static_cast<Packed>(Load<Tag>::get(src[c]));
        } else {
          for (int64_t c = c0; c < c1; ++c) dst[c - c0] = static_cast<Packed>(Load<Tag>::get(src[c * cs]));
        }
        for (int64_t c = c1; c < c0 + NR; ++c) dst[c - c0] = Packed(0);
      }
    }
  }
}

// Columns [c0, c0 + MR) of the packed block as a contiguous count x MR micro-panel (zero past
// the last column). Row k's MR values are contiguous in one or two column panels.
template <int MR, typename Packed>
void copy_micro_panel(const Packed* packed, int64_t count, int64_t c0, int64_t cols, Packed* out) {
  constexpr int64_t NR = panel_width<Packed>();
  const int64_t valid = std::min<int64_t>(MR, cols - c0);
  const int64_t first = std::min(valid, NR - c0 % NR);  // columns in c0's panel; the rest in the next
  const Packed* head = packed + (c0 / NR) * count * NR + c0 % NR;
  const Packed* tail = packed + (c0 / NR + 1) * count * NR;
  for (int64_t k = 0; k < count; ++k) {
    Packed* row = out + k * MR;
    for (int64_t r = 0; r < first; ++r) row[r] = head[k * NR + r];
    for (int64_t r = first; r < valid; ++r) row[r] = tail[k * NR + r - first];
    for (int64_t r = valid; r < MR; ++r) row[r] = Packed{};
  }
}

// out[r][c] += sum over k < count of a[k*MR + r] * b[k*NR + c]: MR x NR accumulators stay in
// registers for the whole loop; a values are broadcast, b rows loaded as vectors.
template <int MR, typename Acc>
void micro_kernel(const Acc* __restrict a, const Acc* __restrict b, int64_t count, Acc* __restrict out) {
  typedef Acc V __attribute__((vector_size(kVectorBytes)));
  constexpr int L = kVectorBytes / sizeof(Acc), NR = L * kPanelVectors;
  V acc[MR][kPanelVectors] = {};
#pragma GCC unroll 2
  for (int64_t k = 0; k < count; ++k) {
    V bv[kPanelVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVectors; ++v) std::memcpy(&bv[v], b + k * NR + v * L, sizeof(V));
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const Acc ar = a[k * MR + r];
#pragma GCC unroll 4
      for (int v = 0; v < kPanelVectors; ++v) acc[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kPanelVectors; ++v) {
      V sum;
      std::memcpy(&sum, out + r * NR + v * L, sizeof(V));
      sum += acc[r][v];
      std::memcpy(out + r * NR + v * L, &sum, sizeof(V));
    }
}

#if defined(__AVX512BF16__)
// The same over bfloat16 row pairs: each VDPBF16PS adds two exact products per float32 lane.
template <int MR>
void micro_kernel(const Bf16Pair* __restrict a, const Bf16Pair* __restrict b, int64_t count, float* __restrict out) {
  constexpr int L = 16, NR = L * kPanelVectors;
  __m512 acc[MR][kPanelVectors];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kPanelVectors; ++v) acc[r][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < count; ++k) {
    __m512bh bv[kPanelVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVectors; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + k * NR + v * L);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512bh ar = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[k * MR + r].bits));
#pragma GCC unroll 4
      for (int v = 0; v < kPanelVectors; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], ar, bv[v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kPanelVectors; ++v) {
      float* dst = out + r * NR + v * L;
      _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), acc[r][v]));
    }
}
#endif

// Column panel (NR wide) of the last tile in row micro-panel m that reaches the lower triangle.
template <int MR>
int64_t last_panel(int64_t m, int64_t cols, int64_t nr) {
  return (std::min(cols, (m + 1) * MR) - 1) / nr;
}

// The lower triangle as MR x NR micro-tiles (row micro-panel m, column panel p <= last(m)),
// each tile contiguous. Calls with several row blocks accumulate here, so every tile update is
// one short sequential stream, and the state is touched once per call.
template <int MR, typename T>
class TileTriangle {
 public:
  TileTriangle(int64_t cols, int64_t nr) : cols_(cols), nr_(nr) {
    const int64_t micro_panels = (cols + MR - 1) / MR;
    first_tile_.resize(static_cast<size_t>(micro_panels + 1), 0);
    for (int64_t m = 0; m < micro_panels; ++m) first_tile_[m + 1] = first_tile_[m] + last_panel<MR>(m, cols, nr) + 1;
    tiles_ = aligned_buffer<T>(first_tile_.back() * tile_size());
  }

  int64_t tile_size() const { return MR * nr_; }
  T* tile(int64_t m, int64_t p) { return tiles_.get() + (first_tile_[m] + p) * tile_size(); }

  void zero_micro_panel(int64_t m) { std::fill(tile(m, 0), tile(m + 1, 0), T(0)); }

  // gram[lower] += the tiles of micro-panel m, which are then zeroed.
  void flush_micro_panel(int64_t m, double* gram) {
    for (int64_t p = 0; p <= last_panel<MR>(m, cols_, nr_); ++p) add_lower(tile(m, p), nr_, m * MR, p * nr_, cols_, gram);
    zero_micro_panel(m);
  }

  // Adds an MR x NR tile (row-major, leading dimension NR) at gram[row0][col0], lower triangle only.
  template <typename U>
  static void add_lower(const U* tile, int64_t nr, int64_t row0, int64_t col0, int64_t cols, double* gram) {
    for (int64_t r = 0; r < MR && row0 + r < cols; ++r) {
      const int64_t row = row0 + r;
      const int64_t n = std::min({nr, cols - col0, row + 1 - col0});
      double* dst = gram + row * cols + col0;
      const U* src = tile + r * nr;
      for (int64_t c = 0; c < n; ++c) dst[c] += static_cast<double>(src[c]);
    }
  }

 private:
  int64_t cols_, nr_;
  std::vector<int64_t> first_tile_;
  std::unique_ptr<T[], FreeDeleter> tiles_;
};

// Packed: the element of the packed buffers (Acc itself, or a bfloat16 row pair with float sums).
template <typename Tag, typename Packed, typename Acc, int MR>
void syrk_tiled(const rf_matrix_view& z, const double* shift, double* gram) {
  constexpr int64_t NR = panel_width<Packed>();
  constexpr int64_t per = rows_per_element<Packed>();
  const int64_t cols = z.cols;
  const int64_t panels = (cols + NR - 1) / NR;
  const int64_t micro_panels = (cols + MR - 1) / MR;
  const int64_t groups = (micro_panels + kRowGroup - 1) / kRowGroup;
  const int64_t block = std::min<int64_t>(row_block<Packed>(), z.rows);
  const int64_t block_elements = (block + per - 1) / per;
  const bool staged = z.rows > block;  // several blocks: accumulate tile-major, add once per flush
  const int64_t flush_rows = sizeof(Acc) == sizeof(double) ? z.rows : kFastRowsPerFlush;
  auto packed = aligned_buffer<Packed>(panels * block_elements * NR);
  std::unique_ptr<TileTriangle<MR, Acc>> triangle(staged ? new TileTriangle<MR, Acc>(cols, NR) : nullptr);
  // Every allocation happens here: an exception must not leave the parallel region.
  // A thread per group of Gram rows at most: below that the extra threads only wait at the
  // barriers, which made D = 64 slower on 2 threads than on 1.
  const int threads = static_cast<int>(std::min<int64_t>(max_threads(), groups));
  const int64_t group_size = kRowGroup * MR * block_elements;
  auto group_buffers = aligned_buffer<Packed>(threads * group_size);
#pragma omp parallel num_threads(threads)
  {
    alignas(64) Acc tile[MR * NR];
    Packed* const group_panels = group_buffers.get() + thread_id() * group_size;
    if (staged) {
#pragma omp for schedule(static)
      for (int64_t m = 0; m < micro_panels; ++m) triangle->zero_micro_panel(m);
    }
    for (int64_t r0 = 0; r0 < z.rows; r0 += block) {
      const int64_t count = std::min(block, z.rows - r0);
      const int64_t elements = (count + per - 1) / per;  // packed rows of this block
      pack_panels<Tag, Packed>(z, r0, count, shift, panels, packed.get());
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < groups; ++t) {
        const int64_t g = groups - 1 - t;  // the longest rows first
        const int64_t m0 = g * kRowGroup, m1 = std::min(micro_panels, m0 + kRowGroup);
        for (int64_t m = m0; m < m1; ++m)
          copy_micro_panel<MR>(packed.get(), elements, m * MR, cols,
                           group_panels + (m - m0) * MR * elements);
        for (int64_t p0 = 0; p0 <= last_panel<MR>(m1 - 1, cols, NR); p0 += kPanelsPerPass) {
          for (int64_t m = m0; m < m1; ++m) {
            const int64_t p1 = std::min(p0 + kPanelsPerPass, last_panel<MR>(m, cols, NR) + 1);
            const Packed* micro_panel = group_panels + (m - m0) * MR * elements;
            for (int64_t p = p0; p < p1; ++p) {
              if (staged) {
                micro_kernel<MR>(micro_panel, packed.get() + p * elements * NR, elements, triangle->tile(m, p));
              } else {
                std::fill(tile, tile + MR * NR, Acc(0));
                micro_kernel<MR>(micro_panel, packed.get() + p * elements * NR, elements, tile);
                TileTriangle<MR, Acc>::add_lower(tile, NR, m * MR, p * NR, cols, gram);
              }
            }
          }
        }
      }  // barrier: the block is repacked only after every thread is done with it
      const int64_t done = r0 + count;
      if (staged && (done == z.rows || done / flush_rows != r0 / flush_rows)) {
#pragma omp for schedule(dynamic, 4)
        for (int64_t m = 0; m < micro_panels; ++m) triangle->flush_micro_panel(m, gram);
      }
    }
  }
}

// Products one row of z costs with MR-row tiles: whole MR x NR tiles down to the diagonal.
template <int MR>
int64_t tile_products(int64_t cols, int64_t nr) {
  int64_t tiles = 0;
  for (int64_t m = 0; m * MR < cols; ++m) tiles += last_panel<MR>(m, cols, nr) + 1;
  return tiles * MR * nr;
}

// The widest register tile (kMicroRows rows) loads least per FMA and was chosen on large Grams.
// A narrow Gram wastes much of it past the diagonal: at D = 64 the 9 x 24 tiles cost 3672
// products per row of z for the 2080 needed, 8 x 24 tiles (8 divides the panel width) 2880,
// and ran 1.3x faster. 8-row tiles are taken where they save at least 5 % of the products
// (D up to a few hundred); the sums, and so the result, are the same bits either way.
template <typename Tag, typename Packed, typename Acc>
void syrk_tiled_shaped(const rf_matrix_view& z, const double* shift, double* gram) {
  constexpr int64_t NR = panel_width<Packed>();
  if constexpr (kMicroRows > 8 && NR % 8 == 0) {
    if (20 * tile_products<8>(z.cols, NR) <= 19 * tile_products<kMicroRows>(z.cols, NR)) {
      syrk_tiled<Tag, Packed, Acc, 8>(z, shift, gram);
      return;
    }
  }
  syrk_tiled<Tag, Packed, Acc, kMicroRows>(z, shift, gram);
}

}  // namespace

const char* tiled_simd() { return kSimdName; }

// The unit's rate on independent multiply-add chains, with every thread of the team busy:
// kind 0 float64 FMA, 1 float32 FMA, 2 bfloat16 dot products (VDPBF16PS, counted as 2 flops
// per product). GFLOP/s over about `seconds`; 0 for a kind this build has no instruction for.
double peak_gflops(int32_t kind, double seconds) {
  constexpr int kChains = 12;  // independent accumulators: more than latency x issue width
  auto run = [&](auto step, double flops_per_step_per_thread) {
    return team_gflops(step, flops_per_step_per_thread, seconds, int64_t(1) << 14);
  };
  auto fma_chains = [&](auto zero) {
    using T = decltype(zero);
    typedef T V __attribute__((vector_size(kVectorBytes)));
    constexpr int L = kVectorBytes / sizeof(T);
    return run(
        [](int64_t steps) {
          V acc[kChains], m, a;
          for (int i = 0; i < L; ++i) m[i] = T(0.999999), a[i] = T(1e-7);
          for (int c = 0; c < kChains; ++c) acc[c] = a * T(c);
          for (int64_t s = 0; s < steps; ++s) {
            __asm__ volatile("" : "+x"(m));  // the compiler must not fold the chain
#pragma GCC unroll 16
            for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * m + a;
          }
          for (int c = 1; c < kChains; ++c) acc[0] += acc[c];
          __asm__ volatile("" : : "x"(acc[0]));
        },
        2.0 * L * kChains);
  };
  if (kind == 0) return fma_chains(double{});
  if (kind == 1) return fma_chains(float{});
#if defined(__AVX512BF16__)
  if (kind == 2)
    return run(
        [](int64_t steps) {
          __m512 acc[kChains];
          for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
          __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = x;  // pairs of 1.0
          for (int64_t s = 0; s < steps; ++s) {
            __asm__ volatile("" : "+v"(x));
#pragma GCC unroll 16
            for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], x, y);
          }
          for (int c = 1; c < kChains; ++c) acc[0] = _mm512_add_ps(acc[0], acc[c]);
          __asm__ volatile("" : : "v"(acc[0]));
        },
        4.0 * 16 * kChains);
#endif
  return 0.0;
}

void syrk_tiled_update(const rf_matrix_view& z, const double* shift, double* gram, int32_t precision) {
#if defined(__AVX512BF16__)
  // bfloat16 rows straight into VDPBF16PS: its products are exact in float32 and its sums
  // float32, as in the float32 kernel. With a shift, (z - shift) is no bfloat16 value: that goes
  // through the float32 kernel, so centring costs no extra rounding.
  if (precision == RF_FAST && z.dtype == RF_BFLOAT16 && shift == nullptr) {
    syrk_tiled<BFloat16, Bf16Pair, float, kMicroRows>(z, nullptr, gram);
    return;
  }
#endif
  dispatch_dtype(z.dtype, [&](auto tag) {
    using Tag = decltype(tag);
    if (precision == RF_FAST)
      syrk_tiled_shaped<Tag, float, float>(z, shift, gram);
    else
      syrk_tiled_shaped<Tag, double, double>(z, shift, gram);
  });
}

}  // namespace RF_ISA_NS
}  // namespace rankme_fast
