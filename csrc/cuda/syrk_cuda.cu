// CUDA runtime side of the exact SYRK (the kernel and its launch plan are in syrk_kernel.cuh):
// device checks, variant choice, occupancy, launch on the caller's stream, and the C ABI.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdio>
#include <mutex>

#include "syrk_kernel.cuh"

namespace rankme_fast {
namespace cuda_syrk {
namespace {

// ---- host side ------------------------------------------------------------------------------

int fail(char* err, size_t err_len, const char* what, cudaError_t status) {
  std::snprintf(err, err_len, "%s: %s (%s)", what, cudaGetErrorString(status), cudaGetErrorName(status));
  return 1;
}

int fail(char* err, size_t err_len, const char* message) {
  std::snprintf(err, err_len, "%s", message);
  return 1;
}

struct Launch {
  Plan plan;
  cudaStream_t stream;
};

template <typename T, class Variant>
cudaError_t blocks_per_multiprocessor(int* blocks) {
  const auto kernel = syrk_kernel<T, Variant>;
  cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  if (status == cudaSuccess) status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kernel, kThreads, kSmemBytes);
  return status;
}

template <typename T, class Variant>
cudaError_t launch(const Launch& l) {
  const dim3 grid(l.plan.tiles, l.plan.splits);
  syrk_kernel<T, Variant><<<grid, kThreads, kSmemBytes, l.stream>>>(l.plan.params);
  return cudaGetLastError();
}

struct Occupancy {
  int* blocks;
  template <typename T, class V>
  cudaError_t operator()() const { return blocks_per_multiprocessor<T, V>(blocks); }
};

struct Launcher {
  const Launch* l;
  template <typename T, class V>
  cudaError_t operator()() const { return launch<T, V>(*l); }
};

// Calls f.template operator()<T, Variant>() for the runtime dtype and variant codes.
template <class F>
cudaError_t dispatch(int32_t dtype, int32_t variant, const F& f) {
  auto by_variant = [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    switch (variant) {
      case RF_CUDA_DMMA_16X8X8:
        return f.template operator()<T, warp_tile::Dmma16x8x8>();
      case RF_CUDA_DMMA_8X8X4:
        return f.template operator()<T, warp_tile::Dmma8x8x4>();
      default:
        return f.template operator()<T, warp_tile::Simt>();
    }
  };
  switch (dtype) {
    case RF_FLOAT64:
      return by_variant(double{});
    case RF_FLOAT32:
      return by_variant(float{});
    case RF_FLOAT16:
      return by_variant(__half{});
    default:
      return by_variant(__nv_bfloat16{});
  }
}

int32_t best_variant(int major) {
  return major >= 9 ? RF_CUDA_DMMA_16X8X8 : major >= 8 ? RF_CUDA_DMMA_8X8X4 : RF_CUDA_SIMT;
}

const char* variant_name(int32_t variant) {
  switch (variant) {
    case RF_CUDA_DMMA_16X8X8:
      return "dmma-16x8x8";
    case RF_CUDA_DMMA_8X8X4:
      return "dmma-8x8x4";
    default:
      return "simt";
  }
}

bool on_device(const void* ptr, int device) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, ptr) != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error
    return false;
  }
  return (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged) &&
         attributes.device == device;
}

// What a launch needs to know of a device and of each kernel instance on it, asked of the
// runtime once per process: a training loop launches the same kernel every step, and these
// queries are neither free nor allowed everywhere (e.g. inside some stream captures).
constexpr int kMaxDevices = 64;
struct DeviceInfo {
  int major = 0, minor = 0, multiprocessors = 0;
  std::atomic<int> occupancy[4][3];  // blocks per multiprocessor by dtype code and variant - 1; 0: not asked yet
};
DeviceInfo device_infos[kMaxDevices];  // static storage: zero-initialised
std::atomic<bool> device_known[kMaxDevices];
std::mutex device_info_mutex;

cudaError_t device_info(int device, DeviceInfo** info) {
  if (device < 0 || device >= kMaxDevices) return cudaErrorInvalidDevice;
  if (!device_known[device].load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(device_info_mutex);
    if (!device_known[device].load(std::memory_order_relaxed)) {
      DeviceInfo& d = device_infos[device];
      cudaError_t status = cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, device);
      if (status == cudaSuccess) status = cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, device);
      if (status == cudaSuccess)
        status = cudaDeviceGetAttribute(&d.multiprocessors, cudaDevAttrMultiProcessorCount, device);
      if (status != cudaSuccess) return status;
      device_known[device].store(true, std::memory_order_release);
    }
  }
  *info = &device_infos[device];
  return cudaSuccess;
}

cudaError_t cached_occupancy(DeviceInfo* info, int32_t dtype, int32_t variant, int* blocks) {
  std::atomic<int>& cached = info->occupancy[dtype & 3][(variant - 1) % 3];
  if (cached.load(std::memory_order_acquire) == 0) {
    std::lock_guard<std::mutex> lock(device_info_mutex);
    if (cached.load(std::memory_order_relaxed) == 0) {
      int found = 0;
      const cudaError_t status = dispatch(dtype, variant, Occupancy{&found});
      if (status != cudaSuccess) return status;
      cached.store(found > 1 ? found : 1, std::memory_order_release);
    }
  }
  *blocks = cached.load(std::memory_order_acquire);
  return cudaSuccess;
}

// Runs the update with `device` current, restoring the caller's device afterwards.
int syrk_on_device(const rf_matrix_view& z, const double* shift, double* gram, double* column_sums, int device,
                   cudaStream_t stream, int32_t variant, int64_t splits, bool check_pointers, int32_t* used_variant,
                   int64_t* used_splits, char* err, size_t err_len) {
  DeviceInfo* info = nullptr;
  cudaError_t status = device_info(device, &info);
  if (status != cudaSuccess) return fail(err, err_len, "cannot query the CUDA device", status);
  const int major = info->major, minor = info->minor, multiprocessors = info->multiprocessors;
  if (variant == RF_CUDA_AUTO) variant = best_variant(major);
  if ((variant == RF_CUDA_DMMA_16X8X8 && major < 9) || (variant == RF_CUDA_DMMA_8X8X4 && major < 8)) {
    std::snprintf(err, err_len, "variant %s needs a newer GPU than compute capability %d.%d", variant_name(variant),
                  major, minor);
    return 1;
  }
  const void* pointers[] = {z.data, gram, shift, column_sums};
  const char* names[] = {"z", "gram", "shift", "column_sums"};
  for (int n = 0; check_pointers && n < 4; ++n)
    if (pointers[n] != nullptr && !on_device(pointers[n], device)) {
      std::snprintf(err, err_len, "%s is not in the memory of CUDA device %d", names[n], device);
      return 1;
    }

  int per_multiprocessor = 0;
  status = cached_occupancy(info, z.dtype, variant, &per_multiprocessor);
  if (status != cudaSuccess) return fail(err, err_len, "cannot configure the CUDA SYRK kernel", status);
  if (triangle_tile_count((z.cols + kTile - 1) / kTile) > 0x7fffffff)
    return fail(err, err_len, "D is too large for one launch");
  const int64_t concurrent = static_cast<int64_t>(per_multiprocessor > 1 ? per_multiprocessor : 1) * multiprocessors;
  const Launch l{plan_launch(z, shift, gram, column_sums, splits, concurrent), stream};
  status = dispatch(z.dtype, variant, Launcher{&l});
  if (status != cudaSuccess) return fail(err, err_len, "the CUDA SYRK kernel failed to launch", status);
  if (used_variant) *used_variant = variant;
  if (used_splits) *used_splits = l.plan.splits;
  return 0;
}

}  // namespace
}  // namespace cuda_syrk
}  // namespace rankme_fast

extern "C" {

int rf_cuda_syrk_update(const rf_matrix_view* z, const double* shift, double* gram, double* column_sums,
                        int32_t device, void* stream, int32_t variant, int64_t splits, int32_t check_pointers,
                        int32_t* used_variant, int64_t* used_splits, char* err, size_t err_len) {
  using namespace rankme_fast;
  using namespace rankme_fast::cuda_syrk;
  if (!valid_view(z)) return fail(err, err_len, "invalid matrix view (null data, empty shape or unknown dtype)");
  if (!gram) return fail(err, err_len, "gram pointer is null");
  if (variant < RF_CUDA_AUTO || variant > RF_CUDA_SIMT) return fail(err, err_len, "unknown CUDA kernel variant");
  int previous = 0;
  cudaError_t status = cudaGetDevice(&previous);
  if (status == cudaSuccess && previous != device) status = cudaSetDevice(device);
  if (status != cudaSuccess) return fail(err, err_len, "CUDA is unavailable", status);
  const int result = syrk_on_device(rows_ascending(*z), shift, gram, column_sums, device,
                                    static_cast<cudaStream_t>(stream), variant, splits, check_pointers != 0,
                                    used_variant, used_splits, err, err_len);
  if (previous != device) cudaSetDevice(previous);
  return result;
}

}  // extern "C"
