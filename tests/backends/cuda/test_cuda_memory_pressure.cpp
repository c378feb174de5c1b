// Memory pressure: a test binary of its own whose tests run alone (SERIAL in CMakeLists.txt), since
// they fill the device. Skips without a GPU.
#include <cuda_runtime_api.h>

#include <vector>

#include "backends/cuda/caching_allocator.h"
#include "backends/cuda/runtime.h"
#include "cuda_test_util.h"
#include "kernels/cuda/device_memory.h"

namespace encore::cuda {
namespace {

// The kernels' own buffers (decode attention's workspace, the GEMV's) come from cudaMalloc; when
// the device is full of blocks encore's cache keeps, they get that memory back instead of failing.
TEST(CudaRuntime, KernelBuffersGetTheCachedMemoryOnOutOfMemory) {
  ENCORE_REQUIRE_GPU();
  CudaRuntime& rt = test::runtime();
  if (!rt.allocator().caching()) GTEST_SKIP() << "caching is off (ENCORE_CUDA_NO_CACHING)";
  const Device dev = rt.device();
  release_cached_memory(dev);
  {
    DeviceGuard guard(dev.index);
    std::size_t free_start = 0, total_start = 0;
    ASSERT_EQ(cudaMemGetInfo(&free_start, &total_start), cudaSuccess);
    if (free_start < (std::size_t{2} << 30)) GTEST_SKIP() << "less than 2 GiB free on the device";
  }
  std::vector<void*> blocks;  // fill the device with 1 GiB blocks, then free them into the cache
  for (;;) {
    try {
      blocks.push_back(rt.allocator().allocate(std::size_t{1} << 30));
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), ErrorCode::out_of_memory) << e.what();
      break;
    }
  }
  ASSERT_FALSE(blocks.empty());
  for (void* p : blocks) rt.allocator().deallocate(p);
  const Allocator::Usage cached = memory_usage(dev);
  ASSERT_GE(cached.reserved_bytes - cached.allocated_bytes, blocks.size() << 30);
  DeviceGuard guard(dev.index);
  std::size_t free_bytes = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  void* p = nullptr;
  const std::size_t want = free_bytes + (std::size_t{512} << 20);  // more than the driver has free
  ASSERT_EQ(kc::device_malloc(&p, want, rt.stream()), cudaSuccess) << "the cache was not released";
  EXPECT_EQ(memory_usage(dev).reserved_bytes, memory_usage(dev).allocated_bytes);  // trimmed
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

}  // namespace
}  // namespace encore::cuda
