// The FP64 tensor-core instructions' operand layouts, written in CuTe's (shape):(stride) form
// as in NVIDIA's cute/atom/mma_traits_sm80.hpp and mma_traits_sm90.hpp (values only), and
// evaluated by a small interpreter: the CPU tests' independent "hardware truth" for the
// fragment maps of csrc/cuda/warp_tile.h.
#pragma once
#include "warp_tile.h"

namespace mma_truth {

using rankme_fast::warp_tile::Coord;

// (lane, value) -> linear index of a CuTe layout with thread mode (4, 8) and value mode
// (v0, v1); the operand is rows x cols, column-major.
struct TvLayout {
  int lane_stride[2];
  int value_shape0;
  int value_stride[2];
  int rows;
  Coord at(int lane, int v) const {
    const int index = (lane % 4) * lane_stride[0] + (lane / 4) * lane_stride[1] + (v % value_shape0) * value_stride[0] +
                      (v / value_shape0) * value_stride[1];
    return {index % rows, index / rows};
  }
};

// A: (m, k) from an M x K layout; B: CuTe writes it N x K, so (k, n) = (col, row); C: M x N.
struct Truth {
  TvLayout a, b, c;
  Coord a_mk(int lane, int v) const { return a.at(lane, v); }
  Coord b_kn(int lane, int v) const {
    const Coord nk = b.at(lane, v);
    return {nk.col, nk.row};
  }
  Coord c_mn(int lane, int v) const { return c.at(lane, v); }
};

// SM90_16x8x8_F64F64F64F64_TN: A ((4,8),(2,2)):((16,1),(8,64)), B ((4,8),2):((8,1),32),
// C ((4,8),(2,2)):((32,1),(16,8)).
const Truth kTruth16x8x8{{{16, 1}, 2, {8, 64}, 16}, {{8, 1}, 2, {32, 0}, 8}, {{32, 1}, 2, {16, 8}, 16}};
// SM80_8x8x4_F64F64F64F64_TN: A and B ((4,8),1):((8,1),0), C ((4,8),2):((16,1),8).
const Truth kTruth8x8x4{{{8, 1}, 1, {0, 0}, 8}, {{8, 1}, 1, {0, 0}, 8}, {{16, 1}, 2, {8, 0}, 8}};

}  // namespace mma_truth
