// CPU check of the CUDA kernel's warp-level index math (csrc/cuda/warp_tile.h), run by
// tests/kernels/test_cuda_kernel.py. The tensor-core instructions are emulated from their operand
// layouts in mma_truth.h, so that this test does not reuse warp_tile.h's hand-derived
// formulas as its own truth. Every warp tile product must come out exact (integer data) and
// land where the epilogue reads it.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "mma_truth.h"
#include "warp_tile.h"

using namespace rankme_fast::warp_tile;
using mma_truth::kTruth16x8x8;
using mma_truth::kTruth8x8x4;
using mma_truth::Truth;

namespace {

constexpr int kDepth = 16, kLd = 132, kM0 = 64, kN0 = 32;
int failures = 0;

void expect(bool ok, const char* what, int lane, int i, int j) {
  if (!ok && failures++ < 10) std::printf("FAIL %s (lane %d, %d, %d)\n", what, lane, i, j);
}

void check_against_product(const char* name, const std::vector<double>& sA, const std::vector<double>& sB,
                           Acc* acc) {
  std::vector<int> seen(kWarpRows * kWarpCols, 0);
  for (int lane = 0; lane < 32; ++lane)
    for (int a = 0; a < kRowFrags; ++a)
      for (int b = 0; b < kColFrags; ++b)
        for (int v = 0; v < 2; ++v) {
          const Coord e = acc_coord(lane, a, b, v);
          double want = 0.0;
          for (int k = 0; k < kDepth; ++k) want += sA[k * kLd + kM0 + e.row] * sB[k * kLd + kN0 + e.col];
          expect(acc[lane][a][b][v] == want, name, lane, e.row, e.col);
          seen[e.row * kWarpCols + e.col]++;
        }
  for (int x = 0; x < kWarpRows * kWarpCols; ++x) expect(seen[x] == 1, "acc_coord covers the tile once", -1, x, 0);
}

// One collective instruction: gather the warp's fragments through the truth layouts, multiply,
// and scatter D back into the lanes' accumulators.
template <class V>
void emulate(const Truth& truth, const double (&a)[32][V::kA], const double (&b)[32][V::kB], Acc* acc, int mb, int nb) {
  double A[V::kM][V::kK] = {}, B[V::kK][V::kN] = {}, C[V::kM][V::kN] = {};
  int filled_a[V::kM][V::kK] = {}, filled_b[V::kK][V::kN] = {}, filled_c[V::kM][V::kN] = {};
  for (int lane = 0; lane < 32; ++lane) {
    for (int v = 0; v < V::kA; ++v) {
      const Coord e = truth.a_mk(lane, v);
      A[e.row][e.col] = a[lane][v];
      filled_a[e.row][e.col]++;
    }
    for (int v = 0; v < V::kB; ++v) {
      const Coord e = truth.b_kn(lane, v);
      B[e.row][e.col] = b[lane][v];
      filled_b[e.row][e.col]++;
    }
    for (int v = 0; v < V::kC; ++v) {
      const Coord e = truth.c_mn(lane, v);
      C[e.row][e.col] = Fragments<V>::acc(acc[lane], mb, nb, v);
      filled_c[e.row][e.col]++;
    }
  }
  for (int m = 0; m < V::kM; ++m)
    for (int k = 0; k < V::kK; ++k) expect(filled_a[m][k] == 1, "truth A layout is a bijection", -1, m, k);
  for (int k = 0; k < V::kK; ++k)
    for (int n = 0; n < V::kN; ++n) expect(filled_b[k][n] == 1, "truth B layout is a bijection", -1, k, n);
  for (int m = 0; m < V::kM; ++m)
    for (int n = 0; n < V::kN; ++n) {
      expect(filled_c[m][n] == 1, "truth C layout is a bijection", -1, m, n);
      for (int k = 0; k < V::kK; ++k) C[m][n] += A[m][k] * B[k][n];
    }
  for (int lane = 0; lane < 32; ++lane)
    for (int v = 0; v < V::kC; ++v) {
      const Coord e = truth.c_mn(lane, v);
      Fragments<V>::acc(acc[lane], mb, nb, v) = C[e.row][e.col];
    }
}

// The same loop nest as Product<V>::run in warp_tile.h, with the instruction emulated.
template <class V>
void run_variant(const char* name, const Truth& truth, const std::vector<double>& sA, const std::vector<double>& sB) {
  // The formulas in V must agree with the truth layouts, and acc slots with acc_coord.
  for (int lane = 0; lane < 32; ++lane) {
    for (int v = 0; v < V::kA; ++v) {
      const Coord mine = V::a(lane, v), hw = truth.a_mk(lane, v);
      expect(mine.row == hw.row && mine.col == hw.col, "A map", lane, v, 0);
    }
    for (int v = 0; v < V::kB; ++v) {
      const Coord mine = V::b(lane, v), hw = truth.b_kn(lane, v);
      expect(mine.row == hw.row && mine.col == hw.col, "B map", lane, v, 0);
    }
    for (int mb = 0; mb < kWarpRows / V::kM; ++mb)
      for (int v = 0; v < V::kC; ++v) {
        const Coord hw = truth.c_mn(lane, v);
        const Coord slot = acc_coord(lane, V::row_frag(mb, v), 0, V::acc_v(v));
        expect(slot.row == V::kM * mb + hw.row && slot.col == hw.col, "acc slot", lane, mb, v);
      }
  }
  static Acc acc[32];
  for (auto& lane_acc : acc)
    for (auto& row : lane_acc)
      for (auto& col : row) col[0] = col[1] = 0.0;
  for (int k0 = 0; k0 < kDepth; k0 += V::kK)
    for (int mb = 0; mb < kWarpRows / V::kM; ++mb)
      for (int nb = 0; nb < kColFrags; ++nb) {
        double a[32][V::kA], b[32][V::kB];
        for (int lane = 0; lane < 32; ++lane) {
          Fragments<V>::load_a(sA.data(), kLd, kM0, k0, mb, lane, a[lane]);
          Fragments<V>::load_b(sB.data(), kLd, kN0, k0, nb, lane, b[lane]);
        }
        emulate<V>(truth, a, b, acc, mb, nb);
      }
  check_against_product(name, sA, sB, acc);
}

void run_simt(const std::vector<double>& sA, const std::vector<double>& sB) {
  static Acc acc[32];
  for (int lane = 0; lane < 32; ++lane) {
    for (auto& row : acc[lane])
      for (auto& col : row) col[0] = col[1] = 0.0;
    simt_product(sA.data(), sB.data(), kLd, kDepth, kM0, kN0, lane, acc[lane]);
  }
  check_against_product("simt", sA, sB, acc);
}

}  // namespace

int main() {
  std::mt19937 rng(20261122);
  std::uniform_int_distribution<int> small(-64, 64);  // integer data: every product and sum is exact
  std::vector<double> sA(kDepth * kLd), sB(kDepth * kLd);
  for (double& x : sA) x = small(rng);
  for (double& x : sB) x = small(rng);
  run_variant<Dmma16x8x8>("dmma-16x8x8", kTruth16x8x8, sA, sB);
  run_variant<Dmma8x8x4>("dmma-8x8x4", kTruth8x8x4, sA, sB);
  run_simt(sA, sB);
  std::printf(failures ? "%d failures\n" : "ok\n", failures);
  return failures ? 1 : 0;
}
