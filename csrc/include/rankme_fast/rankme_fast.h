// Torch-free C ABI of the rankme_fast native kernels: raw pointers, shapes, strides in
// elements, dtype codes. Every function returns 0 on success or a nonzero code with a
// message written into `err` (never throws across the ABI).
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { RF_FLOAT64 = 0, RF_FLOAT32 = 1, RF_FLOAT16 = 2, RF_BFLOAT16 = 3 } rf_dtype;
typedef enum { RF_EXACT = 0, RF_FAST = 1 } rf_precision;
typedef enum { RF_KERNEL_AUTO = 0, RF_KERNEL_BLAS = 1, RF_KERNEL_TILED = 2 } rf_kernel;

// A strided rows x cols matrix view; strides are in elements and may be negative or zero.
typedef struct {
  const void* data;
  int32_t dtype;  // rf_dtype
  int64_t rows, cols;
  int64_t row_stride, col_stride;
} rf_matrix_view;

// gram[i*cols + j] += sum_r (z[r,i] - shift[i]) * (z[r,j] - shift[j]) for j <= i (lower
// triangle of a row-major cols x cols float64 matrix; the upper triangle is not touched).
// shift may be NULL. precision RF_EXACT forms products and sums in float64; RF_FAST forms
// them in float32 within a row block and adds the blocks in float64.
int rf_cpu_syrk_update(const rf_matrix_view* z, const double* shift, double* gram,
                       int32_t precision, int32_t kernel, char* err, size_t err_len);

// Number of rows holding at least one NaN or Inf; -1 on a bad view.
int64_t rf_cpu_count_nonfinite_rows(const rf_matrix_view* z);

// Column means in float64 (out has z->cols entries).
int rf_cpu_column_mean(const rf_matrix_view* z, double* out, char* err, size_t err_len);

// 1 when the BLAS route was compiled in, and its name.
int rf_cpu_has_blas(void);
const char* rf_cpu_blas_name(void);
// SIMD instruction set of the tiled kernel's micro-kernel ("avx512bf16", "avx512", "avx2" or
// "sse2"), and the kernel RF_KERNEL_AUTO runs: the tiled kernel when it is vectorised for AVX2 or
// better (it is measured faster than OpenBLAS there, see bench/README.md), else BLAS when present.
const char* rf_cpu_tiled_simd(void);
int32_t rf_cpu_auto_kernel(void);

// Instruction-set variants of the tiled kernel compiled into this library, in ascending order
// (baseline x86-64, avx2, avx512, avx512bf16, then amx: fast mode on the AMX-BF16 tile units),
// whether each can run on this CPU and OS, the one in use (the best that runs, unless
// rf_cpu_select_isa chose another; never amx, which only the measured dispatch routes to) and
// what cpuid and XCR0 report, as space-separated names.
const char* rf_cpu_features(void);
int rf_cpu_isa_count(void);
const char* rf_cpu_isa_name(int index);
int rf_cpu_isa_runs_here(int index);
const char* rf_cpu_isa(void);
int rf_cpu_isa_index_in_use(void);
int rf_cpu_select_isa(const char* name, char* err, size_t err_len);
// GFLOP/s of variant `index` on independent multiply-add chains in every OpenMP thread for about
// `seconds`: kind 0 float64 FMA, 1 float32 FMA, 2 bfloat16 dot product, 3 bfloat16 tile product
// (TDPBF16PS); 0 when the variant has no such instruction, -1 when it cannot run here.
double rf_cpu_isa_peak_gflops(int index, int32_t kind, double seconds);
// The amx variant's self-test, run once per process in a forked child (a fault there kills
// the child, not the caller): "passed", or why the variant may not run ("not run: ..." when the
// CPU, the OS or Linux does not offer tiles; force=1 runs the child anyway, for tests).
const char* rf_cpu_tile_check(int force);
// The tile kernel with the tile instruction done in software (any CPU; slow): the fast-mode
// lower-triangle update the amx variant computes, for testing its packing, tiling and split.
int rf_cpu_tile_emulated_update(const rf_matrix_view* z, const double* shift, double* gram, char* err,
                                size_t err_len);

// Routes measured at run time (rankme_fast/backends/cpu_dispatch.py): which kernel RF_KERNEL_AUTO
// runs for a (dtype, precision, width class), width classes cols <= 64, <= 256, <= 1024, above.
// A route is a variant index (rf_cpu_isa_name), RF_ROUTE_BLAS, or RF_ROUTE_UNSET (the default:
// the variant in use, as rf_cpu_auto_kernel says). rf_cpu_syrk_update_with runs one route as
// given (RF_ROUTE_UNSET: the default), for measuring the candidates.
#define RF_ROUTE_UNSET (-1)
#define RF_ROUTE_BLAS (-2)
int rf_cpu_width_class(int64_t cols);
int rf_cpu_set_route(int32_t dtype, int32_t precision, int width_class, int route);
int rf_cpu_route(int32_t dtype, int32_t precision, int64_t cols);
int rf_cpu_syrk_update_with(const rf_matrix_view* z, const double* shift, double* gram, int32_t precision,
                            int route, char* err, size_t err_len);

// CUDA runtime status: number of visible devices, or a nonzero code and the CUDA message.
int rf_cuda_compiled(void);
int rf_cuda_device_count(int* count, char* err, size_t err_len);
int rf_cuda_device_info(int32_t device, int32_t* major, int32_t* minor, int32_t* multiprocessors, char* err,
                        size_t err_len);

// Inner product of the CUDA SYRK: FP64 tensor cores (mma.sync m16n8k8 on sm_90+, m8n8k4 on
// sm_80+) or plain float64 FMAs. RF_CUDA_AUTO takes the first the device supports.
typedef enum { RF_CUDA_AUTO = 0, RF_CUDA_DMMA_16X8X8 = 1, RF_CUDA_DMMA_8X8X4 = 2, RF_CUDA_SIMT = 3 } rf_cuda_variant;

// The CUDA twin of rf_cpu_syrk_update, always exact (float64 products and sums): z, shift,
// gram and column_sums live in memory of `device`; the kernel is queued on `stream` (a
// cudaStream_t, 0 for the legacy default stream) and not waited for. column_sums, if not
// NULL, gets += the column sums of z (unshifted). splits = 0 picks the number of row splits
// (split-N) itself. check_pointers = 0 skips asking the runtime where each pointer lives (for
// callers that know, like the torch wrapper). The variant and split count used are written to
// *used_variant and *used_splits when those are not NULL. Device properties and kernel
// occupancy are queried once per process and device.
int rf_cuda_syrk_update(const rf_matrix_view* z, const double* shift, double* gram, double* column_sums,
                        int32_t device, void* stream, int32_t variant, int64_t splits, int32_t check_pointers,
                        int32_t* used_variant, int64_t* used_splits, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif
