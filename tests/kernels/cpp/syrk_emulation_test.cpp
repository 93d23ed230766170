// Runs the CUDA SYRK kernel's own source (csrc/cuda/syrk_kernel.cuh) on the CPU through
// cuda_emulation.h, for every variant and dtype, on small integer data (so every sum is exact):
// launch plan, tile order, stage loads (16-byte and scalar paths, strides, ragged edges), cast
// and shift, the three inner products, column sums, direct and atomic epilogues. Checks the
// lower triangle against a float64 reference and that the upper triangle is untouched. Run by
// tests/kernels/test_cuda_kernel.py.
#include "cuda_emulation.h"
// (the emulation must come first)
#include <cstdio>
#include <random>
#include <string>

#include "mma_truth.h"
#include "syrk_kernel.cuh"

namespace rankme_fast {
namespace warp_tile {

namespace {

// One warp-wide instruction: every lane posts its fragments, then each lane computes its own
// D values from the whole warp's A, B and C, placed by the truth layouts.
template <int M, int N, int K, int NA, int NB, int NC>
void warp_mma(const mma_truth::Truth& truth, double* d, const double* a, const double* b) {
  emulation::Warp& w = emulation::warp();
  const int lane = static_cast<int>(threadIdx.x % 32);
  for (int v = 0; v < NA; ++v) w.a[lane][v] = a[v];
  for (int v = 0; v < NB; ++v) w.b[lane][v] = b[v];
  for (int v = 0; v < NC; ++v) w.c[lane][v] = d[v];
  w.barrier.arrive_and_wait();
  double A[M][K], B[K][N];
  for (int l = 0; l < 32; ++l) {
    for (int v = 0; v < NA; ++v) {
      const Coord e = truth.a_mk(l, v);
      A[e.row][e.col] = w.a[l][v];
    }
    for (int v = 0; v < NB; ++v) {
      const Coord e = truth.b_kn(l, v);
      B[e.row][e.col] = w.b[l][v];
    }
  }
  for (int v = 0; v < NC; ++v) {
    const Coord e = truth.c_mn(lane, v);
    double sum = w.c[lane][v];
    for (int k = 0; k < K; ++k) sum += A[e.row][k] * B[k][e.col];
    d[v] = sum;
  }
  w.barrier.arrive_and_wait();  // the buffers are reused by the next instruction
}

}  // namespace

void mma_16x8x8(double (&d)[4], const double (&a)[4], const double (&b)[2]) {
  warp_mma<16, 8, 8, 4, 2, 4>(mma_truth::kTruth16x8x8, d, a, b);
}

void mma_8x8x4(double& d0, double& d1, double a, double b) {
  double d[2] = {d0, d1};
  warp_mma<8, 8, 4, 1, 1, 2>(mma_truth::kTruth8x8x4, d, &a, &b);
  d0 = d[0];
  d1 = d[1];
}

}  // namespace warp_tile
}  // namespace rankme_fast

namespace {

using namespace rankme_fast;
using namespace rankme_fast::cuda_syrk;

uint16_t half_bits(int value) {  // exact for |value| <= 2048
  if (value == 0) return 0;
  const uint16_t sign = value < 0 ? 0x8000 : 0;
  int magnitude = value < 0 ? -value : value, exponent = 0;
  while ((magnitude >> exponent) > 1) ++exponent;
  const int mantissa = (magnitude - (1 << exponent)) << (10 - exponent);
  return static_cast<uint16_t>(sign | ((exponent + 15) << 10) | mantissa);
}

uint16_t bfloat16_bits(int value) {  // exact for |value| <= 256
  const float f = static_cast<float>(value);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return static_cast<uint16_t>(bits >> 16);
}

template <typename T>
T encode(int value) {
  if constexpr (std::is_same_v<T, __half>) return T{half_bits(value)};
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return T{bfloat16_bits(value)};
  else return static_cast<T>(value);
}

struct Case {
  std::string name;
  int64_t rows, cols, row_stride, col_stride, offset;  // view into a buffer, in elements
  bool shift, sums;
  int64_t splits;  // 0: the plan's own choice for a GPU of 8 concurrent blocks
};

int failures = 0;

template <typename T, class Variant>
void run(const char* variant, const char* dtype, const Case& c, std::mt19937& rng) {
  std::uniform_int_distribution<int> small(-8, 8);
  const int64_t extent = c.offset + (c.rows - 1) * c.row_stride + (c.cols - 1) * c.col_stride + 1;
  std::vector<int> values(static_cast<size_t>(extent));
  for (int& v : values) v = small(rng);
  // 64-byte aligned, so that whether the 16-byte load path runs follows from the case alone.
  std::vector<T> storage(values.size() + 64 / sizeof(T));
  const auto misalignment = reinterpret_cast<uintptr_t>(storage.data()) % 64;
  T* const buffer = storage.data() + (misalignment ? (64 - misalignment) / sizeof(T) : 0);
  for (size_t n = 0; n < values.size(); ++n) buffer[n] = encode<T>(values[n]);

  const int64_t d = c.cols;
  std::vector<double> shift(d, 0.0), sums(d), gram(d * d);
  for (auto& s : shift) s = c.shift ? small(rng) : 0.0;
  for (auto& s : sums) s = small(rng);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) gram[i * d + j] = j <= i ? small(rng) : 12345.0;
  std::vector<double> want_gram = gram, want_sums = sums;
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t i = 0; i < d; ++i) {
      const double xi = values[c.offset + r * c.row_stride + i * c.col_stride];
      want_sums[i] += xi;
      for (int64_t j = 0; j <= i; ++j)
        want_gram[i * d + j] += (xi - shift[i]) * (values[c.offset + r * c.row_stride + j * c.col_stride] - shift[j]);
    }

  static_assert(sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8);
  const int32_t code = std::is_same_v<T, double>  ? RF_FLOAT64
                       : std::is_same_v<T, float> ? RF_FLOAT32
                       : std::is_same_v<T, __half> ? RF_FLOAT16
                                                   : RF_BFLOAT16;
  const rf_matrix_view view{buffer + c.offset, code, c.rows, c.cols, c.row_stride, c.col_stride};
  const Plan plan = plan_launch(view, c.shift ? shift.data() : nullptr, gram.data(), c.sums ? sums.data() : nullptr,
                                c.splits, 8);
  emulation::launch(&syrk_kernel<T, Variant>, plan.tiles, plan.splits, kThreads, kSmemBytes, plan.params);

  int bad = 0;
  for (int64_t n = 0; n < d * d; ++n) bad += !(gram[n] == want_gram[n]);  // NaN counts as wrong
  if (c.sums)
    for (int64_t n = 0; n < d; ++n) bad += !(sums[n] == want_sums[n]);
  std::printf("%-12s %-9s %-26s grid %ux%u vectorised=%d: %s\n", variant, dtype, c.name.c_str(), plan.tiles,
              plan.splits, plan.params.vectorised, bad ? "FAIL" : "ok");
  failures += bad != 0;
}

template <class Variant>
void run_all_dtypes(const char* variant, const Case& c, std::mt19937& rng) {
  run<double, Variant>(variant, "float64", c, rng);
  run<float, Variant>(variant, "float32", c, rng);
  run<__half, Variant>(variant, "float16", c, rng);
  run<__nv_bfloat16, Variant>(variant, "bfloat16", c, rng);
}

// The launch plan honours a requested split count up to one split per kDepth rows (and the
// grid's 65535), and its splits share the rows out exactly: contiguous, none empty, none twice.
void check_plans() {
  int bad = 0;
  for (const int64_t rows : {1L, 15L, 16L, 17L, 3000L, 4100L, 100000L, (1L << 20) + 3})
    for (const int64_t request : {0L, 1L, 2L, 3L, 63L, 64L, 65L, 1000L, 70000L}) {
      const rf_matrix_view view{nullptr, RF_FLOAT32, rows, 200, 200, 1};
      const Plan plan = plan_launch(view, nullptr, nullptr, nullptr, request, 132);
      const int64_t most = std::min<int64_t>((rows + kDepth - 1) / kDepth, 65535);
      if (request > 0 && plan.splits != std::min(request, most)) ++bad;
      int64_t next = 0;
      for (int64_t y = 0; y < plan.splits; ++y) {
        const int64_t begin = y * rows / plan.params.splits, end = (y + 1) * rows / plan.params.splits;
        bad += begin != next || end <= begin;
        next = end;
      }
      bad += next != rows;
    }
  std::printf("launch plans honour the requested splits and cover every row once: %s\n", bad ? "FAIL" : "ok");
  failures += bad != 0;
}

}  // namespace

int main() {
  check_plans();
  std::mt19937 rng(20261122);
  const Case cases[] = {
      {"contiguous, 2 splits", 45, 136, 136, 1, 0, true, true, 2},
      {"ragged 4-column edge", 37, 134, 136, 1, 0, false, false, 1},
      {"unaligned start", 21, 130, 136, 1, 1, true, false, 1},
      {"column stride 3", 20, 70, 220, 3, 0, false, true, 0},
  };
  for (const Case& c : cases) {
    run_all_dtypes<warp_tile::Dmma16x8x8>("dmma-16x8x8", c, rng);
    run_all_dtypes<warp_tile::Dmma8x8x4>("dmma-8x8x4", c, rng);
    run_all_dtypes<warp_tile::Simt>("simt", c, rng);
  }
  // Nine tile rows: the banded launch order is exercised; rows of stride 0 (a broadcast row).
  run<float, warp_tile::Simt>("simt", "float32", {"9 tile rows, 3 splits", 18, 1030, 1030, 1, 0, true, true, 3}, rng);
  run<double, warp_tile::Simt>("simt", "float64", {"row stride 0", 40, 40, 0, 1, 0, false, true, 0}, rng);
  std::printf(failures ? "%d failures\n" : "ok\n", failures);
  return failures ? 1 : 0;
}
