#include "device_memory.hpp"

#include "dhess/core/errors.hpp"

#ifdef DHESS_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace dhess {

#ifdef DHESS_WITH_CUDA

namespace {

double reserved_bytes(c10::DeviceIndex index, bool peak) {
  using c10::CachingAllocator::StatType;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  const auto& reserved = stats.reserved_bytes[static_cast<std::size_t>(StatType::AGGREGATE)];
  return static_cast<double>(peak ? reserved.peak : reserved.current);
}

}  // namespace

double device_peak_bytes_of(const torch::Device& device, const std::function<void()>& work) {
  const c10::DeviceIndex index = device.index();
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(index);
  const double before = reserved_bytes(index, false);
  work();
  c10::cuda::device_synchronize();
  const double peak = reserved_bytes(index, true) - before;
  c10::cuda::CUDACachingAllocator::emptyCache();
  return peak;
}

double device_free_bytes(const torch::Device& device) {
  const c10::cuda::CUDAGuard guard(device);
  std::size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess)
    throw ResourceError("cannot read the free memory of " + device.str() + " (cudaMemGetInfo failed)");
  return static_cast<double>(free);
}

#else

// A CPU build of LibTorch has no device memory: resolve_device() never hands it a GPU.
double device_peak_bytes_of(const torch::Device& device, const std::function<void()>&) {
  throw InternalError("device memory of " + device.str() + " asked of a build without CUDA");
}

double device_free_bytes(const torch::Device& device) {
  throw InternalError("device memory of " + device.str() + " asked of a build without CUDA");
}

#endif

}  // namespace dhess
