// pybind11 module rankme_fast._C: thin wrappers over the C ABI. Arrays travel as integer
// addresses with shapes and element strides, so the module links neither torch nor numpy.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "rankme_fast/rankme_fast.h"
#include "rankme_fast/tiles.h"

namespace py = pybind11;

namespace {

rf_matrix_view make_view(uintptr_t data, int32_t dtype, int64_t rows, int64_t cols, int64_t row_stride,
                         int64_t col_stride) {
  return rf_matrix_view{reinterpret_cast<const void*>(data), dtype, rows, cols, row_stride, col_stride};
}

void check(int status, const char* err) {
  if (status != 0) throw std::runtime_error(err);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "rankme_fast native kernels (C++ CPU SYRK, CUDA runtime) behind a torch-free C ABI";
  m.attr("DTYPE_FLOAT64") = static_cast<int>(RF_FLOAT64);
  m.attr("DTYPE_FLOAT32") = static_cast<int>(RF_FLOAT32);
  m.attr("DTYPE_FLOAT16") = static_cast<int>(RF_FLOAT16);
  m.attr("DTYPE_BFLOAT16") = static_cast<int>(RF_BFLOAT16);
  m.attr("KERNEL_AUTO") = static_cast<int>(RF_KERNEL_AUTO);
  m.attr("KERNEL_BLAS") = static_cast<int>(RF_KERNEL_BLAS);
  m.attr("KERNEL_TILED") = static_cast<int>(RF_KERNEL_TILED);
  m.attr("cuda_compiled") = rf_cuda_compiled() != 0;
  m.attr("blas") = rf_cpu_has_blas() ? py::cast(std::string(rf_cpu_blas_name())) : py::none();
  m.def("tiled_simd", []() { return std::string(rf_cpu_tiled_simd()); },
        "Vector width of the tiled kernel in use: avx512bf16, avx512, avx2 or sse2.");
  m.def("auto_kernel", []() { return rf_cpu_auto_kernel() == RF_KERNEL_BLAS ? "blas" : "tiled"; },
        "The CPU kernel backend='cpu' runs: 'tiled' when vectorised, else 'blas'.");
  m.def("cpu_features", []() { return std::string(rf_cpu_features()); },
        "What cpuid and the OS (XCR0, Linux AMX permission) report, as space-separated names.");
  m.def("cpu_isa", []() { return std::string(rf_cpu_isa()); }, "The instruction-set variant in use.");
  m.def(
      "cpu_isa_variants",
      []() {
        py::dict variants;
        for (int i = 0; i < rf_cpu_isa_count(); ++i) variants[rf_cpu_isa_name(i)] = rf_cpu_isa_runs_here(i) != 0;
        return variants;
      },
      "Compiled instruction-set variants -> whether each can run here, in ascending order.");
  m.def(
      "select_cpu_isa",
      [](const std::string& name) {
        char err[512] = {0};
        if (rf_cpu_select_isa(name.c_str(), err, sizeof err) != 0) throw py::value_error(err);
      },
      py::arg("name"), "Use this instruction-set variant from now on (ValueError if it cannot run here).");
  m.def(
      "cpu_peak_gflops",
      [](const std::string& name, const std::string& kind, double seconds) {
        const int32_t code = kind == "fp64" ? 0 : kind == "fp32" ? 1 : kind == "bf16" ? 2 : kind == "tile-bf16" ? 3 : -1;
        if (code < 0) throw py::value_error("kind must be 'fp64', 'fp32', 'bf16' or 'tile-bf16'");
        for (int i = 0; i < rf_cpu_isa_count(); ++i) {
          if (name != rf_cpu_isa_name(i)) continue;
          double rate;
          {
            py::gil_scoped_release release;
            rate = rf_cpu_isa_peak_gflops(i, code, seconds);
          }
          if (rate < 0) throw py::value_error("variant " + name + " cannot run on this CPU");
          return rate;
        }
        throw py::value_error("unknown variant " + name);
      },
      py::arg("variant"), py::arg("kind"), py::arg("seconds") = 0.5,
      "GFLOP/s of a variant's multiply-add unit on independent chains, all OpenMP threads busy "
      "(0.0 when the variant has no instruction of that kind).");
#ifdef _OPENMP
  m.attr("openmp") = true;
  m.def("openmp_max_threads", []() { return omp_get_max_threads(); });
#else
  m.attr("openmp") = false;
  m.def("openmp_max_threads", []() { return 1; });
#endif

  m.def(
      "syrk_update",
      [](uintptr_t data, int32_t dtype, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
         uintptr_t gram, uintptr_t shift, bool fast, int32_t kernel) {
        const rf_matrix_view view = make_view(data, dtype, rows, cols, row_stride, col_stride);
        char err[512] = {0};
        int status;
        {
          py::gil_scoped_release release;
          status = rf_cpu_syrk_update(&view, reinterpret_cast<const double*>(shift), reinterpret_cast<double*>(gram),
                                      fast ? RF_FAST : RF_EXACT, kernel, err, sizeof err);
        }
        check(status, err);
      },
      py::arg("data"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("col_stride"), py::arg("gram"), py::arg("shift") = 0, py::arg("fast") = false,
      py::arg("kernel") = static_cast<int>(RF_KERNEL_AUTO),
      "Add the lower triangle of (Z - shift)^T (Z - shift) into a row-major float64 gram.");

  m.attr("ROUTE_UNSET") = RF_ROUTE_UNSET;
  m.attr("ROUTE_BLAS") = RF_ROUTE_BLAS;
  m.def(
      "syrk_update_with",
      [](uintptr_t data, int32_t dtype, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
         uintptr_t gram, uintptr_t shift, bool fast, int route) {
        const rf_matrix_view view = make_view(data, dtype, rows, cols, row_stride, col_stride);
        char err[512] = {0};
        int status;
        {
          py::gil_scoped_release release;
          status = rf_cpu_syrk_update_with(&view, reinterpret_cast<const double*>(shift),
                                           reinterpret_cast<double*>(gram), fast ? RF_FAST : RF_EXACT, route, err,
                                           sizeof err);
        }
        check(status, err);
      },
      py::arg("data"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("col_stride"), py::arg("gram"), py::arg("shift"), py::arg("fast"), py::arg("route"),
      "syrk_update through one route: a variant index, ROUTE_BLAS, or ROUTE_UNSET (the default).");
  m.def(
      "cpu_tile_check",
      [](bool force) {
        py::gil_scoped_release release;  // may wait for a forked child
        return std::string(rf_cpu_tile_check(force ? 1 : 0));
      },
      py::arg("force") = false,
      "The amx variant's self-test in a forked child: 'passed', or why it may not run ('not run: ...' "
      "where tiles are not offered; force=True runs the child anyway).");
  m.def(
      "tile_emulated_update",
      [](uintptr_t data, int32_t dtype, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
         uintptr_t gram, uintptr_t shift) {
        const rf_matrix_view view = make_view(data, dtype, rows, cols, row_stride, col_stride);
        char err[512] = {0};
        int status;
        {
          py::gil_scoped_release release;
          status = rf_cpu_tile_emulated_update(&view, reinterpret_cast<const double*>(shift),
                                               reinterpret_cast<double*>(gram), err, sizeof err);
        }
        check(status, err);
      },
      py::arg("data"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("col_stride"), py::arg("gram"), py::arg("shift") = 0,
      "The amx variant's fast-mode update with the tile instruction done in software (any CPU; slow).");
  m.def("width_class", &rf_cpu_width_class, py::arg("cols"), "The width class of a Gram of `cols` columns (0-3).");
  m.def(
      "set_route",
      [](int32_t dtype, bool fast, int width_class, int route) {
        if (rf_cpu_set_route(dtype, fast ? RF_FAST : RF_EXACT, width_class, route) != 0)
          throw py::value_error("bad dtype, width class or route (a variant that cannot run here, or no BLAS)");
      },
      py::arg("dtype"), py::arg("fast"), py::arg("width_class"), py::arg("route"),
      "Make RF_KERNEL_AUTO run `route` for this (dtype, precision, width class).");
  m.def(
      "route", [](int32_t dtype, bool fast, int64_t cols) { return rf_cpu_route(dtype, fast ? RF_FAST : RF_EXACT, cols); },
      py::arg("dtype"), py::arg("fast"), py::arg("cols"), "The route RF_KERNEL_AUTO runs for these inputs.");
  m.def("cpu_isa_index", &rf_cpu_isa_index_in_use, "Index of the instruction-set variant in use.");

  m.def(
      "count_nonfinite_rows",
      [](uintptr_t data, int32_t dtype, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
        const rf_matrix_view view = make_view(data, dtype, rows, cols, row_stride, col_stride);
        int64_t bad;
        {
          py::gil_scoped_release release;
          bad = rf_cpu_count_nonfinite_rows(&view);
        }
        if (bad < 0) throw std::runtime_error("invalid matrix view");
        return bad;
      },
      "Number of rows holding a NaN or an Inf.");

  m.def(
      "column_mean",
      [](uintptr_t data, int32_t dtype, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
         uintptr_t out) {
        const rf_matrix_view view = make_view(data, dtype, rows, cols, row_stride, col_stride);
        char err[512] = {0};
        int status;
        {
          py::gil_scoped_release release;
          status = rf_cpu_column_mean(&view, reinterpret_cast<double*>(out), err, sizeof err);
        }
        check(status, err);
      },
      "Write the float64 column means of Z into out.");

  m.attr("CUDA_VARIANTS") = py::dict(py::arg("auto") = static_cast<int>(RF_CUDA_AUTO),
                                     py::arg("dmma-16x8x8") = static_cast<int>(RF_CUDA_DMMA_16X8X8),
                                     py::arg("dmma-8x8x4") = static_cast<int>(RF_CUDA_DMMA_8X8X4),
                                     py::arg("simt") = static_cast<int>(RF_CUDA_SIMT));

  m.def(
      "cuda_syrk_update",
      [](uintptr_t data, int32_t dtype, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
         uintptr_t gram, uintptr_t shift, uintptr_t column_sums, int32_t device, uintptr_t stream, int32_t variant,
         int64_t splits, bool check_pointers) {
        const rf_matrix_view view = make_view(data, dtype, rows, cols, row_stride, col_stride);
        char err[512] = {0};
        int32_t used_variant = 0;
        int64_t used_splits = 0;
        int status;
        {
          py::gil_scoped_release release;
          status = rf_cuda_syrk_update(&view, reinterpret_cast<const double*>(shift), reinterpret_cast<double*>(gram),
                                       reinterpret_cast<double*>(column_sums), device, reinterpret_cast<void*>(stream),
                                       variant, splits, check_pointers ? 1 : 0, &used_variant, &used_splits, err,
                                       sizeof err);
        }
        check(status, err);
        return std::make_pair(used_variant, used_splits);
      },
      py::arg("data"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("col_stride"), py::arg("gram"), py::arg("shift") = 0, py::arg("column_sums") = 0, py::arg("device") = 0,
      py::arg("stream") = 0, py::arg("variant") = static_cast<int>(RF_CUDA_AUTO), py::arg("splits") = 0,
      py::arg("check_pointers") = true,
      "Queue gram[lower] += (Z - shift)^T (Z - shift) (float64 products) on a CUDA stream; returns the "
      "(variant code, row splits) used. check_pointers=False skips asking where each address lives.");

  m.def(
      "cuda_device_info",
      [](int32_t device) {
        int32_t major = 0, minor = 0, multiprocessors = 0;
        char err[512] = {0};
        check(rf_cuda_device_info(device, &major, &minor, &multiprocessors, err, sizeof err), err);
        return py::make_tuple(major, minor, multiprocessors);
      },
      "(compute capability major, minor, multiprocessor count) of a CUDA device.");

  m.def(
      "grouped_tile_coords",
      [](int64_t t, int64_t tiles_per_side, int64_t group) {
        int64_t row = 0, col = 0;
        if (group > 0) rankme_fast::grouped_tile_coords(t, tiles_per_side, group, &row, &col);
        else rankme_fast::triangle_tile_coords(t, &row, &col);
        return std::make_pair(row, col);
      },
      py::arg("t"), py::arg("tiles_per_side"), py::arg("group") = 0,
      "The CUDA kernel's map from block id to lower-triangle tile (row, col); group 0 is the plain row-major order.");

  m.def(
      "cuda_device_count",
      []() {
        int count = 0;
        char err[512] = {0};
        check(rf_cuda_device_count(&count, err, sizeof err), err);
        return count;
      },
      "Number of visible CUDA devices; raises RuntimeError with the CUDA message when none can be used.");
}
