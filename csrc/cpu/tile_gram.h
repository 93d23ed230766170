// The Gram on matrix tiles (AMX-BF16, TDPBF16PS), fast mode: bfloat16 products exact in float32,
// float32 sums over a bounded number of rows, float64 across them.
//
// Written once against a `Tiles` interface (eight 16-row x 64-byte tile registers: configure,
// load, store, dot = C += A·B over bfloat16 pairs, release), and compiled twice:
//  * syrk_amx.cpp with the hardware instructions (only where the CPU has the units);
//  * syrk_tile_emulated.cpp with tile_emulator.h, the instruction's arithmetic in software,
//    so the kernel's packing, tiling and flushing are tested on every CPU.
//
// Per chunk of rows, the chunk is packed twice (cast and shift fused): transposed (one run of
// bfloat16 per column of z: the A tiles) and in pairs of rows (the B tiles' layout, as
// TDPBF16PS wants its second operand). Each 32 x 32 block of the lower triangle (block row I,
// block column J <= I) is four float32 C tiles, loaded, multiplied over the chunk's rows with two
// A and two B tiles, and stored back into a block-major float32 triangle; that triangle is added
// into the float64 state every kFlushRows rows of z (and at the end of the call).
//
// Two ways to turn a row into bfloat16 "entries" along the multiplied dimension:
//  * Direct (bfloat16 input, no shift): one entry per row, the bits as they are.
//  * Split (any dtype, or a shift): x = float32(z - shift), hi = bf16(x), lo = bf16(x - hi);
//    three entries per row, (hi, hi, lo) on the A side and (hi, lo, hi) on the B side, so one
//    product sums hi·hi + hi·lo + lo·hi: x·x but for lo·lo and x - hi - lo (<= 2^-16 |x|).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "convert.h"
#include "workspace.h"

namespace rankme_fast {
namespace tile_gram {
// Internal linkage: each file that includes this compiles its own copy with its own flags (the
// hardware one with the tile instructions), so the linker never swaps one for the other.
namespace {

constexpr int64_t kBlock = 32;       // columns of the Gram per block: 2 x 2 tiles of 16
constexpr int64_t kTileEntries = 32;  // bfloat16 entries along the multiplied dimension per tile
constexpr int64_t kTileFloats = 16 * 16;
alignas(64) constexpr uint16_t kZeros[kBlock] = {};  // the missing second row of a last odd pair

// bfloat16 of a float32, round to nearest even (NaN stays NaN).
inline uint16_t to_bfloat16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);  // a select: vectorises
}

struct Direct {
  static constexpr int64_t kEntries = 1;
  static constexpr int64_t kChunkRows = 512;
  static constexpr int64_t kFlushRows = 4096;  // float32 sums over 4096 products, as the other kernels
};
struct Split {
  static constexpr int64_t kEntries = 3;
  static constexpr int64_t kChunkRows = 256;
  static constexpr int64_t kFlushRows = 1024;  // 3072 products per float32 sum
};

// The kernel's buffers and steps for one call. The steps take index ranges so an OpenMP driver
// can share them out (run_parallel) and a single thread can run them in turn (run_serial).
template <typename Tag, typename Way>
class TileGram {
 public:
  TileGram(const rf_matrix_view& z, const double* shift)
      : z_(z),
        shift_(shift),
        blocks_((z.cols + kBlock - 1) / kBlock),
        padded_cols_(blocks_ * kBlock),
        entries_(Way::kChunkRows * Way::kEntries),
        transposed_(aligned_buffer<uint16_t>(padded_cols_ * entries_, true)),  // zero past the last column
        paired_(aligned_buffer<uint16_t>(padded_cols_ * entries_, true)),
        sums_(aligned_buffer<float>(blocks_ * (blocks_ + 1) / 2 * 4 * kTileFloats, true)) {}

  int64_t blocks() const { return blocks_; }

  // Rows [r0 + first, r0 + last) of z into both packed layouts (first a multiple of 32), in
  // blocks of 32 rows x 32 columns. Entries are formed in pairs (entries 2p and 2p + 1 of a
  // column as one 32-bit word, the B tiles' layout) in two small arrays that stay in L1: the B
  // side is then copied out row by row, and the A side transposed as 32-bit words, since A's
  // row m holds column m's entries in the same pairs.
  void pack(int64_t r0, int64_t first, int64_t last) {
    constexpr int64_t E = Way::kEntries;
    alignas(64) uint32_t a[16 * E][kBlock], b[16 * E][kBlock];
    uint32_t* const transposed = reinterpret_cast<uint32_t*>(transposed_.get());
    uint32_t* const paired = reinterpret_cast<uint32_t*>(paired_.get());
    for (int64_t rb = first; rb < last; rb += 32) {
      const int64_t rows = std::min<int64_t>(32, last - rb), pairs = (rows * E + 1) / 2, p0 = rb * E / 2;
      for (int64_t cb = 0; cb < z_.cols; cb += kBlock) {
        const int64_t width = std::min<int64_t>(kBlock, z_.cols - cb);
        for (int64_t r = 0; r < rows; r += 2) {
          const bool second = r + 1 < rows;
          if constexpr (E == 1) {
            const auto* even = row_pointer<Tag>(z_, r0 + rb + r) + cb * z_.col_stride;
            const auto* odd = second ? even + z_.row_stride : kZeros;
            const int64_t odd_stride = second ? z_.col_stride : 1;
            for (int64_t c = 0; c < width; ++c)
              a[r / 2][c] = b[r / 2][c] = uint32_t(even[c * z_.col_stride]) | uint32_t(odd[c * odd_stride]) << 16;
          } else {
            // rows r and r + 1 give entries (hi, hi, lo) + (hi', hi', lo') on the A side and
            // (hi, lo, hi) + (hi', lo', hi') on the B side: three pairs
            alignas(64) uint16_t hi[2][kBlock], lo[2][kBlock];
            split_row(r0 + rb + r, cb, width, hi[0], lo[0]);
            if (second) {
              split_row(r0 + rb + r + 1, cb, width, hi[1], lo[1]);
            } else {
              std::fill(hi[1], hi[1] + width, uint16_t{0});
              std::fill(lo[1], lo[1] + width, uint16_t{0});
            }
            const int64_t p = 3 * r / 2;
            for (int64_t c = 0; c < width; ++c) {
              a[p][c] = uint32_t(hi[0][c]) | uint32_t(hi[0][c]) << 16;
              a[p + 1][c] = uint32_t(lo[0][c]) | uint32_t(hi[1][c]) << 16;
              a[p + 2][c] = uint32_t(hi[1][c]) | uint32_t(lo[1][c]) << 16;
              b[p][c] = uint32_t(hi[0][c]) | uint32_t(lo[0][c]) << 16;
              b[p + 1][c] = uint32_t(hi[0][c]) | uint32_t(hi[1][c]) << 16;
              b[p + 2][c] = uint32_t(lo[1][c]) | uint32_t(hi[1][c]) << 16;
            }
          }
        }
        for (int64_t p = 0; p < pairs; ++p) std::memcpy(paired + (p0 + p) * padded_cols_ + cb, b[p], width * 4);
        for (int64_t c = 0; c < width; ++c) {
          uint32_t* column = transposed + (cb + c) * (entries_ / 2) + p0;
          for (int64_t p = 0; p < pairs; ++p) column[p] = a[p][c];
        }
      }
    }
  }

  // Zero the entries past a short last chunk's `count` rows: the tiles multiply zeros there.
  void clear_tail(int64_t count) {
    const int64_t e0 = count * Way::kEntries;
    for (int64_t c = 0; c < z_.cols; ++c)
      std::fill(transposed_.get() + c * entries_ + e0, transposed_.get() + (c + 1) * entries_, uint16_t{0});
    for (int64_t e = e0; e < entries_; ++e)
      for (int64_t c = 0; c < z_.cols; ++c) paired_[e / 2 * padded_cols_ * 2 + 2 * c + (e & 1)] = 0;
  }

  // The chunk's products into every block of block row I (blocks (I, 0) .. (I, I)).
  template <typename Tiles>
  void multiply_block_row(Tiles& tiles, int64_t I, int64_t count) {
    const int64_t steps = (count * Way::kEntries + kTileEntries - 1) / kTileEntries;
    const int64_t a_stride = entries_ * 2, b_stride = padded_cols_ * 4;  // bytes
    const uint16_t* a0 = transposed_.get() + I * kBlock * entries_;
    const uint16_t* a1 = a0 + 16 * entries_;
    for (int64_t J = 0; J <= I; ++J) {
      float* c = block(I, J);
      tiles.template load<0>(c, 64);
      tiles.template load<1>(c + kTileFloats, 64);
      tiles.template load<2>(c + 2 * kTileFloats, 64);
      tiles.template load<3>(c + 3 * kTileFloats, 64);
      const uint16_t* b0 = paired_.get() + J * kBlock * 2;
      const uint16_t* b1 = b0 + 32;
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t b_offset = s * 16 * padded_cols_ * 2;
        tiles.template load<4>(a0 + s * kTileEntries, a_stride);
        tiles.template load<5>(a1 + s * kTileEntries, a_stride);
        tiles.template load<6>(b0 + b_offset, b_stride);
        tiles.template load<7>(b1 + b_offset, b_stride);
        tiles.template dot<0, 4, 6>();
        tiles.template dot<1, 4, 7>();
        tiles.template dot<2, 5, 6>();
        tiles.template dot<3, 5, 7>();
      }
      tiles.template store<0>(c, 64);
      tiles.template store<1>(c + kTileFloats, 64);
      tiles.template store<2>(c + 2 * kTileFloats, 64);
      tiles.template store<3>(c + 3 * kTileFloats, 64);
    }
  }

  // gram[lower] += the float32 sums of block row I, which are then zeroed.
  void flush_block_row(int64_t I, double* gram) {
    const int64_t cols = z_.cols;
    for (int64_t J = 0; J <= I; ++J) {
      float* c = block(I, J);
      for (int q = 0; q < 4; ++q) {
        const int64_t row0 = I * kBlock + 16 * (q / 2), col0 = J * kBlock + 16 * (q % 2);
        const float* tile = c + q * kTileFloats;
        for (int64_t r = 0; r < 16 && row0 + r < cols; ++r) {
          const int64_t row = row0 + r, n = std::min<int64_t>({16, cols - col0, row + 1 - col0});
          for (int64_t k = 0; k < n; ++k) gram[row * cols + col0 + k] += static_cast<double>(tile[r * 16 + k]);
        }
      }
      std::memset(c, 0, 4 * kTileFloats * sizeof(float));
    }
  }

 private:
  // Row r's columns [c0, c0 + width) as float32 x = z - shift (one rounding), split into
  // hi = bf16(x) and lo = bf16(x - hi).
  void split_row(int64_t r, int64_t c0, int64_t width, uint16_t* hi, uint16_t* lo) const {
    const auto* row = row_pointer<Tag>(z_, r) + c0 * z_.col_stride;
    alignas(64) float x[kBlock];
    if (shift_) {
      for (int64_t c = 0; c < width; ++c)
        x[c] = static_cast<float>(Load<Tag>::get(row[c * z_.col_stride]) - shift_[c0 + c]);
    } else if (z_.col_stride == 1) {
      for (int64_t c = 0; c < width; ++c) x[c] = static_cast<float>(Load<Tag>::get(row[c]));
    } else {
      for (int64_t c = 0; c < width; ++c) x[c] = static_cast<float>(Load<Tag>::get(row[c * z_.col_stride]));
    }
    for (int64_t c = 0; c < width; ++c) {
      hi[c] = to_bfloat16(x[c]);
      lo[c] = to_bfloat16(x[c] - bfloat16_to_float(hi[c]));
    }
  }

  float* block(int64_t I, int64_t J) { return sums_.get() + (I * (I + 1) / 2 + J) * 4 * kTileFloats; }

  rf_matrix_view z_;
  const double* shift_;
  int64_t blocks_, padded_cols_, entries_;
  std::unique_ptr<uint16_t[], FreeDeleter> transposed_, paired_;
  std::unique_ptr<float[], FreeDeleter> sums_;
};

template <typename Way>
bool flush_due(int64_t r0, int64_t done, int64_t rows) {
  return done == rows || done / Way::kFlushRows != r0 / Way::kFlushRows;
}

// One thread, no OpenMP: what the hardware self-test runs in a forked child.
template <typename Tiles, typename Tag, typename Way>
void run_serial(const rf_matrix_view& z, const double* shift, double* gram) {
  TileGram<Tag, Way> kernel(z, shift);
  Tiles tiles;
  tiles.configure();
  for (int64_t r0 = 0; r0 < z.rows; r0 += Way::kChunkRows) {
    const int64_t count = std::min(Way::kChunkRows, z.rows - r0);
    kernel.pack(r0, 0, count);
    if (count < Way::kChunkRows) kernel.clear_tail(count);
    for (int64_t I = 0; I < kernel.blocks(); ++I) kernel.multiply_block_row(tiles, I, count);
    if (flush_due<Way>(r0, r0 + count, z.rows))
      for (int64_t I = 0; I < kernel.blocks(); ++I) kernel.flush_block_row(I, gram);
  }
  tiles.release();
}

// The same over the OpenMP team: rows packed in parallel, block rows shared out longest first.
template <typename Tiles, typename Tag, typename Way>
void run_parallel(const rf_matrix_view& z, const double* shift, double* gram, int threads) {
  TileGram<Tag, Way> kernel(z, shift);  // every allocation before the parallel region
  const int64_t blocks = kernel.blocks();
#pragma omp parallel num_threads(threads)
  {
    Tiles tiles;
    tiles.configure();  // the tile configuration is per thread
    for (int64_t r0 = 0; r0 < z.rows; r0 += Way::kChunkRows) {
      const int64_t count = std::min(Way::kChunkRows, z.rows - r0);
#pragma omp for schedule(static)
      for (int64_t r = 0; r < count; r += 32) kernel.pack(r0, r, std::min(count, r + 32));
#pragma omp single
      if (count < Way::kChunkRows) kernel.clear_tail(count);
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < blocks; ++t) kernel.multiply_block_row(tiles, blocks - 1 - t, count);
      if (flush_due<Way>(r0, r0 + count, z.rows)) {
#pragma omp for schedule(dynamic, 1)
        for (int64_t I = 0; I < blocks; ++I) kernel.flush_block_row(I, gram);
      }
    }
    tiles.release();
  }
}

// Fast-mode update of the lower triangle through tiles: bfloat16 rows without a shift directly,
// everything else through the split. At most `max_team` threads and one per block row (1: no
// OpenMP at all, as in the forked self-test).
template <typename Tiles>
void update(const rf_matrix_view& z, const double* shift, double* gram, int max_team) {
  const int threads = static_cast<int>(std::min<int64_t>(max_team, (z.cols + kBlock - 1) / kBlock));
  if (z.dtype == RF_BFLOAT16 && shift == nullptr) {
    threads > 1 ? run_parallel<Tiles, BFloat16, Direct>(z, nullptr, gram, threads)
                : run_serial<Tiles, BFloat16, Direct>(z, nullptr, gram);
    return;
  }
  dispatch_dtype(z.dtype, [&](auto tag) {
    using Tag = decltype(tag);
    threads > 1 ? run_parallel<Tiles, Tag, Split>(z, shift, gram, threads) : run_serial<Tiles, Tag, Split>(z, shift, gram);
  });
}

}  // namespace
}  // namespace tile_gram
}  // namespace rankme_fast
