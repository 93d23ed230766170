// The "amx" variant: fast mode on the AMX-BF16 tile units (tile_gram.h), everything else as the
// avx512bf16 variant. With RANKME_FAST_TILES=emulated (dispatch.cpp) the tile instructions run in
// software (tile_emulator.h) instead, so the variant's whole path is testable on any CPU with
// AVX-512 BF16. Compiled with the tile instructions enabled (CMakeLists.txt); dispatch.cpp
// lets it run only where cpuid, XCR0 and Linux allow tiles and a self-test in a forked child
// came back right, and never makes it the default: the fast-mode dispatch routes to it only
// where it measures faster.
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "kernels.h"
#include "tile_emulator.h"
#include "tile_gram.h"
#include "unit_rate.h"

namespace rankme_fast {
namespace isa_amx {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// The intrinsics paste the tile number into the instruction's text, so each register used is
// spelled out; the empty asm with a memory clobber keeps the compiler's stores to the packed
// buffers before the tile loads that read them.
class HardwareTiles {
 public:
  void configure() {
    TileConfig config;
    for (int t = 0; t < 8; ++t) config.colsb[t] = 64, config.rows[t] = 16;
    // The intrinsic's asm names only the first 8 bytes as read: keep the stores to the rest.
    __asm__ volatile("" : : "m"(config) : "memory");
    _tile_loadconfig(&config);
  }
  void release() { _tile_release(); }

  template <int T>
  void load(const void* base, int64_t stride) {
    __asm__ volatile("" ::: "memory");
    if constexpr (T == 0) _tile_loadd(0, base, stride);
    if constexpr (T == 1) _tile_loadd(1, base, stride);
    if constexpr (T == 2) _tile_loadd(2, base, stride);
    if constexpr (T == 3) _tile_loadd(3, base, stride);
    if constexpr (T == 4) _tile_loadd(4, base, stride);
    if constexpr (T == 5) _tile_loadd(5, base, stride);
    if constexpr (T == 6) _tile_loadd(6, base, stride);
    if constexpr (T == 7) _tile_loadd(7, base, stride);
  }
  template <int T>
  void store(void* base, int64_t stride) {
    if constexpr (T == 0) _tile_stored(0, base, stride);
    if constexpr (T == 1) _tile_stored(1, base, stride);
    if constexpr (T == 2) _tile_stored(2, base, stride);
    if constexpr (T == 3) _tile_stored(3, base, stride);
  }
  template <int C, int A, int B>
  void dot() {
    static_assert(A == 4 + C / 2 && B == 6 + C % 2, "C tiles 0-3 take A tiles 4-5 and B tiles 6-7");
    if constexpr (C == 0) _tile_dpbf16ps(0, 4, 6);
    if constexpr (C == 1) _tile_dpbf16ps(1, 4, 7);
    if constexpr (C == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (C == 3) _tile_dpbf16ps(3, 5, 7);
  }
};

bool emulated = false;  // set once, before the variant first runs

}  // namespace

void use_emulated_tiles(bool on) { emulated = on; }

const char* tiled_simd() { return "amx"; }

void syrk_tiled_update(const rf_matrix_view& z, const double* shift, double* gram, int32_t precision) {
  if (precision != RF_FAST) {
    isa_avx512bf16::syrk_tiled_update(z, shift, gram, precision);
    return;
  }
  if (emulated)
    tile_gram::update<tile_gram::EmulatedTiles>(z, shift, gram, max_threads());
  else
    tile_gram::update<HardwareTiles>(z, shift, gram, max_threads());
}

// kind 3: TDPBF16PS on four independent C tiles (one thread per core, as the other kinds);
// 16 x 16 x 32 products of 2 flops each per instruction. Kinds 0-2 as the avx512bf16 variant.
double peak_gflops(int32_t kind, double seconds) {
  if (kind != 3) return isa_avx512bf16::peak_gflops(kind, seconds);
  if (emulated) return 0.0;  // no tile unit to measure
  std::vector<uint16_t> ones(16 * 32, 0x3f80);  // bfloat16 1.0
  auto step = [&](int64_t steps) {
    HardwareTiles tiles;
    tiles.configure();
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    tiles.load<4>(ones.data(), 64);
    tiles.load<5>(ones.data(), 64);
    tiles.load<6>(ones.data(), 64);
    tiles.load<7>(ones.data(), 64);
    for (int64_t s = 0; s < steps; ++s) {
      tiles.dot<0, 4, 6>();
      tiles.dot<1, 4, 7>();
      tiles.dot<2, 5, 6>();
      tiles.dot<3, 5, 7>();
    }
    tiles.release();
  };
  return team_gflops(step, 4.0 * 16 * 16 * 32 * 2, seconds, int64_t(1) << 12);
}

// One thread, no OpenMP (it runs in a forked child): both ways of the tile kernel on a small
// matrix with ragged edges, against float64. 0 when both are within 1e-4 of the largest entry.
int tile_self_test() {
  constexpr int64_t rows = 100, cols = 40;
  std::vector<float> values(rows * cols), rounded(rows * cols);
  std::vector<uint16_t> halves(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    values[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * static_cast<double>(1 + i % 7));
    halves[i] = tile_gram::to_bfloat16(values[i]);
    rounded[i] = bfloat16_to_float(halves[i]);
  }
  // |error| / largest |entry| of the lower triangle; `seen` is the input as float32
  auto relative_error = [&](const void* data, int32_t dtype, const std::vector<float>& seen) {
    const rf_matrix_view view{data, dtype, rows, cols, cols, 1};
    std::vector<double> gram(cols * cols, 0.0);
    tile_gram::update<HardwareTiles>(view, nullptr, gram.data(), 1);
    double worst = 0.0, largest = 0.0;
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double reference = 0.0;
        for (int64_t r = 0; r < rows; ++r) reference += double(seen[r * cols + i]) * seen[r * cols + j];
        worst = std::max(worst, std::fabs(gram[i * cols + j] - reference));
        largest = std::max(largest, std::fabs(reference));
      }
    return worst / largest;
  };
  const bool right = relative_error(halves.data(), RF_BFLOAT16, rounded) <= 1e-4 &&
                     relative_error(values.data(), RF_FLOAT32, values) <= 1e-4;
  return right ? 0 : 3;
}

}  // namespace isa_amx
}  // namespace rankme_fast
