#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "encore/core/dtype.h"
#include "encore/core/error.h"

using namespace encore;

namespace {
// Independent reference: the exact value of a binary16 pattern computed from its fields.
double half_value(std::uint16_t bits) {
  const int sign = bits >> 15, exp = (bits >> 10) & 31, mant = bits & 1023;
  const double s = sign ? -1.0 : 1.0;
  if (exp == 0) return s * std::ldexp(mant, -24);
  if (exp == 31) return mant ? std::nan("") : s * INFINITY;
  return s * std::ldexp(1024 + mant, exp - 25);
}
}  // namespace

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::F32), 4u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
  EXPECT_EQ(dtype_size(DType::Bool), 1u);
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto t = static_cast<DType>(i);
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  }
  EXPECT_EQ(parse_dtype("BFloat16"), DType::BF16);
}

TEST(DType, ParseRejectsUnknownWithMessage) {
  try {
    parse_dtype("f64");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("'f64'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
  }
}

TEST(DType, HalfToFloatIsExactForEveryPattern) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = half_to_float(Half{static_cast<std::uint16_t>(b)});
    const double ref = half_value(static_cast<std::uint16_t>(b));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(f)) << b;
    } else {
      ASSERT_EQ(static_cast<double>(f), ref) << "pattern " << b;
    }
  }
}

TEST(DType, FloatToHalfRoundsToNearestEven) {
  // Every half value must round-trip, and midpoints between neighbours must go to the even one.
  for (std::uint32_t b = 0; b < 0x7c00; ++b) {
    const auto h = static_cast<std::uint16_t>(b);
    ASSERT_EQ(float_to_half(static_cast<float>(half_value(h))).bits, h) << b;
    ASSERT_EQ(float_to_half(static_cast<float>(-half_value(h))).bits, h | 0x8000) << b;
    if (b + 1 < 0x7c00) {
      const double mid = (half_value(h) + half_value(static_cast<std::uint16_t>(b + 1))) / 2;
      const std::uint16_t even = (b % 2 == 0) ? h : static_cast<std::uint16_t>(b + 1);
      ASSERT_EQ(float_to_half(static_cast<float>(mid)).bits, even) << "midpoint after " << b;
    }
  }
  EXPECT_EQ(float_to_half(65520.0f).bits, 0x7c00);  // rounds to +inf
  EXPECT_EQ(float_to_half(65519.0f).bits, 0x7bff);
  EXPECT_EQ(float_to_half(1e-8f).bits, 0);
  EXPECT_EQ(float_to_half(-INFINITY).bits, 0xfc00);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(NAN))));
}

TEST(DType, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bfloat16(1.0f).bits, 0x3f80);
  // 1 + 2^-8 is exactly between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(float_to_bfloat16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3f80);
  // 1 + 3*2^-8 is between 1+2^-7 (odd) and 1+2^-6: ties to even (1+2^-6).
  EXPECT_EQ(float_to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3f82);
  EXPECT_EQ(float_to_bfloat16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)).bits, 0x3f81);
  for (std::uint32_t b = 0; b < 65536; b += 7) {
    const BFloat16 v{static_cast<std::uint16_t>(b)};
    const float f = bfloat16_to_float(v);
    if (!std::isnan(f)) ASSERT_EQ(float_to_bfloat16(f).bits, v.bits);
  }
  EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(NAN))));
  EXPECT_EQ(float_to_bfloat16(std::numeric_limits<float>::max()).bits, 0x7f80);  // overflow → inf
}
