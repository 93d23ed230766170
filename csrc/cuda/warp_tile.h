// One warp's share of a block tile: a 64 x 32 piece of (Z_I)^T Z_J, accumulated in float64
// registers from a shared-memory stage of float64 rows. The register ownership is the same for
// every variant (acc[a][b][v] holds row 8a + lane/4, column 8b + 2*(lane%4) + v of the warp
// tile), so the epilogue is shared; only the inner product differs:
//
//   Dmma16x8x8  FP64 tensor cores, mma.sync m16n8k8 (sm_90 and newer)
//   Dmma8x8x4   FP64 tensor cores, mma.sync m8n8k4 (sm_80 and newer)
//   Simt        plain float64 FMAs (any GPU; the fallback below sm_80)
//
// The fragment loads and maps are host-device functions so that tests/kernels/cpp/warp_tile_test.cpp
// can check on the CPU that they feed each instruction the operands its PTX layout expects and
// that results land in the acc slots the epilogue reads.
#pragma once
#include <math.h>  // fma on the host

#include "rankme_fast/host_device.h"

namespace rankme_fast {
namespace warp_tile {

constexpr int kWarpRows = 64;  // warp tile: 64 rows (of Z_I^T) x 32 columns (of Z_J)
constexpr int kWarpCols = 32;
constexpr int kRowFrags = kWarpRows / 8;
constexpr int kColFrags = kWarpCols / 8;

struct Coord {
  int row, col;
};

// Where acc[a][b][v] sits in the 64 x 32 warp tile.
RF_HOST_DEVICE constexpr Coord acc_coord(int lane, int a, int b, int v) { return {8 * a + lane / 4, 8 * b + 2 * (lane % 4) + v}; }

// Fragment element maps: (row, col) of value v held by `lane` inside one instruction's operand
// (A: m x k, B: k x n, C: m x n), as the PTX ISA defines them for .f64; and the loads that fill
// a lane's fragments from a stage. Shared-memory stage layout: element (k, x) of an operand
// (stage row k, tile column x) at s[k * ld + x], so A = Z_I^T is A(m, k) = sA[k][m] and
// B = Z_J is B(k, n) = sB[k][n].
struct Dmma16x8x8 {
  static constexpr int kM = 16, kN = 8, kK = 8, kA = 4, kB = 2, kC = 4;
  RF_HOST_DEVICE static constexpr Coord a(int lane, int v) { return {lane / 4 + 8 * (v % 2), lane % 4 + 4 * (v / 2)}; }
  RF_HOST_DEVICE static constexpr Coord b(int lane, int v) { return {lane % 4 + 4 * v, lane / 4}; }
  RF_HOST_DEVICE static constexpr Coord c(int lane, int v) { return {lane / 4 + 8 * (v / 2), 2 * (lane % 4) + v % 2}; }
  // C value v of the instruction on row block mb lives in acc[row_frag(mb, v)][nb][acc_v(v)]
  // (lane-free, so the compiler keeps acc in registers; the CPU test checks it against c()).
  RF_HOST_DEVICE static constexpr int row_frag(int mb, int v) { return 2 * mb + v / 2; }
  RF_HOST_DEVICE static constexpr int acc_v(int v) { return v % 2; }
};

struct Dmma8x8x4 {
  static constexpr int kM = 8, kN = 8, kK = 4, kA = 1, kB = 1, kC = 2;
  RF_HOST_DEVICE static constexpr Coord a(int lane, int) { return {lane / 4, lane % 4}; }
  RF_HOST_DEVICE static constexpr Coord b(int lane, int) { return {lane % 4, lane / 4}; }
  RF_HOST_DEVICE static constexpr Coord c(int lane, int v) { return {lane / 4, 2 * (lane % 4) + v}; }
  RF_HOST_DEVICE static constexpr int row_frag(int mb, int) { return mb; }
  RF_HOST_DEVICE static constexpr int acc_v(int v) { return v; }
};

struct Simt {};

using Acc = double[kRowFrags][kColFrags][2];

// A lane's operands for the instruction on row block mb (V::kM rows of the warp tile) and
// column block nb (8 columns), stage rows k0..k0+V::kK-1, and its accumulators for that pair.
template <class V>
struct Fragments {
  RF_HOST_DEVICE static void load_a(const double* sA, int ld, int m0, int k0, int mb, int lane, double (&a)[V::kA]) {
    for (int v = 0; v < V::kA; ++v) {
      const Coord e = V::a(lane, v);
      a[v] = sA[(k0 + e.col) * ld + m0 + V::kM * mb + e.row];
    }
  }
  RF_HOST_DEVICE static void load_b(const double* sB, int ld, int n0, int k0, int nb, int lane, double (&b)[V::kB]) {
    for (int v = 0; v < V::kB; ++v) {
      const Coord e = V::b(lane, v);
      b[v] = sB[(k0 + e.row) * ld + n0 + 8 * nb + e.col];
    }
  }
  RF_HOST_DEVICE static double& acc(Acc& acc, int mb, int nb, int v) { return acc[V::row_frag(mb, v)][nb][V::acc_v(v)]; }
};

// The float64 FMA fallback: one lane's whole share, no collective step (host-callable, so the
// CPU test runs it as written).
RF_HOST_DEVICE inline void simt_product(const double* sA, const double* sB, int ld, int depth, int m0, int n0, int lane,
                                        Acc& acc) {
  for (int k = 0; k < depth; ++k) {
    double a[kRowFrags], b[kColFrags][2];
    for (int mb = 0; mb < kRowFrags; ++mb) a[mb] = sA[k * ld + m0 + acc_coord(lane, mb, 0, 0).row];
    for (int nb = 0; nb < kColFrags; ++nb)
      for (int v = 0; v < 2; ++v) b[nb][v] = sB[k * ld + n0 + acc_coord(lane, 0, nb, v).col];
    for (int mb = 0; mb < kRowFrags; ++mb)
      for (int nb = 0; nb < kColFrags; ++nb)
        for (int v = 0; v < 2; ++v) acc[mb][nb][v] = fma(a[mb], b[nb][v], acc[mb][nb][v]);
  }
}

#if defined(__CUDACC__)
// One warp-wide instruction each; tests/kernels/cpp/cuda_emulation.h defines them on the CPU.
__device__ __forceinline__ void mma_16x8x8(double (&d)[4], const double (&a)[4], const double (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+d"(d[0]), "+d"(d[1]), "+d"(d[2]), "+d"(d[3])
      : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(b[0]), "d"(b[1]));
#else
  __trap();  // the host never selects this variant below sm_90
#endif
}

__device__ __forceinline__ void mma_8x8x4(double& d0, double& d1, double a, double b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, {%3}, {%0,%1};\n"
               : "+d"(d0), "+d"(d1)
               : "d"(a), "d"(b));
#else
  __trap();  // the host never selects this variant below sm_80
#endif
}
#elif defined(RF_CUDA_EMULATION)
void mma_16x8x8(double (&d)[4], const double (&a)[4], const double (&b)[2]);
void mma_8x8x4(double& d0, double& d1, double a, double b);
#endif

#if defined(__CUDACC__) || defined(RF_CUDA_EMULATION)
// acc += A^T B over Depth stage rows for the warp tile at (m0, n0).
template <class Variant>
struct Product {
  template <int Depth>
  __device__ __forceinline__ static void run(const double* sA, const double* sB, int ld, int m0, int n0, int lane,
                                             Acc& acc) {
    using V = Variant;
    using F = Fragments<V>;
#pragma unroll
    for (int k0 = 0; k0 < Depth; k0 += V::kK) {
      double b[kColFrags][V::kB];
#pragma unroll
      for (int nb = 0; nb < kColFrags; ++nb) F::load_b(sB, ld, n0, k0, nb, lane, b[nb]);
#pragma unroll
      for (int mb = 0; mb < kWarpRows / V::kM; ++mb) {
        double a[V::kA];
        F::load_a(sA, ld, m0, k0, mb, lane, a);
#pragma unroll
        for (int nb = 0; nb < kColFrags; ++nb) {
          if constexpr (V::kM == 16) {
            double d[4] = {F::acc(acc, mb, nb, 0), F::acc(acc, mb, nb, 1), F::acc(acc, mb, nb, 2),
                           F::acc(acc, mb, nb, 3)};
            mma_16x8x8(d, a, b[nb]);
#pragma unroll
            for (int v = 0; v < 4; ++v) F::acc(acc, mb, nb, v) = d[v];
          } else {
            mma_8x8x4(F::acc(acc, mb, nb, 0), F::acc(acc, mb, nb, 1), a[0], b[nb][0]);
          }
        }
      }
    }
  }
};

template <>
struct Product<Simt> {
  template <int Depth>
  __device__ __forceinline__ static void run(const double* sA, const double* sB, int ld, int m0, int n0, int lane,
                                             Acc& acc) {
    simt_product(sA, sB, ld, Depth, m0, n0, lane, acc);
  }
};
#endif  // __CUDACC__ || RF_CUDA_EMULATION

}  // namespace warp_tile
}  // namespace rankme_fast
