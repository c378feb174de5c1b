// encore — memory allocation and shared storage.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>

#include "encore/core/device.h"

namespace encore {

class Tensor;

/// Default alignment of encore's host allocations: one cache line, enough for AVX-512 loads.
inline constexpr std::size_t kDefaultAlignment = 64;

/// Allocates raw memory on one kind of device. Backends register one per device type.
class Allocator {
 public:
  virtual ~Allocator() = default;
  /// Returns `bytes` bytes (at least `alignment`-aligned) on `device`, or throws
  /// Error(out_of_memory) naming the size. A request of 0 bytes returns a valid unique pointer.
  virtual void* allocate(std::size_t bytes, std::size_t alignment, Device device) = 0;
  /// Frees memory returned by allocate. Never throws.
  virtual void deallocate(void* ptr, std::size_t bytes, Device device) noexcept = 0;
  /// Copies `bytes` between two buffers, either of which may be on this allocator's device or on
  /// the host. Blocks until the copy is complete.
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device,
                    std::size_t bytes) = 0;

  /// One region of copy_within.
  struct Region {
    void* dst = nullptr;
    const void* src = nullptr;
    std::size_t bytes = 0;
  };
  /// Copies many non-overlapping regions within `device`'s memory. Ordered like the device's
  /// kernels: after the work queued before it, before the work queued after it; it need not block
  /// the caller (CUDA queues one batched copy on the device's stream). Regions must not overlap
  /// one another (their order inside the batch is unspecified). The default loops over copy().
  virtual void copy_within(std::span<const Region> regions, Device device);
  /// Copies the elements of `src` into `dst`: the same shape and dtype, both on this allocator's
  /// `device`, any strides (views made by slice, transpose, expand...), not overlapping. Blocks
  /// until the copy is complete. Tensor::copy_from (and so contiguous(), clone() and to()) uses it
  /// for strided views on a device, which only the device's own kernels can gather. The default
  /// throws Error(unsupported).
  virtual void copy_view(const Tensor& dst, const Tensor& src, Device device);

  /// Memory this allocator holds on one device.
  struct Usage {
    std::size_t allocated_bytes = 0;       ///< handed out to tensors and scratch, not yet freed
    std::size_t reserved_bytes = 0;        ///< allocated + kept for reuse (what the system gave us)
    std::size_t peak_allocated_bytes = 0;  ///< the most allocated_bytes since the last reset_peak
  };
  /// The counters of `device` (CUDA: the caching allocator, sizes rounded to its size classes;
  /// zeros for a device not used yet; CPU: tensors, plan arenas and scratch, not memory-mapped
  /// weights or the CPU backend's packed weight copies). The default keeps none and returns zeros.
  virtual Usage usage(Device device) const;
  /// Starts a new peak at the current allocated_bytes. The default does nothing.
  virtual void reset_peak(Device device);
  /// Gives the memory kept for reuse on `device` back to the system (CUDA: the caching
  /// allocator's free blocks, after the device's queued work) and returns how many bytes. The
  /// default keeps nothing and returns 0.
  virtual std::size_t release_cached(Device device);
};

/// The process-wide aligned host allocator.
Allocator& cpu_allocator();

/// The allocator registered for `type` (the CPU's is always there). Throws Error(unsupported)
/// when this build has no backend for the device type.
Allocator& allocator_for(DeviceType type);

/// What encore's allocator holds on `device` (Allocator::usage): e.g. the peak device memory of a
/// workload is memory_usage(d).peak_allocated_bytes after reset_peak_memory(d). Throws
/// Error(unsupported) for a device type this build has no backend for.
Allocator::Usage memory_usage(Device device);
void reset_peak_memory(Device device);
/// Gives back the memory encore keeps for reuse on `device` (Allocator::release_cached), e.g.
/// after VitGpt2::release_plans() or destroying plans, so that other work or processes can have it;
/// returns the bytes released (memory_usage(d).reserved_bytes drops by as much). Memory still
/// in use by tensors and plans is not touched.
std::size_t release_cached_memory(Device device);

/// Registers the allocator of a backend (done once by the backend; not thread-safe against
/// concurrent allocation). Passing nullptr unregisters it.
void register_allocator(DeviceType type, Allocator* allocator);

/// A block of memory shared by tensors: owns it (through an allocator) or borrows it (a memory
/// map, a user buffer) and keeps the lender alive through `owner`.
class Storage {
 public:
  /// Allocates `bytes` on `device` through its registered allocator.
  static std::shared_ptr<Storage> allocate(std::size_t bytes, Device device,
                                           std::size_t alignment = kDefaultAlignment);
  /// Borrows `bytes` at `data`; `owner` (may be empty) is held until the storage dies.
  static std::shared_ptr<Storage> borrow(void* data, std::size_t bytes, Device device,
                                         std::shared_ptr<const void> owner);
  /// Borrows a read-write private file mapping of `bytes` at `data` on the CPU (as borrow()), so
  /// that release_pages() may hand its pages back to the OS. SafetensorsFile::open makes these.
  static std::shared_ptr<Storage> borrow_file_mapping(void* data, std::size_t bytes,
                                                      std::shared_ptr<const void> owner);

  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  void* data() const noexcept { return data_; }
  std::size_t bytes() const noexcept { return bytes_; }
  Device device() const noexcept { return device_; }
  /// True when this storage allocated its memory (false for borrowed memory such as an mmap).
  bool owns_memory() const noexcept { return allocator_ != nullptr; }
  /// True for storage made by borrow_file_mapping().
  bool is_file_mapping() const noexcept { return file_mapping_; }

  /// For a file mapping: asks the OS to reclaim the pages lying wholly inside [begin, begin +
  /// bytes) (Linux MADV_PAGEOUT), e.g. once a weight has been repacked and only the packed copy is
  /// read. The pages leave the process's resident set; their content never changes, and the next
  /// access reads them back (from the file, or from swap for pages that were written to). Returns
  /// the bytes advised: 0 for other storage, a range outside the mapping, or an OS without the
  /// call. Never throws.
  std::size_t release_pages(const void* begin, std::size_t bytes) const noexcept;

 private:
  Storage() = default;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Device device_{};
  Allocator* allocator_ = nullptr;
  bool file_mapping_ = false;
  std::shared_ptr<const void> owner_;
};

}  // namespace encore
