// memory_usage / reset_peak_memory on the host: tensors count while they live, the peak survives
// their release until it is reset, and borrowed memory (Storage::borrow of a user buffer) is not
// encore's. The CUDA counterpart is CudaRuntime.MemoryUsageFollowsTensors.
#include <gtest/gtest.h>

#include <vector>

#include "encore/core/allocator.h"
#include "encore/core/tensor.h"

using namespace encore;

TEST(MemoryUsage, HostTensorsCountWhileTheyLive) {
  const Device cpu = Device::cpu();
  const Allocator::Usage before = memory_usage(cpu);
  EXPECT_EQ(before.reserved_bytes, before.allocated_bytes);  // the host allocator caches nothing
  reset_peak_memory(cpu);
  EXPECT_EQ(memory_usage(cpu).peak_allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(release_cached_memory(cpu), 0u);  // nothing is kept for reuse on the host
  {
    const Tensor a = Tensor::empty({1000, 1000}, DType::F32);  // 4 MB
    const Allocator::Usage live = memory_usage(cpu);
    EXPECT_GE(live.allocated_bytes, before.allocated_bytes + 4'000'000);
    EXPECT_GE(live.peak_allocated_bytes, live.allocated_bytes);
  }
  const Allocator::Usage after = memory_usage(cpu);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_GE(after.peak_allocated_bytes, before.allocated_bytes + 4'000'000);
  reset_peak_memory(cpu);
  EXPECT_EQ(memory_usage(cpu).peak_allocated_bytes, before.allocated_bytes);

  std::vector<float> user(1 << 20);
  {
    const Tensor borrowed = Tensor::from_storage(Storage::borrow(user.data(), user.size() * sizeof(float), cpu, nullptr),
                                                 0, {1 << 20}, {1}, DType::F32);
    EXPECT_EQ(memory_usage(cpu).allocated_bytes, before.allocated_bytes);
  }
}
