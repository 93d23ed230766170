// AMX-BF16 tiles in software, following the instruction set reference: eight registers of 16
// rows x 64 bytes, TILELOADD/TILESTORED with a byte stride, and TDPBF16PS:
//   for each row m of C and column n: for each pair k of A's row m,
//     C[m][n] += fp32(A[m][2k]) · fp32(B[k][2n]);  C[m][n] += fp32(A[m][2k+1]) · fp32(B[k][2n+1])
// each step one float32 fused multiply-add rounded to nearest even, bfloat16 subnormal inputs
// read as zero (DAZ) and float32 subnormal results written as zero (FTZ). Slow, portable, and
// what the tile kernel is tested against on CPUs without the units.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "convert.h"

namespace rankme_fast {
namespace tile_gram {
namespace {

class EmulatedTiles {
 public:
  void configure() { std::memset(tiles_, 0, sizeof tiles_); }
  void release() {}

  template <int T>
  void load(const void* base, int64_t stride_bytes) {
    for (int r = 0; r < 16; ++r) std::memcpy(tiles_[T][r], static_cast<const char*>(base) + r * stride_bytes, 64);
  }
  template <int T>
  void store(void* base, int64_t stride_bytes) const {
    for (int r = 0; r < 16; ++r) std::memcpy(static_cast<char*>(base) + r * stride_bytes, tiles_[T][r], 64);
  }
  template <int C, int A, int B>
  void dot() {
    for (int m = 0; m < 16; ++m) {
      float row[16];
      std::memcpy(row, tiles_[C][m], 64);
      for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 16; ++n)
          for (int half = 0; half < 2; ++half)
            row[n] = flush_subnormal(std::fmaf(bf16(A, m, 2 * k + half), bf16(B, k, 2 * n + half), row[n]));
      std::memcpy(tiles_[C][m], row, 64);
    }
  }

 private:
  float bf16(int tile, int row, int index) const {
    uint16_t bits;
    std::memcpy(&bits, tiles_[tile][row] + 2 * index, 2);
    return (bits & 0x7f80u) == 0 ? 0.0f : bfloat16_to_float(bits);  // DAZ (a signed zero reads as zero too)
  }
  static float flush_subnormal(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; }

  unsigned char tiles_[8][16][64];
};

}  // namespace
}  // namespace tile_gram
}  // namespace rankme_fast
