// RegionGuard: an exception inside an OpenMP region reaches the caller after the region (without
// it, std::terminate), later work is skipped, and every thread still reaches the region's barrier.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <new>
#include <stdexcept>

#include "kernels/cpu/omp_guard.h"

namespace encore::cpu {
namespace {

TEST(RegionGuard, FirstExceptionLeavesTheRegionAfterItsBarriers) {
  RegionGuard guard;
  std::atomic<int> ran{0}, after_barrier{0}, team{0};
  const auto region = [&] {
#pragma omp parallel num_threads(4)
    {
#pragma omp for schedule(static)
      for (int i = 0; i < 64; ++i)
        guard.run([&] {
          ++ran;
          if (i == 5) throw std::bad_alloc();
        });
#pragma omp barrier
      ++after_barrier;
#pragma omp single
      team = omp_get_num_threads();
    }
    guard.rethrow();
  };
  EXPECT_THROW(region(), std::bad_alloc);
  EXPECT_GE(ran.load(), 1);
  EXPECT_LE(ran.load(), 64);
  EXPECT_EQ(after_barrier.load(), team.load());  // every thread got past the barrier
  // One thread runs the iterations in order: after the throw at i = 5 nothing more runs.
  RegionGuard serial;
  std::atomic<int> serial_ran{0};
#pragma omp parallel for num_threads(1) schedule(static)
  for (int i = 0; i < 64; ++i)
    serial.run([&] {
      ++serial_ran;
      if (i == 5) throw std::runtime_error("stop");
    });
  EXPECT_THROW(serial.rethrow(), std::runtime_error);
  EXPECT_EQ(serial_ran.load(), 6);
  RegionGuard clean;
  int sum = 0;
  clean.run([&] { sum = 7; });
  EXPECT_NO_THROW(clean.rethrow());
  EXPECT_EQ(sum, 7);
}

}  // namespace
}  // namespace encore::cpu
