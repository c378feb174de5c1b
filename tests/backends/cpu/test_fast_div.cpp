// FastDiv (kernels/common/fast_div.h) against the hardware division, on the host: divisors at
// and around every power of two and at random, dividends at the edges of every quotient step
// and at random, up to 2^31 - 1.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/common/fast_div.h"

namespace {

using encore::FastDiv;

void check_divisor(std::uint32_t d, std::mt19937& rng) {
  const FastDiv f(d);
  constexpr std::uint32_t kMax = (1u << 31) - 1;
  std::vector<std::uint32_t> ns = {0, 1, 2, d - 1, d, d + 1, kMax, kMax - 1, kMax - d + 1};
  // Both sides of the last few quotient steps below 2^31 and of a few random ones.
  const std::uint32_t qmax = kMax / d;
  for (std::uint32_t q : {qmax, qmax - 1, qmax / 2, 1u}) {
    const std::uint64_t base = static_cast<std::uint64_t>(q) * d;
    for (std::int64_t off : {-1, 0, 1})
      if (static_cast<std::int64_t>(base) + off >= 0 && static_cast<std::int64_t>(base) + off <= kMax)
        ns.push_back(static_cast<std::uint32_t>(base + off));
  }
  std::uniform_int_distribution<std::uint32_t> any(0, kMax);
  for (int i = 0; i < 64; ++i) ns.push_back(any(rng));
  for (std::uint32_t n : ns) {
    if (n > kMax) continue;
    ASSERT_EQ(f.div(n), n / d) << n << " / " << d;
  }
}

TEST(FastDiv, MatchesDivision) {
  std::mt19937 rng(17);
  for (std::uint32_t d = 1; d < 4096; ++d) check_divisor(d, rng);
  for (int c = 12; c <= 31; ++c) {
    const std::uint64_t p = std::uint64_t{1} << c;
    for (std::int64_t off : {-3, -1, 0, 1, 3}) {
      const std::int64_t d = static_cast<std::int64_t>(p) + off;
      if (FastDiv::valid(d)) check_divisor(static_cast<std::uint32_t>(d), rng);
    }
  }
  std::uniform_int_distribution<std::uint32_t> any(1, (1u << 31) - 1);
  for (int i = 0; i < 2000; ++i) check_divisor(any(rng), rng);
}

TEST(FastDiv, ValidDivisors) {
  EXPECT_FALSE(FastDiv::valid(0));
  EXPECT_FALSE(FastDiv::valid(-5));
  EXPECT_TRUE(FastDiv::valid(1));
  EXPECT_TRUE(FastDiv::valid((std::int64_t{1} << 31) - 1));
  EXPECT_FALSE(FastDiv::valid(std::int64_t{1} << 31));
}

}  // namespace
