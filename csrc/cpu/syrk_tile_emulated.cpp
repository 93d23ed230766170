// The tile kernel (tile_gram.h) on software tiles (tile_emulator.h), for any CPU: the same
// packing, tiling, split and flushing as the hardware variant, with the tile instruction's
// arithmetic done in scalar code. For tests; far too slow for anything else.
#include <cstdio>
#include <new>

#include "kernels.h"
#include "rankme_fast/view.h"
#include "tile_emulator.h"
#include "tile_gram.h"

extern "C" int rf_cpu_tile_emulated_update(const rf_matrix_view* z, const double* shift, double* gram, char* err,
                                           size_t err_len) {
  auto fail = [&](const char* message) {
    if (err && err_len) std::snprintf(err, err_len, "%s", message);
    return 1;
  };
  if (!rankme_fast::valid_view(z)) return fail("invalid matrix view (null data, empty shape or unknown dtype)");
  if (!gram) return fail("gram pointer is null");
  try {
    rankme_fast::tile_gram::update<rankme_fast::tile_gram::EmulatedTiles>(rankme_fast::rows_ascending(*z), shift,
                                                                          gram, rankme_fast::max_threads());
  } catch (const std::bad_alloc&) {
    return fail("out of memory allocating the packing buffer");
  }
  return 0;
}
