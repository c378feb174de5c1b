#include "encore/core/dtype.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <string>

#include "core/check.h"

namespace encore {

const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I8: return "i8";
    case DType::U8: return "u8";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::Bool: return "bool";
  }
  return "?";
}

DType parse_dtype(std::string_view text) {
  std::string s(text);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "f32" || s == "float32" || s == "float") return DType::F32;
  if (s == "f16" || s == "float16" || s == "half" || s == "fp16") return DType::F16;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "i8" || s == "int8") return DType::I8;
  if (s == "u8" || s == "uint8") return DType::U8;
  if (s == "i32" || s == "int32") return DType::I32;
  if (s == "i64" || s == "int64") return DType::I64;
  if (s == "bool") return DType::Bool;
  detail::fail(ErrorCode::invalid_argument,
               "unknown dtype '{}': expected one of f32, f16, bf16, i8, u8, i32, i64, bool", text);
}

Half float_to_half(float f) noexcept {
  // Round-to-nearest-even conversion on the bit patterns (no dependence on F16C being present).
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) {  // inf or NaN
    const std::uint16_t nan_bit = absx > 0x7f800000u ? 0x0200u | ((absx >> 13) & 0x3ffu) : 0;
    return Half{static_cast<std::uint16_t>(sign | 0x7c00u | nan_bit)};
  }
  if (absx >= 0x477ff000u) return Half{static_cast<std::uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (absx < 0x38800000u) {  // result is subnormal or zero: scale into the subnormal grid
    if (absx < 0x33000000u) return Half{static_cast<std::uint16_t>(sign)};  // < half of min subnormal
    const std::uint32_t exp = absx >> 23;
    const std::uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - exp;  // 14 + (113 - exp) → total shift into 10-bit field
    std::uint32_t result = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (result & 1u))) ++result;
    return Half{static_cast<std::uint16_t>(sign | result)};
  }
  std::uint32_t result = ((absx >> 13) - (112u << 10));  // rebias exponent 127 → 15
  const std::uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (result & 1u))) ++result;
  return Half{static_cast<std::uint16_t>(sign | result)};
}

float half_to_float(Half h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
  std::uint32_t exp = (h.bits >> 10) & 0x1fu;
  std::uint32_t mant = h.bits & 0x3ffu;
  std::uint32_t out;
  if (exp == 0x1f) {
    out = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    if (mant == 0) {
      out = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400u) == 0);
      out = sign | (static_cast<std::uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else {
    out = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(out);
}

BFloat16 float_to_bfloat16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return BFloat16{static_cast<std::uint16_t>((x >> 16) | 0x40u)};
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return BFloat16{static_cast<std::uint16_t>((x + rounding) >> 16)};
}

float bfloat16_to_float(BFloat16 b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b.bits) << 16);
}

}  // namespace encore
