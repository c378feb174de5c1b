// encore — element types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace encore {

/// Element type of a tensor.
enum class DType : std::uint8_t {
  F32,   ///< IEEE-754 binary32.
  F16,   ///< IEEE-754 binary16.
  BF16,  ///< bfloat16 (the upper 16 bits of a binary32).
  I8,    ///< signed 8-bit integer.
  U8,    ///< unsigned 8-bit integer.
  I32,   ///< signed 32-bit integer.
  I64,   ///< signed 64-bit integer.
  Bool,  ///< one byte, 0 or 1.
};

/// Number of dtypes; DType values are 0 .. kNumDTypes-1.
inline constexpr int kNumDTypes = 8;

/// Size of one element in bytes.
constexpr std::size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I8: return 1;
    case DType::U8: return 1;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::Bool: return 1;
  }
  return 0;
}

/// True for F32, F16 and BF16.
constexpr bool is_floating(DType t) noexcept {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

/// The lower-case name used in messages and on command lines: "f32", "f16", "bf16", "i8", "u8",
/// "i32", "i64", "bool".
const char* dtype_name(DType t) noexcept;

/// Parses a name as printed by dtype_name (case-insensitive; "float32"/"float16"/"bfloat16" are
/// accepted too). Throws Error(invalid_argument) naming the text and the accepted names.
DType parse_dtype(std::string_view text);

/// The C++ type stored for a dtype, for typed element access.
template <DType T> struct dtype_traits;

/// 16-bit float storage types. They are plain bit containers; convert with the functions below.
struct Half { std::uint16_t bits; };
struct BFloat16 { std::uint16_t bits; };

template <> struct dtype_traits<DType::F32> { using type = float; };
template <> struct dtype_traits<DType::F16> { using type = Half; };
template <> struct dtype_traits<DType::BF16> { using type = BFloat16; };
template <> struct dtype_traits<DType::I8> { using type = std::int8_t; };
template <> struct dtype_traits<DType::U8> { using type = std::uint8_t; };
template <> struct dtype_traits<DType::I32> { using type = std::int32_t; };
template <> struct dtype_traits<DType::I64> { using type = std::int64_t; };
template <> struct dtype_traits<DType::Bool> { using type = bool; };

/// The dtype whose storage type is T (compile error for other T).
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<Half>() { return DType::F16; }
template <> constexpr DType dtype_of<BFloat16>() { return DType::BF16; }
template <> constexpr DType dtype_of<std::int8_t>() { return DType::I8; }
template <> constexpr DType dtype_of<std::uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<std::int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<bool>() { return DType::Bool; }

/// float -> binary16, round to nearest even; overflow gives ±inf, NaN stays NaN.
Half float_to_half(float f) noexcept;
/// binary16 -> float, exact (subnormals included).
float half_to_float(Half h) noexcept;
/// float -> bfloat16, round to nearest even; NaN stays NaN (quiet).
BFloat16 float_to_bfloat16(float f) noexcept;
/// bfloat16 -> float, exact.
float bfloat16_to_float(BFloat16 b) noexcept;

}  // namespace encore
