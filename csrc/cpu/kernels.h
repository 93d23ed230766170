// Internal entry points of the CPU kernels; the C ABI in syrk_cpu.cpp validates and routes.
#pragma once
#include "convert.h"

namespace rankme_fast {

// Both add the lower triangle of (z - shift)^T (z - shift) into gram (row-major cols x cols).
// z is normalised: rows > 0, row_stride >= 0. syrk_tiled_update runs the instruction-set
// variant chosen at run time (dispatch.cpp), tiled_simd names its vector width.
void syrk_tiled_update(const rf_matrix_view& z, const double* shift, double* gram, int32_t precision);
void syrk_blas_update(const rf_matrix_view& z, const double* shift, double* gram, int32_t precision);
bool blas_available();
const char* tiled_simd();
const char* blas_name();
// Run the tiled kernel of variant `index` (a valid index that can run here).
void syrk_tiled_update_variant(int index, const rf_matrix_view& z, const double* shift, double* gram,
                               int32_t precision);

// One namespace per compiled variant of syrk_tiled.cpp (CMakeLists.txt lists them).
#define RF_DECLARE_TILED_VARIANT(ns)                                                                  \
  namespace ns {                                                                                      \
  void syrk_tiled_update(const rf_matrix_view& z, const double* shift, double* gram, int32_t precision); \
  const char* tiled_simd();                                                                           \
  double peak_gflops(int32_t kind, double seconds);                                                   \
  }
RF_DECLARE_TILED_VARIANT(isa_baseline)
RF_DECLARE_TILED_VARIANT(isa_avx2)
RF_DECLARE_TILED_VARIANT(isa_avx512)
RF_DECLARE_TILED_VARIANT(isa_avx512bf16)
#ifdef RF_HAVE_AMX
RF_DECLARE_TILED_VARIANT(isa_amx)  // syrk_amx.cpp: tile_gram.h on the tile units
namespace isa_amx {
int tile_self_test();  // 0 when the tile kernel's sums are right (one thread, no OpenMP)
void use_emulated_tiles(bool on);  // the tile instructions in software (RANKME_FAST_TILES=emulated)
}
#endif
#undef RF_DECLARE_TILED_VARIANT

// Rows per packed block: about 2*cols (so the buffer is O(cols^2), like the state), at least
// 256 for BLAS efficiency, and at most `max_bytes` of packed data.
int64_t packed_block_rows(int64_t rows, int64_t cols, int64_t elem_bytes);

}  // namespace rankme_fast
