// Caching device allocator: cudaMalloc is slow and synchronises the device, so freed blocks are
// kept in size-class bins and handed out again without a driver call.
//
// Stream-ordered by construction: every kernel of a runtime runs on its one stream, so a block
// freed on the host while a kernel still reads it can only be reused by work queued later on the
// same stream. (Work on another stream must synchronise before freeing its memory.)
//
// The policy lives in BlockCache, which takes the raw allocate/free functions as parameters, so the
// bin logic is unit-tested on the CPU with malloc (tests/backends/cuda/test_cuda_runtime.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace encore::cuda {

/// Counters of one allocator. Sizes are of blocks (requests rounded to their size class).
struct AllocatorStats {
  std::size_t allocated_bytes = 0;       ///< in blocks handed out and not yet freed
  std::size_t cached_bytes = 0;          ///< in free blocks kept for reuse
  std::size_t reserved_bytes = 0;        ///< allocated + cached: what the driver has given us
  std::size_t peak_allocated_bytes = 0;  ///< highest allocated_bytes so far (see reset_peak)
  std::uint64_t raw_allocations = 0;     ///< successful calls of the raw allocator
  std::uint64_t raw_frees = 0;
  std::uint64_t cache_hits = 0;          ///< requests served from a bin
  std::uint64_t oom_retries = 0;         ///< raw failures answered by trim() and a second try
};

/// The bins of a caching allocator, independent of CUDA.
class BlockCache {
 public:
  /// Returns `bytes` of raw memory, or nullptr when out of memory (other failures may throw).
  using RawAllocate = std::function<void*(std::size_t bytes)>;
  /// Releases a block returned by RawAllocate; must not throw.
  using RawFree = std::function<void(void* ptr, std::size_t bytes)>;
  /// Called once before blocks are released (CUDA: wait until no queued kernel can still use
  /// them). Returns false when nothing may be released now (CUDA: this thread is recording a
  /// graph, or the wait failed): the blocks then stay cached.
  using BeforeRelease = std::function<bool()>;

  /// Requests below kLargeThreshold round up to kSmallRounding, larger ones to kLargeRounding
  /// (so that the large blocks of varying sequence lengths still share bins).
  static constexpr std::size_t kSmallRounding = 512;
  static constexpr std::size_t kLargeThreshold = std::size_t{1} << 20;
  static constexpr std::size_t kLargeRounding = std::size_t{2} << 20;

  BlockCache(RawAllocate allocate, RawFree free, BeforeRelease before_release = {});
  /// Frees the cached blocks; blocks still handed out are left to their owners (leaked).
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  /// The block size a request of `bytes` gets (0 bytes -> kSmallRounding); 0 when the rounded
  /// size would overflow.
  static std::size_t size_class(std::size_t bytes) noexcept;

  /// A block of at least `bytes`: a cached one of the same class (large requests: the smallest
  /// cached block within 25 % of the class), else a new raw block; when the raw allocator fails,
  /// all cached blocks are released and it is tried once more. nullptr when that fails too.
  void* allocate(std::size_t bytes);
  /// Returns a block to its bin. False (and nothing done) for a pointer this cache did not hand out.
  bool deallocate(void* ptr) noexcept;
  /// Releases every cached block to the raw allocator; returns the bytes released.
  std::size_t trim() noexcept;
  /// With caching off, freed blocks go straight back to the raw allocator (so that
  /// compute-sanitizer sees every buffer's real extent); on by default.
  void set_caching(bool on);
  bool caching() const;
  /// The block size behind a live pointer, 0 when unknown.
  std::size_t block_size(const void* ptr) const;

  AllocatorStats stats() const;
  void reset_peak();

 private:
  std::size_t trim_locked() noexcept;

  RawAllocate raw_allocate_;
  RawFree raw_free_;
  BeforeRelease before_release_;
  bool caching_ = true;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> free_blocks_;   // size -> block
  std::unordered_map<const void*, std::size_t> live_;  // block -> size
  AllocatorStats stats_;
};

/// The caching allocator of one CUDA device (BlockCache over cudaMalloc/cudaFree).
class CachingAllocator {
 public:
  explicit CachingAllocator(int device_ordinal);

  /// Throws Error(out_of_memory) naming the request and the device's free/total memory when
  /// even a trimmed cache cannot get the block, Error(backend) on other CUDA failures.
  void* allocate(std::size_t bytes);
  /// Pointers this allocator did not hand out are ignored.
  void deallocate(void* ptr) noexcept;
  /// Returns the cached blocks to the driver (after synchronising the device).
  std::size_t trim() noexcept;
  /// False when the environment sets ENCORE_CUDA_NO_CACHING=1 (for compute-sanitizer runs): every
  /// free then returns the block to the driver.
  bool caching() const { return cache_.caching(); }
  AllocatorStats stats() const { return cache_.stats(); }
  void reset_peak() { cache_.reset_peak(); }

 private:
  int device_;
  BlockCache cache_;
};

/// While started (constructed) on a thread, the blocks that thread frees through `allocator` are
/// kept back instead of returning to the cache; they go back when the HeldBlocks is destroyed.
/// A CUDA graph captured meanwhile addresses its scratch blocks at every replay, so they must not be
/// handed to anyone else while the graph lives. One hold per thread at a time.
class HeldBlocks {
 public:
  explicit HeldBlocks(CachingAllocator& allocator);
  ~HeldBlocks();
  HeldBlocks(const HeldBlocks&) = delete;
  HeldBlocks& operator=(const HeldBlocks&) = delete;
  /// Ends the capture of freed blocks (those held so far stay held until destruction).
  void stop() noexcept;
  std::size_t size() const noexcept { return blocks_.size(); }

 private:
  CachingAllocator* allocator_;
  std::vector<void*> blocks_;
};

}  // namespace encore::cuda
