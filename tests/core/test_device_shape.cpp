#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/device_lock.h"
#include "encore/core/device.h"
#include "encore/core/error.h"
#include "encore/core/shape.h"

using namespace encore;

TEST(Device, ParsesAcceptedForms) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:0"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:13"), Device::cuda(13));
  EXPECT_EQ(Device::cuda(2).str(), "cuda:2");
  EXPECT_EQ(Device::cpu().str(), "cpu");
}

TEST(Device, RejectsEverythingElse) {
  for (const char* bad : {"", "CPU", "gpu", "cuda:", "cuda:-1", "cuda:1x", "cuda:99999", "cuda: 1", "cuda:+1",
                          "cpu:0", " cpu", "cuda:1024", "metal"}) {
    try {
      Device::parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cuda:N"), std::string::npos) << e.what();
    }
  }
}

TEST(Shape, BasicsAndErrors) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(s.str(), "[2, 3, 4]");
  s.insert(1, 5);
  EXPECT_EQ(s, (Shape{2, 5, 3, 4}));
  s.erase(0);
  EXPECT_EQ(s, (Shape{5, 3, 4}));
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_THROW(s.dim(3), Error);
  EXPECT_THROW((Shape{1, 2, 3, 4, 5, 6, 7, 8, 9}), Error);
  EXPECT_THROW((Shape{2, -1}).numel(), Error);
  EXPECT_THROW((Shape{1ll << 40, 1ll << 40}).numel(), Error);
  Shape full{1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_THROW(full.push_back(1), Error);
}

// Work on a CUDA device is serialised per device (core/device_lock.h): recursive for one thread,
// exclusive across threads, independent between devices, nothing to lock on the CPU. No GPU is
// needed: the locks are host mutexes.
TEST(DeviceLock, RecursivePerDeviceAndEmptyOnTheCpu) {
  EXPECT_FALSE(detail::lock_device(Device::cpu()).owns_lock());
  auto held = detail::lock_device(Device::cuda(0));
  ASSERT_TRUE(held.owns_lock());
  EXPECT_TRUE(detail::lock_device(Device::cuda(0)).owns_lock());  // the same thread again
  std::atomic<bool> other_device{false}, same_device{false};
  std::thread t([&] {
    other_device = detail::lock_device(Device::cuda(1)).owns_lock();
    const auto l = detail::lock_device(Device::cuda(0));  // waits for `held`
    same_device = true;
  });
  while (!other_device) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(same_device) << "another thread took cuda:0 while this one held it";
  held.unlock();
  t.join();
  EXPECT_TRUE(same_device);
}
