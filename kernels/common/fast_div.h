// Division by a divisor fixed for a whole launch, as a multiply-high and a shift (Granlund and
// Montgomery, "Division by invariant integers using multiplication", 1994), for dividends below
// 2^31. A kernel that turns a work-item index into coordinates pays ~25 dependent instructions per
// 32-bit division (and a 64-bit one costs a call); this is three. Header-only, host and device:
// the host builds the divisor's constants, tests check them on the CPU.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ENCORE_FAST_DIV_HD __host__ __device__
#else
#define ENCORE_FAST_DIV_HD
#endif

namespace encore {

/// n / d for 0 <= n < 2^31 and a divisor 1 <= d < 2^31 (checked by the caller, see valid()).
/// With c = ceil(log2 d): m = ceil(2^(31 + c) / d) fits in 32 bits, m d - 2^(31 + c) < d <= 2^c,
/// and so floor(n m / 2^(31 + c)) = floor(n / d) for every n < 2^31.
struct FastDiv {
  std::uint32_t d = 1, mul = 0, shift = 0;  // d == 1: n itself

  FastDiv() = default;
  ENCORE_FAST_DIV_HD explicit FastDiv(std::uint32_t divisor) : d(divisor) {
    if (d <= 1) return;
    std::uint32_t c = 0;
    while ((std::uint64_t{1} << c) < d) ++c;
    mul = static_cast<std::uint32_t>(((std::uint64_t{1} << (31 + c)) + d - 1) / d);
    shift = c - 1;
  }
  /// Whether d is a divisor this takes.
  ENCORE_FAST_DIV_HD static bool valid(std::int64_t divisor) {
    return divisor >= 1 && divisor < (std::int64_t{1} << 31);
  }
  ENCORE_FAST_DIV_HD std::uint32_t div(std::uint32_t n) const {
    if (d == 1) return n;
#if defined(__CUDA_ARCH__)
    return __umulhi(n, mul) >> shift;
#else
    return static_cast<std::uint32_t>((static_cast<std::uint64_t>(n) * mul) >> 32) >> shift;
#endif
  }
};

}  // namespace encore
