// Device memory the kernels own themselves (decode attention's workspaces and counters, the GEMV's
// split buffers): long-lived, grown rarely, taken straight from cudaMalloc rather than from the
// CUDA backend's caching allocator, which sits above this layer. When the device is out of memory,
// most of it may be held in that cache, free but not returned: the backend registers a hook that
// returns the cached blocks of a device to the driver (CachingAllocator::trim), and device_malloc
// tries once more after it. Not while the caller's stream is being captured: the trim synchronises
// the device, which would invalidate the capture (encore's own recordings keep their blocks anyway).
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
/// blocks of that device (release_cached_hook) and tries once more, unless `stream` (the one the
/// buffer serves) is being captured. Returns the CUDA error.
inline cudaError_t device_malloc(void** ptr, std::size_t bytes, cudaStream_t stream) noexcept {
  const cudaError_t first = cudaMalloc(ptr, bytes);
  if (first != cudaErrorMemoryAllocation) return first;
  cudaGetLastError();  // not sticky: clear it before trying again
  const ReleaseCachedFn release = release_cached_hook().load(std::memory_order_acquire);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
    cudaGetLastError();
    return first;
  }
  int device = -1;
  if (release == nullptr || capture != cudaStreamCaptureStatusNone || cudaGetDevice(&device) != cudaSuccess)
    return first;
  release(device);
  const cudaError_t second = cudaMalloc(ptr, bytes);
  if (second != cudaSuccess) cudaGetLastError();
  return second;
}

template <typename T>
cudaError_t device_malloc(T** ptr, std::size_t bytes, cudaStream_t stream) noexcept {
  void* p = nullptr;
  const cudaError_t e = device_malloc(&p, bytes, stream);
  *ptr = static_cast<T*>(p);
  return e;
}

}  // namespace encore::cuda::kc
