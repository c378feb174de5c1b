// CUDA runtime, caching allocator and host<->device copies. The BlockCache tests (the allocator's
// bin policy over malloc) and the no-GPU error tests run everywhere; the rest need a GPU.
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "backends/cuda/caching_allocator.h"
#include "backends/cuda/runtime.h"
#include "cuda_test_util.h"

namespace encore::cuda {
namespace {

using test::gpu_available;

// ---- BlockCache over malloc (no GPU) ------------------------------------------------------------

// A raw allocator with a capacity, counting calls, standing in for cudaMalloc/cudaFree.
struct FakeDevice {
  std::size_t capacity = std::size_t{1} << 40;
  std::size_t used = 0;
  int allocs = 0, frees = 0;
  std::map<void*, std::size_t> blocks;

  BlockCache make_cache(BlockCache::BeforeRelease before_release = {}) {
    return BlockCache(
        [this](std::size_t bytes) -> void* {
          if (used + bytes > capacity) return nullptr;
          void* p = std::malloc(bytes);
          used += bytes;
          ++allocs;
          blocks[p] = bytes;
          return p;
        },
        [this](void* p, std::size_t bytes) {
          EXPECT_EQ(blocks[p], bytes);
          blocks.erase(p);
          used -= bytes;
          ++frees;
          std::free(p);
        },
        std::move(before_release));
  }
};

constexpr std::size_t kMiB = std::size_t{1} << 20;

TEST(BlockCache, SizeClasses) {
  EXPECT_EQ(BlockCache::size_class(0), 512u);
  EXPECT_EQ(BlockCache::size_class(1), 512u);
  EXPECT_EQ(BlockCache::size_class(512), 512u);
  EXPECT_EQ(BlockCache::size_class(513), 1024u);
  EXPECT_EQ(BlockCache::size_class(kMiB - 1), kMiB);  // still a small request: 512 B granularity
  EXPECT_EQ(BlockCache::size_class(kMiB), 2 * kMiB);  // large: 2 MiB granularity
  EXPECT_EQ(BlockCache::size_class(2 * kMiB), 2 * kMiB);
  EXPECT_EQ(BlockCache::size_class(2 * kMiB + 1), 4 * kMiB);
  EXPECT_EQ(BlockCache::size_class(std::numeric_limits<std::size_t>::max()), 0u);  // overflow
}

TEST(BlockCache, FreedBlocksAreReusedWithoutRawAllocation) {
  FakeDevice dev;
  BlockCache cache = dev.make_cache();
  void* a = cache.allocate(1000);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(cache.block_size(a), 1024u);
  EXPECT_TRUE(cache.deallocate(a));
  void* b = cache.allocate(900);  // same 1 KiB class
  EXPECT_EQ(b, a);
  EXPECT_EQ(dev.allocs, 1);
  EXPECT_EQ(cache.stats().cache_hits, 1u);
  void* c = cache.allocate(1500);  // another class: a new block
  EXPECT_NE(c, a);
  EXPECT_EQ(dev.allocs, 2);
  cache.deallocate(b);
  cache.deallocate(c);
}

TEST(BlockCache, SmallClassesMatchExactly) {
  FakeDevice dev;
  BlockCache cache = dev.make_cache();
  void* big = cache.allocate(1024);
  cache.deallocate(big);
  void* small = cache.allocate(512);
  EXPECT_NE(small, big);  // a cached 1 KiB block does not serve a 512 B request
  EXPECT_EQ(dev.allocs, 2);
  cache.deallocate(small);
}

TEST(BlockCache, LargeBlocksBestFitWithinAQuarter) {
  FakeDevice dev;
  BlockCache cache = dev.make_cache();
  void* ten = cache.allocate(10 * kMiB);
  cache.deallocate(ten);
  void* eight = cache.allocate(8 * kMiB);  // 10 MiB <= 8 MiB * 1.25: reused
  EXPECT_EQ(eight, ten);
  EXPECT_EQ(cache.block_size(eight), 10 * kMiB);
  cache.deallocate(eight);
  void* six = cache.allocate(6 * kMiB);  // 10 MiB > 7.5 MiB: a new block
  EXPECT_NE(six, ten);
  EXPECT_EQ(dev.allocs, 2);
  cache.deallocate(six);
}

TEST(BlockCache, StatisticsAndPeak) {
  FakeDevice dev;
  BlockCache cache = dev.make_cache();
  void* a = cache.allocate(3 * kMiB);  // 4 MiB block
  void* b = cache.allocate(100);       // 512 B block
  AllocatorStats s = cache.stats();
  EXPECT_EQ(s.allocated_bytes, 4 * kMiB + 512);
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_EQ(s.reserved_bytes, 4 * kMiB + 512);
  EXPECT_EQ(s.peak_allocated_bytes, 4 * kMiB + 512);
  EXPECT_EQ(s.raw_allocations, 2u);
  cache.deallocate(a);
  s = cache.stats();
  EXPECT_EQ(s.allocated_bytes, 512u);
  EXPECT_EQ(s.cached_bytes, 4 * kMiB);
  EXPECT_EQ(s.reserved_bytes, 4 * kMiB + 512);
  EXPECT_EQ(s.peak_allocated_bytes, 4 * kMiB + 512);
  cache.reset_peak();
  EXPECT_EQ(cache.stats().peak_allocated_bytes, 512u);
  cache.deallocate(b);
}

TEST(BlockCache, TrimReleasesOnlyCachedBlocks) {
  FakeDevice dev;
  BlockCache cache = dev.make_cache();
  void* a = cache.allocate(5000);
  void* b = cache.allocate(7000);
  cache.deallocate(a);
  EXPECT_EQ(cache.trim(), BlockCache::size_class(5000));
  EXPECT_EQ(dev.frees, 1);
  EXPECT_EQ(dev.blocks.count(b), 1u);  // the live block stays
  const AllocatorStats s = cache.stats();
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_EQ(s.reserved_bytes, BlockCache::size_class(7000));
  EXPECT_EQ(s.raw_frees, 1u);
  cache.deallocate(b);
}

TEST(BlockCache, OutOfMemoryTrimsAndRetriesOnce) {
  FakeDevice dev;
  dev.capacity = 6 * kMiB;
  BlockCache cache = dev.make_cache();
  void* a = cache.allocate(2 * kMiB);
  cache.deallocate(a);                 // 2 MiB cached
  void* b = cache.allocate(5 * kMiB);  // 6 MiB block: fits only once the cache is released
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(cache.stats().oom_retries, 1u);
  EXPECT_EQ(cache.stats().cached_bytes, 0u);
  EXPECT_EQ(cache.allocate(kMiB), nullptr);  // nothing cached to release: fails
  cache.deallocate(b);
}

TEST(BlockCache, CachingOffReleasesAtOnce) {
  FakeDevice dev;
  int releases = 0;
  BlockCache cache(
      [&dev](std::size_t bytes) -> void* {
        ++dev.allocs;
        return std::malloc(bytes);
      },
      [&dev](void* p, std::size_t) {
        ++dev.frees;
        std::free(p);
      },
      [&releases] { return ++releases, true; });
  cache.deallocate(cache.allocate(4096));  // cached
  cache.set_caching(false);                // releases what is cached
  EXPECT_EQ(dev.frees, 1);
  EXPECT_EQ(releases, 1);
  cache.deallocate(cache.allocate(4096));
  EXPECT_EQ(dev.allocs, 2);
  EXPECT_EQ(dev.frees, 2);
  EXPECT_EQ(releases, 2);
  EXPECT_EQ(cache.stats().reserved_bytes, 0u);
}

// When blocks may not be released now (CUDA: this thread records a graph, or the device sync
// failed), trimming keeps them cached and counted, and an out-of-memory retry finds nothing.
TEST(BlockCache, BlocksStayCachedWhenTheyMayNotBeReleased) {
  FakeDevice dev;
  dev.capacity = 3 * kMiB;
  bool may = false;
  int asked = 0;
  BlockCache cache = dev.make_cache([&] { return ++asked, may; });
  void* a = cache.allocate(2 * kMiB);
  cache.deallocate(a);
  EXPECT_EQ(cache.trim(), 0u);
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(dev.frees, 0);
  EXPECT_EQ(cache.stats().cached_bytes, 2 * kMiB);
  EXPECT_EQ(cache.stats().reserved_bytes, 2 * kMiB);
  EXPECT_EQ(cache.allocate(3 * kMiB), nullptr);  // the retry could not trim
  may = true;
  EXPECT_EQ(cache.trim(), 2 * kMiB);
  EXPECT_EQ(dev.frees, 1);
  EXPECT_EQ(cache.stats().reserved_bytes, 0u);
  // Caching off: a block that may not be released now is cached instead of leaked.
  cache.set_caching(false);
  may = false;
  void* b = cache.allocate(kMiB);
  cache.deallocate(b);
  EXPECT_EQ(cache.stats().cached_bytes, 2 * kMiB);  // kMiB is a large request: a 2 MiB class
  may = true;
  EXPECT_EQ(cache.trim(), 2 * kMiB);
}

TEST(BlockCache, ForeignPointersAreIgnored) {
  FakeDevice dev;
  BlockCache cache = dev.make_cache();
  int local = 0;
  EXPECT_FALSE(cache.deallocate(&local));
  EXPECT_FALSE(cache.deallocate(nullptr));
  void* a = cache.allocate(10);
  EXPECT_TRUE(cache.deallocate(a));
  EXPECT_FALSE(cache.deallocate(a));  // double free: ignored
}

TEST(BlockCache, DestructorReturnsCachedBlocks) {
  FakeDevice dev;
  {
    BlockCache cache = dev.make_cache();
    for (int i = 0; i < 5; ++i) cache.deallocate(cache.allocate(static_cast<std::size_t>(i + 1) * 10000));
  }
  EXPECT_EQ(dev.frees, dev.allocs);
  EXPECT_TRUE(dev.blocks.empty());
}

TEST(BlockCache, ConcurrentUse) {
  FakeDevice dev;  // not thread-safe itself: BlockCache makes its raw calls under its lock
  BlockCache cache = dev.make_cache();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&cache, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      std::vector<void*> live;
      for (int i = 0; i < 2000; ++i) {
        if (live.empty() || rng() % 2 == 0) {
          void* p = cache.allocate(rng() % (3 * kMiB));
          ASSERT_NE(p, nullptr);
          std::memset(p, t, 16);
          live.push_back(p);
        } else {
          EXPECT_TRUE(cache.deallocate(live.back()));
          live.pop_back();
        }
      }
      for (void* p : live) EXPECT_TRUE(cache.deallocate(p));
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(cache.stats().allocated_bytes, 0u);
}

// ---- registration and errors without a GPU -------------------------------------------------------

TEST(CudaRuntimeNoGpu, AllocatorIsRegisteredAtLoadWithoutTouchingTheDriver) {
  // The library's static initialiser registered it; nothing has called CudaRuntime::get yet.
  EXPECT_EQ(&allocator_for(DeviceType::CUDA), &device_allocator());
  ensure_registered();  // idempotent
  EXPECT_EQ(&allocator_for(DeviceType::CUDA), &device_allocator());
}

TEST(CudaRuntimeNoGpu, NonCudaDeviceIsRejected) {
  try {
    CudaRuntime::get(Device::cpu());
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
  }
}

TEST(CudaRuntimeNoGpu, MissingGpuIsABackendError) {
  if (gpu_available()) GTEST_SKIP() << "a CUDA GPU is present";
  EXPECT_EQ(CudaRuntime::device_count(), 0);
  try {
    CudaRuntime::get(Device::cuda(0));
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::backend) << e.what();
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("driver") != std::string::npos || msg.find("device") != std::string::npos) << msg;
  }
  // Through the core: a clear backend error, not "no backend in this build".
  try {
    Tensor::empty({4}, DType::F32, Device::cuda(0));
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::backend) << e.what();
  }
}

// ---- with a GPU -----------------------------------------------------------------------------------

TEST(CudaRuntime, BadOrdinalNamesTheDeviceCount) {
  ENCORE_REQUIRE_GPU();
  const int count = CudaRuntime::device_count();
  try {
    CudaRuntime::get(Device::cuda(count));
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    const std::string expected = "cuda:" + std::to_string(count) + " requested but " + std::to_string(count) +
                                 (count == 1 ? " CUDA device is present" : " CUDA devices are present");
    EXPECT_EQ(std::string(e.what()), expected);
  }
}

TEST(CudaRuntime, OneRuntimePerDeviceFromAnyThread) {
  ENCORE_REQUIRE_GPU();
  CudaRuntime& rt = test::runtime();
  EXPECT_GE(rt.sm(), 50);
  EXPECT_FALSE(rt.name().empty());
  EXPECT_NE(rt.stream(), nullptr);
  EXPECT_NE(rt.cublas(), nullptr);
  EXPECT_NE(rt.cublaslt(), nullptr);
  EXPECT_NE(rt.workspace(), nullptr);
  EXPECT_EQ(CudaRuntime::find(0), &rt);
  std::vector<CudaRuntime*> seen(8, nullptr);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < seen.size(); ++i)
    threads.emplace_back([&seen, i] { seen[i] = &CudaRuntime::get(Device::cuda(0)); });
  for (auto& t : threads) t.join();
  for (CudaRuntime* p : seen) EXPECT_EQ(p, &rt);
  rt.synchronize();
}

// A process that uses only cuda:1 must not make a context on GPU 0 (hundreds of MB there): the
// device guards restore the thread's default device only where it already has a context. Each
// ctest test is a process of its own, so GPU 0 starts without one here unless the driver made it.
TEST(CudaRuntime, UsingOnlyTheSecondDeviceLeavesTheFirstWithoutAContext) {
  ENCORE_REQUIRE_GPU();
  if (CudaRuntime::device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  if (primary_context_active(0)) GTEST_SKIP() << "GPU 0 already has a context in this process";
  std::vector<float> values(1000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
  const Tensor dev = Tensor::from_vector(values, Shape{1000}).to(Device::cuda(1));
  const Tensor back = dev.clone().to(Device::cpu());
  EXPECT_EQ(back.to_float_vector(), values);
  release_cached_memory(Device::cuda(1));  // the allocator's own device switches (free, sync)
  EXPECT_TRUE(primary_context_active(1));
  EXPECT_FALSE(primary_context_active(0)) << "working on cuda:1 made a context on GPU 0";
}

TEST(CudaRuntime, RoundTripOfEveryDtype) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(7);
  // 0 bytes, odd sizes, and one above the pinned staging limit (the direct path).
  const std::int64_t big = static_cast<std::int64_t>(CudaRuntime::kStagingLimit) + 12345;
  for (int d = 0; d < kNumDTypes; ++d) {
    const auto dtype = static_cast<DType>(d);
    for (const std::int64_t bytes : {std::int64_t{0}, std::int64_t{1}, std::int64_t{24}, std::int64_t{4099}, big}) {
      const std::int64_t n = bytes / static_cast<std::int64_t>(dtype_size(dtype));
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " x " + std::to_string(n));
      Tensor host = Tensor::empty({n}, dtype);
      auto* bytes_ptr = static_cast<unsigned char*>(host.data());
      for (std::size_t i = 0; i < host.nbytes(); ++i)
        bytes_ptr[i] = dtype == DType::Bool ? static_cast<unsigned char>(rng() % 2) : static_cast<unsigned char>(rng());
      const Tensor dev = host.to(Device::cuda(0));
      EXPECT_EQ(dev.device(), Device::cuda(0));
      const Tensor dev2 = dev.clone();  // device -> device
      const Tensor back = dev2.to(Device::cpu());
      ASSERT_EQ(back.nbytes(), host.nbytes());
      EXPECT_EQ(std::memcmp(back.data(), host.data(), host.nbytes()), 0);
    }
  }
}

TEST(CudaRuntime, StridedViewsAndCopyFrom) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(3);
  const Tensor view = ref::random_strided({5, 6, 7}, DType::F32, rng);
  const Tensor dev = view.to(Device::cuda(0));  // made contiguous on the host first
  const Tensor back = dev.to(Device::cpu());
  EXPECT_EQ(back.to_float_vector(), view.to_float_vector());

  Tensor target = test::poisoned({5, 6, 7}, DType::F32);
  target.copy_from(view.contiguous());  // host -> device into an existing tensor
  Tensor host_out = Tensor::zeros({5, 6, 7}, DType::F32);
  host_out.copy_from(target);  // device -> host
  EXPECT_EQ(host_out.to_float_vector(), view.to_float_vector());

  const Tensor same_view = test::upload_view(view);  // the view itself on the device
  EXPECT_EQ(same_view.strides(), view.strides());
  EXPECT_EQ(same_view.offset_bytes(), view.offset_bytes());
}

// Strided views that live on the device (slices, transposes, broadcasts of a device tensor) are
// gathered and scattered by the device's copy kernel: contiguous(), clone(), to() and copy_from
// give the bytes the same views give on the host, for every element size, and a copy between two
// overlapping views of one buffer reads the source before writing.
TEST(CudaRuntime, DeviceViewsCopyLikeHostViews) {
  ENCORE_REQUIRE_GPU();
  const Device dev = test::runtime().device();
  std::mt19937 rng(21);
  auto same_bytes = [](const Tensor& a, const Tensor& b) {
    const Tensor x = a.to(Device::cpu()).contiguous(), y = b.to(Device::cpu()).contiguous();
    return x.shape() == y.shape() && x.dtype() == y.dtype() && std::memcmp(x.data(), y.data(), x.nbytes()) == 0;
  };
  for (int d = 0; d < kNumDTypes; ++d) {
    const auto dtype = static_cast<DType>(d);
    SCOPED_TRACE(dtype_name(dtype));
    Tensor host = Tensor::empty({5, 7, 3}, dtype);
    auto* raw = static_cast<unsigned char*>(host.data());
    for (std::size_t i = 0; i < host.nbytes(); ++i)
      raw[i] = dtype == DType::Bool ? static_cast<unsigned char>(rng() % 2) : static_cast<unsigned char>(rng());
    const Tensor on_dev = host.to(dev);
    const std::vector<std::pair<Tensor, Tensor>> views = {  // (host view, the same view on the device)
        {host.transpose(0, 2), on_dev.transpose(0, 2)},
        {host.slice(1, 2, 7, 2), on_dev.slice(1, 2, 7, 2)},
        {host.select(2, 1), on_dev.select(2, 1)},
        {host.slice(0, 1, 2).expand({4, 7, 3}), on_dev.slice(0, 1, 2).expand({4, 7, 3})},
        {host.slice(0, 0, 0), on_dev.slice(0, 0, 0)}};  // no elements
    for (const auto& [hv, dv] : views) {
      SCOPED_TRACE(dv.str());
      EXPECT_TRUE(same_bytes(dv.contiguous(), hv));
      EXPECT_EQ(dv.contiguous().device(), dev);
      EXPECT_TRUE(dv.clone().is_contiguous());
      EXPECT_TRUE(same_bytes(dv.clone(), hv));
      EXPECT_TRUE(same_bytes(dv.to(Device::cpu()), hv));
      if (hv.numel() > 0 && hv.rank() >= 2) {  // device view -> a strided host view of the same shape
        Shape swapped = hv.shape();
        std::swap(swapped[0], swapped[swapped.rank() - 1]);
        Tensor strided_target = Tensor::zeros(swapped, dtype).transpose(0, hv.rank() - 1);
        ASSERT_EQ(strided_target.shape(), hv.shape());
        ASSERT_FALSE(strided_target.is_contiguous());
        strided_target.copy_from(dv);
        EXPECT_TRUE(same_bytes(strided_target, hv));
      }
    }
    // Host data into a strided device view, and device view into device view.
    Tensor dst = Tensor::zeros({3, 7, 5}, dtype, dev);
    dst.transpose(0, 2).copy_from(host);  // scatter: dst = host^T
    EXPECT_TRUE(same_bytes(dst, host.transpose(0, 2)));
    Tensor dst2 = Tensor::zeros({5, 7, 3}, dtype, dev);
    dst2.transpose(0, 2).copy_from(dst);  // view <- contiguous on the same device: dst2 = host
    EXPECT_TRUE(same_bytes(dst2, host));
    // Overlapping views of one buffer: a square transpose in place.
    const Tensor square_host = host.select(2, 0).slice(1, 0, 5);  // [5, 5]
    Tensor square = square_host.to(dev);
    square.copy_from(square.transpose(0, 1));
    EXPECT_TRUE(same_bytes(square, square_host.transpose(0, 1)));
  }
}

TEST(CudaRuntime, CachingAllocatorReusesBlocks) {
  ENCORE_REQUIRE_GPU();
  CudaRuntime& rt = test::runtime();
  CachingAllocator& a = rt.allocator();
  if (!a.caching()) GTEST_SKIP() << "caching is off (ENCORE_CUDA_NO_CACHING=1)";
  // Blocks cached by earlier tests in this process would be equally good fits: start empty, so
  // the reused block must be the one just freed.
  (void)a.trim();
  void* p = a.allocate(1000);
  a.deallocate(p);
  const std::uint64_t raw = a.stats().raw_allocations;
  void* q = a.allocate(1000);
  EXPECT_EQ(q, p);
  EXPECT_EQ(a.stats().raw_allocations, raw);
  a.deallocate(q);
  {
    DeviceBuffer scratch = rt.scratch(3 << 20);
    DeviceBuffer moved = std::move(scratch);
    EXPECT_EQ(scratch.data(), nullptr);
    EXPECT_NE(moved.data(), nullptr);
    rt.memset(moved.data(), 0, moved.size());
  }
  rt.synchronize();
  (void)a.trim();
  EXPECT_EQ(a.stats().cached_bytes, 0u);
  EXPECT_EQ(a.stats().reserved_bytes, a.stats().allocated_bytes);
}

// memory_usage (the public face of the caching allocator's counters) follows device tensors; the
// peak holds after they are freed until reset_peak_memory.
TEST(CudaRuntime, MemoryUsageFollowsTensors) {
  ENCORE_REQUIRE_GPU();
  const Device dev = test::runtime().device();
  const Allocator::Usage before = memory_usage(dev);
  reset_peak_memory(dev);
  {
    const Tensor t = Tensor::empty({1 << 22}, DType::F32, dev);  // 16 MiB
    const Allocator::Usage live = memory_usage(dev);
    EXPECT_GE(live.allocated_bytes, before.allocated_bytes + (std::size_t{16} << 20));
    EXPECT_GE(live.reserved_bytes, live.allocated_bytes);
  }
  test::runtime().synchronize();
  const Allocator::Usage after = memory_usage(dev);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_GE(after.peak_allocated_bytes, before.allocated_bytes + (std::size_t{16} << 20));
  reset_peak_memory(dev);
  EXPECT_EQ(memory_usage(dev).peak_allocated_bytes, after.allocated_bytes);
  // A device never used has nothing allocated (and creates no runtime).
  EXPECT_EQ(memory_usage(Device::cuda(999)).allocated_bytes, 0u);
  EXPECT_EQ(release_cached_memory(Device::cuda(999)), 0u);
}

// What the cache keeps after tensors go is given back on request, and only that.
TEST(CudaRuntime, ReleaseCachedMemoryGivesBackWhatIsKept) {
  ENCORE_REQUIRE_GPU();
  const Device dev = test::runtime().device();
  const Tensor kept = Tensor::empty({1 << 20}, DType::F32, dev);  // live: stays
  { const Tensor gone = Tensor::empty({1 << 22}, DType::F32, dev); }  // 16 MiB, back to the cache
  const Allocator::Usage before = memory_usage(dev);
  ASSERT_GE(before.reserved_bytes - before.allocated_bytes, std::size_t{16} << 20);
  const std::size_t released = release_cached_memory(dev);
  const Allocator::Usage after = memory_usage(dev);
  EXPECT_EQ(released, before.reserved_bytes - before.allocated_bytes);
  EXPECT_EQ(after.reserved_bytes, after.allocated_bytes);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(release_cached_memory(dev), 0u);
  EXPECT_EQ(kept.numel(), 1 << 20);
}

TEST(CudaRuntime, OutOfMemoryNamesRequestAndFreeMemory) {
  ENCORE_REQUIRE_GPU();
  CudaRuntime& rt = test::runtime();
  const std::size_t huge = std::size_t{1} << 50;  // 1 PiB
  try {
    rt.allocator().allocate(huge);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::out_of_memory);
    const std::string msg = e.what();
    EXPECT_NE(msg.find(std::to_string(huge)), std::string::npos) << msg;
    EXPECT_NE(msg.find("free of"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
  }
  // The failure is not sticky: the device still works.
  const Tensor t = Tensor::zeros({16}, DType::F32).to(Device::cuda(0));
  EXPECT_EQ(t.to(Device::cpu()).to_float_vector(), std::vector<float>(16, 0.0f));
}

// Allocator::copy_within on CUDA: one batched, stream-ordered device copy of many regions; later
// work on the stream (the download) sees every region.
TEST(CudaRuntime, CopyWithinCopiesEveryRegionInStreamOrder) {
  ENCORE_REQUIRE_GPU();
  const Device dev = test::runtime().device();
  const std::int64_t n = 4096;
  Tensor host = Tensor::empty({n}, DType::F32);
  for (std::int64_t i = 0; i < n; ++i) host.data_ptr<float>()[i] = static_cast<float>(i);
  const Tensor src = host.to(dev);
  Tensor dst = Tensor::zeros({n}, DType::F32).to(dev);
  std::vector<Allocator::Region> regions;
  auto* d = static_cast<float*>(dst.data());
  const auto* s = static_cast<const float*>(src.data());
  for (std::int64_t i = 0; i + 7 < n; i += 16)  // 256 regions of 7 floats, reversed placement
    regions.push_back({d + (n - 16 - i), s + i, 7 * sizeof(float)});
  allocator_for(DeviceType::CUDA).copy_within(regions, dev);
  const Tensor back = dst.to(Device::cpu());
  for (std::int64_t i = 0; i + 7 < n; i += 16)
    for (std::int64_t j = 0; j < 16; ++j)
      ASSERT_EQ(back.data_ptr<float>()[n - 16 - i + j], j < 7 ? static_cast<float>(i + j) : 0.0f) << i << " " << j;
}

}  // namespace
}  // namespace encore::cuda
