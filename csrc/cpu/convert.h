// Element loads from every supported input dtype, and row-block packing with the cast and
// the optional shift fused in, so no converted copy of a whole batch is ever made.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "rankme_fast/rankme_fast.h"

namespace rankme_fast {

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// IEEE binary16 -> binary32, exact for every input (subnormals, inf and NaN included).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24 is exact in float32
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline float bfloat16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

template <typename T>
struct Load;
// Each Load<T> also names the exponent bits of its storage: all set means Inf or NaN.
template <>
struct Load<double> {
  using storage = double;
  using bits = uint64_t;
  static constexpr bits exponent = 0x7ff0000000000000ull;
  static double get(double v) { return v; }
  static bool finite(double v) { return std::isfinite(v); }
};
template <>
struct Load<float> {
  using storage = float;
  using bits = uint32_t;
  static constexpr bits exponent = 0x7f800000u;
  static double get(float v) { return v; }
  static bool finite(float v) { return std::isfinite(v); }
};
struct Half {};
struct BFloat16 {};
template <>
struct Load<Half> {
  using storage = uint16_t;
  using bits = uint16_t;
  static constexpr bits exponent = 0x7c00u;
  static double get(uint16_t v) { return half_to_float(v); }
  static bool finite(uint16_t v) { return (v & 0x7c00u) != 0x7c00u; }
};
template <>
struct Load<BFloat16> {
  using storage = uint16_t;
  using bits = uint16_t;
  static constexpr bits exponent = 0x7f80u;
  static double get(uint16_t v) { return bfloat16_to_float(v); }
  static bool finite(uint16_t v) { return (v & 0x7f80u) != 0x7f80u; }
};

// True when any of n contiguous values is Inf or NaN: an OR over integer tests, which the
// compiler vectorises (a loop of std::isfinite calls is not).
template <typename Tag>
inline bool any_nonfinite(const typename Load<Tag>::storage* values, int64_t n) {
  using Bits = typename Load<Tag>::bits;
  constexpr Bits exponent = Load<Tag>::exponent;
  static_assert(sizeof(Bits) == sizeof(typename Load<Tag>::storage), "bits and storage differ in size");
  Bits found = 0;
  for (int64_t i = 0; i < n; ++i) {
    Bits b;
    std::memcpy(&b, values + i, sizeof b);
    found |= static_cast<Bits>((b & exponent) == exponent);
  }
  return found != 0;
}

// Calls f(Tag{}) with the tag type of the dtype code (double, float, Half or BFloat16).
template <typename F>
bool dispatch_dtype(int32_t dtype, F&& f) {
  switch (dtype) {
    case RF_FLOAT64: f(double{}); return true;
    case RF_FLOAT32: f(float{}); return true;
    case RF_FLOAT16: f(Half{}); return true;
    case RF_BFLOAT16: f(BFloat16{}); return true;
    default: return false;
  }
}

template <typename Tag>
inline const typename Load<Tag>::storage* row_pointer(const rf_matrix_view& z, int64_t r) {
  return static_cast<const typename Load<Tag>::storage*>(z.data) + r * z.row_stride;
}

// Writes rows [r0, r0 + count) of z, minus shift, as a dense row-major count x cols block of
// Out (double or float). The subtraction happens in float64, before any rounding to Out. One
// thread: its caller, the BLAS route, runs between OpenBLAS calls, and an OpenMP team there
// fought OpenBLAS's still-spinning workers for the cores (many times slower on 2 cores).
template <typename Tag, typename Out>
void pack_rows(const rf_matrix_view& z, int64_t r0, int64_t count, const double* shift, Out* out) {
  const int64_t cols = z.cols, cs = z.col_stride;
  for (int64_t r = 0; r < count; ++r) {
    const auto* src = row_pointer<Tag>(z, r0 + r);
    Out* dst = out + r * cols;
    if (shift) {
      for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<Out>(Load<Tag>::get(src[c * cs]) - shift[c]);
    } else if (cs == 1) {
      for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<Out>(Load<Tag>::get(src[c]));
    } else {
      for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<Out>(Load<Tag>::get(src[c * cs]));
    }
  }
}

}  // namespace rankme_fast
