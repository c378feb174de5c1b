#include "backends/cuda/caching_allocator.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/runtime.h"
#include "core/check.h"
#include "core/device_lock.h"

namespace encore::cuda {

// ---- BlockCache ----------------------------------------------------------------------------------

BlockCache::BlockCache(RawAllocate allocate, RawFree free, BeforeRelease before_release)
    : raw_allocate_(std::move(allocate)), raw_free_(std::move(free)), before_release_(std::move(before_release)) {}

BlockCache::~BlockCache() { trim(); }

std::size_t BlockCache::size_class(std::size_t bytes) noexcept {
  if (bytes == 0) return kSmallRounding;
  const std::size_t unit = bytes < kLargeThreshold ? kSmallRounding : kLargeRounding;
  if (bytes > std::numeric_limits<std::size_t>::max() - (unit - 1)) return 0;
  return (bytes + unit - 1) / unit * unit;
}

void* BlockCache::allocate(std::size_t bytes) {
  const std::size_t size = size_class(bytes);
  if (size == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);

  // Small blocks: exact class only (a 1 KiB block is not worth splitting). Large: best fit with at
  // most 25 % slack, so that one long sequence does not pin a huge block for short ones forever.
  auto it = free_blocks_.lower_bound(size);
  const std::size_t limit = size < kLargeThreshold ? size : size + size / 4;
  if (it != free_blocks_.end() && it->first <= limit) {
    void* ptr = it->second;
    const std::size_t got = it->first;
    free_blocks_.erase(it);
    live_.emplace(ptr, got);
    stats_.cached_bytes -= got;
    stats_.allocated_bytes += got;
    stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    ++stats_.cache_hits;
    return ptr;
  }

  void* ptr = raw_allocate_(size);
  if (ptr == nullptr && !free_blocks_.empty()) {
    ++stats_.oom_retries;
    trim_locked();
    ptr = raw_allocate_(size);
  }
  if (ptr == nullptr) return nullptr;
  live_.emplace(ptr, size);
  ++stats_.raw_allocations;
  stats_.allocated_bytes += size;
  stats_.reserved_bytes += size;
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  return ptr;
}

bool BlockCache::deallocate(void* ptr) noexcept {
  if (ptr == nullptr) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = live_.find(ptr);
  if (it == live_.end()) return false;
  const std::size_t size = it->second;
  live_.erase(it);
  stats_.allocated_bytes -= size;
  if (!caching_ && (!before_release_ || before_release_())) {
    raw_free_(ptr, size);
    stats_.reserved_bytes -= size;
    ++stats_.raw_frees;
    return true;
  }
  free_blocks_.emplace(size, ptr);
  stats_.cached_bytes += size;
  return true;
}

std::size_t BlockCache::trim() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return trim_locked();
}

void BlockCache::set_caching(bool on) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    caching_ = on;
  }
  if (!on) trim();
}

bool BlockCache::caching() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return caching_;
}

std::size_t BlockCache::trim_locked() noexcept {
  if (free_blocks_.empty()) return 0;
  if (before_release_ && !before_release_()) return 0;  // not now: the blocks stay cached
  std::size_t released = 0;
  for (const auto& [size, ptr] : free_blocks_) {
    raw_free_(ptr, size);
    released += size;
    ++stats_.raw_frees;
  }
  free_blocks_.clear();
  stats_.cached_bytes -= released;
  stats_.reserved_bytes -= released;
  return released;
}

std::size_t BlockCache::block_size(const void* ptr) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = live_.find(ptr);
  return it == live_.end() ? 0 : it->second;
}

AllocatorStats BlockCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void BlockCache::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
}

// ---- CachingAllocator ----------------------------------------------------------------------------

namespace {

// The blocks freed on this thread go to `sink` while a capture holds them (see HeldBlocks).
thread_local const CachingAllocator* t_hold_owner = nullptr;
thread_local std::vector<void*>* t_hold_sink = nullptr;

void* cuda_malloc(int device, std::size_t bytes) {
  // A new block may be needed while this thread captures a CUDA graph: cudaMalloc is legal then only
  // in relaxed capture mode.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cudaThreadExchangeStreamCaptureMode(&mode);
  struct Restore {
    cudaStreamCaptureMode& m;
    ~Restore() { cudaThreadExchangeStreamCaptureMode(&m); }
  } restore{mode};
  DeviceGuard guard(device);
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: clear it, the caller trims and retries or reports
    return nullptr;
  }
  ENCORE_CUDA_CHECK(err);
  return ptr;
}

void cuda_free(int device, void* ptr) noexcept {
  // Failures here mean the context is already broken (or being torn down); nothing to recover.
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  if (previous != device) cudaSetDevice(device);
  if (cudaFree(ptr) != cudaSuccess) cudaGetLastError();
  if (previous != device) restore_device(previous);
}

// Freed blocks may still be read by queued kernels (stream order); the driver gets them back only
// once the device is idle. False when the wait failed (e.g. a stream of the device is being
// captured, where a device-wide sync is illegal): the caller keeps the blocks.
bool synchronize_device(int device) noexcept {
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  if (previous != device) cudaSetDevice(device);
  const bool ok = cudaDeviceSynchronize() == cudaSuccess;
  if (!ok) cudaGetLastError();
  if (previous != device) restore_device(previous);
  return ok;
}

std::string mib(std::size_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

}  // namespace

CachingAllocator::CachingAllocator(int device_ordinal)
    : device_(device_ordinal),
      cache_([device_ordinal](std::size_t bytes) { return cuda_malloc(device_ordinal, bytes); },
             [device_ordinal](void* ptr, std::size_t) { cuda_free(device_ordinal, ptr); },
             // Never while this thread records a graph (HeldBlocks): the sync would invalidate the
             // capture and the frees would be refused, so the blocks would be lost to the cache.
             // Nor while another thread works on the device (it may be recording a graph there):
             // the device-wide sync needs the device's lock, taken without waiting, as this runs
             // under the cache's mutex, which a thread holding the device lock may be waiting for.
             [this, device_ordinal] {
               if (t_hold_owner == this) return false;
               const auto lock = detail::try_lock_device(Device::cuda(device_ordinal));
               return lock.owns_lock() && synchronize_device(device_ordinal);
             }) {
  const char* env = std::getenv("ENCORE_CUDA_NO_CACHING");
  if (env != nullptr && std::string_view(env) == "1") cache_.set_caching(false);
}

void* CachingAllocator::allocate(std::size_t bytes) {
  void* ptr = cache_.allocate(bytes);
  if (ptr != nullptr) return ptr;
  std::size_t free_bytes = 0, total_bytes = 0;
  {
    DeviceGuard guard(device_);
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) cudaGetLastError();
  }
  const AllocatorStats s = cache_.stats();
  detail::fail(ErrorCode::out_of_memory,
               "cannot allocate {} bytes ({}) on cuda:{}: the device has {} free of {} total; encore holds {} "
               "in live tensors (its cache was emptied and the allocation retried)",
               bytes, mib(BlockCache::size_class(bytes)), device_, mib(free_bytes), mib(total_bytes),
               mib(s.allocated_bytes));
}

void CachingAllocator::deallocate(void* ptr) noexcept {
  if (t_hold_owner == this && t_hold_sink != nullptr && cache_.block_size(ptr) != 0) {
    try {
      t_hold_sink->push_back(ptr);
    } catch (...) {
      // Out of host memory: the block stays allocated (leaked) rather than going back to the cache,
      // as the graph being recorded keeps its address and every replay would write into whatever
      // tensor got the block next.
    }
    return;
  }
  cache_.deallocate(ptr);
}

HeldBlocks::HeldBlocks(CachingAllocator& allocator) : allocator_(&allocator) {
  ENCORE_CHECK(t_hold_owner == nullptr, invalid_argument, "HeldBlocks: this thread already holds freed blocks");
  t_hold_owner = allocator_, t_hold_sink = &blocks_;
}

void HeldBlocks::stop() noexcept {
  if (t_hold_sink == &blocks_) t_hold_owner = nullptr, t_hold_sink = nullptr;
}

HeldBlocks::~HeldBlocks() {
  stop();
  for (void* p : blocks_) allocator_->deallocate(p);
}

std::size_t CachingAllocator::trim() noexcept { return cache_.trim(); }

}  // namespace encore::cuda
