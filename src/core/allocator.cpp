#include "encore/core/allocator.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/check.h"
#include "core/device_lock.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace encore {
namespace {

#if defined(__linux__)
#ifdef MADV_PAGEOUT
constexpr int kMadvPageout = MADV_PAGEOUT;
#else
constexpr int kMadvPageout = 21;  // Linux 5.4's value, for older C library headers
#endif
#endif

class CpuAllocator final : public Allocator {
 public:
  void* allocate(std::size_t bytes, std::size_t alignment, Device) override {
    // aligned_alloc needs a size that is a multiple of the alignment; round up with overflow check.
    std::size_t rounded = 0;
    ENCORE_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0, invalid_argument,
                 "alignment {} is not a power of two", alignment);
    ENCORE_CHECK(!__builtin_add_overflow(bytes == 0 ? 1 : bytes, alignment - 1, &rounded), out_of_memory,
                 "cannot allocate {} bytes on the host: size overflows", bytes);
    rounded &= ~(alignment - 1);
    void* p = std::aligned_alloc(alignment, rounded);
    ENCORE_CHECK(p != nullptr, out_of_memory, "cannot allocate {} bytes on the host", bytes);
    const std::size_t now = allocated_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    std::size_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    return p;
  }
  void deallocate(void* ptr, std::size_t bytes, Device) noexcept override {
    std::free(ptr);
    if (ptr != nullptr) allocated_.fetch_sub(bytes, std::memory_order_relaxed);
  }
  Usage usage(Device) const override {
    const std::size_t a = allocated_.load(std::memory_order_relaxed);
    return Usage{a, a, std::max(a, peak_.load(std::memory_order_relaxed))};
  }
  void reset_peak(Device) override { peak_.store(allocated_.load(std::memory_order_relaxed), std::memory_order_relaxed); }

 private:
  // Requested bytes of live host tensors and scratch (memory maps and user buffers are not ours).
  std::atomic<std::size_t> allocated_{0}, peak_{0};
  void copy(void* dst, Device, const void* src, Device, std::size_t bytes) override {
    if (bytes != 0) std::memcpy(dst, src, bytes);
  }
};

// Constant-initialised, so a backend registering from another translation unit's static
// initialiser can never be overwritten by this one's (initialisation order across files is unspecified).
constinit std::array<Allocator*, 2> g_allocators{nullptr, nullptr};

}  // namespace

Allocator& cpu_allocator() {
  static CpuAllocator instance;
  return instance;
}

Allocator& allocator_for(DeviceType type) {
  if (type == DeviceType::CPU) return cpu_allocator();
  Allocator* a = g_allocators[static_cast<std::size_t>(type)];
  ENCORE_CHECK(a != nullptr, unsupported,
               "no backend for device type '{}' is available in this build (compiled backends: cpu{})",
               type == DeviceType::CUDA ? "cuda" : "cpu", g_allocators[1] ? ", cuda" : "");
  return *a;
}

Allocator::Usage Allocator::usage(Device) const { return {}; }
void Allocator::reset_peak(Device) {}
std::size_t Allocator::release_cached(Device) { return 0; }

Allocator::Usage memory_usage(Device device) { return allocator_for(device.type).usage(device); }
void reset_peak_memory(Device device) { allocator_for(device.type).reset_peak(device); }
std::size_t release_cached_memory(Device device) {
  const auto lock = detail::lock_device(device);  // the release syncs the device: not during a recording
  return allocator_for(device.type).release_cached(device);
}

void register_allocator(DeviceType type, Allocator* allocator) {
  if (type == DeviceType::CPU) return;  // the host allocator is fixed
  g_allocators[static_cast<std::size_t>(type)] = allocator;
}

std::shared_ptr<Storage> Storage::allocate(std::size_t bytes, Device device, std::size_t alignment) {
  Allocator& a = allocator_for(device.type);
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = a.allocate(bytes, alignment, device);
  s->bytes_ = bytes;
  s->device_ = device;
  s->allocator_ = &a;
  return s;
}

std::shared_ptr<Storage> Storage::borrow(void* data, std::size_t bytes, Device device,
                                         std::shared_ptr<const void> owner) {
  ENCORE_CHECK(data != nullptr || bytes == 0, invalid_argument,
               "cannot wrap a null pointer as {} bytes of storage", bytes);
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->bytes_ = bytes;
  s->device_ = device;
  s->owner_ = std::move(owner);
  return s;
}

std::shared_ptr<Storage> Storage::borrow_file_mapping(void* data, std::size_t bytes, std::shared_ptr<const void> owner) {
  std::shared_ptr<Storage> s = borrow(data, bytes, Device::cpu(), std::move(owner));
  s->file_mapping_ = true;
  return s;
}

std::size_t Storage::release_pages(const void* begin, std::size_t bytes) const noexcept {
#if defined(__linux__)
  if (!file_mapping_ || bytes == 0 || data_ == nullptr) return 0;
  const auto lo = reinterpret_cast<std::uintptr_t>(begin), base = reinterpret_cast<std::uintptr_t>(data_);
  if (lo < base || lo - base > bytes_ || bytes > bytes_ - (lo - base)) return 0;  // not inside the mapping
  const long page_size = ::sysconf(_SC_PAGESIZE);
  if (page_size <= 0) return 0;
  const auto page = static_cast<std::uintptr_t>(page_size);
  const std::uintptr_t first = (lo + page - 1) / page * page, last = (lo + bytes) / page * page;  // whole pages
  if (last <= first) return 0;
  // MADV_PAGEOUT (Linux 5.4) keeps contents, unlike MADV_DONTNEED, which would drop the pages a
  // caller wrote to in this copy-on-write mapping.
  if (::madvise(reinterpret_cast<void*>(first), last - first, kMadvPageout) != 0) return 0;
  return last - first;
#else
  (void)begin;
  (void)bytes;
  return 0;
#endif
}

Storage::~Storage() {
  if (allocator_ != nullptr) allocator_->deallocate(data_, bytes_, device_);
}

void Allocator::copy_within(std::span<const Region> regions, Device device) {
  for (const Region& r : regions) copy(r.dst, device, r.src, device, r.bytes);
}

void Allocator::copy_view(const Tensor&, const Tensor&, Device device) {
  detail::fail(ErrorCode::unsupported, "copying strided views on {} is not supported by its allocator", device.str());
}

}  // namespace encore
