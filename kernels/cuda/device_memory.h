// Device memory the kernels own themselves (decode attention's workspaces and counters, the GEMV's
// split buffers): long-lived, grown rarely, taken straight from cudaMalloc rather than from the
// CUDA backend's caching allocator, which sits above this layer. When the device is out of memory,
// most of it may be held in that cache, free but not returned: the backend registers a hook that
// returns the cached blocks of a device to the driver (CachingAllocator::trim, which keeps them
// while a stream is being captured), and device_malloc tries once more after it.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>

namespace encore::cuda::kc {

using ReleaseCachedFn = void (*)(int device) noexcept;

/// The hook device_malloc calls on out-of-memory (null: none registered).
inline std::atomic<ReleaseCachedFn>& release_cached_hook() noexcept {
  static std::atomic<ReleaseCachedFn> hook{nullptr};
  return hook;
}

/// cudaMalloc on the current device; on cudaErrorMemoryAllocation, releases the backend's cached
/// blocks of that device (release_cached_hook) and tries once more. Returns the CUDA error.
inline cudaError_t device_malloc(void** ptr, std::size_t bytes) noexcept {
  const cudaError_t first = cudaMalloc(ptr, bytes);
  if (first != cudaErrorMemoryAllocation) return first;
  cudaGetLastError();  // not sticky: clear it before trying again
  const ReleaseCachedFn release = release_cached_hook().load(std::memory_order_acquire);
  int device = -1;
  if (release == nullptr || cudaGetDevice(&device) != cudaSuccess) return first;
  release(device);
  const cudaError_t second = cudaMalloc(ptr, bytes);
  if (second != cudaSuccess) cudaGetLastError();
  return second;
}

template <typename T>
cudaError_t device_malloc(T** ptr, std::size_t bytes) noexcept {
  void* p = nullptr;
  const cudaError_t e = device_malloc(&p, bytes);
  *ptr = static_cast<T*>(p);
  return e;
}

}  // namespace encore::cuda::kc
