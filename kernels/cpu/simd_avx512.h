// AVX-512 row kernels of the elementwise / norm / softmax family. Implemented in
// elementwise_avx512.cpp and norm_avx512.cpp (compiled with -mavx512*); call only after
// has_avx512(). Plain declarations so that portable files can include this header.
#pragma once

#include <cstdint>

#include "encore/graph/op_attrs.h"

namespace encore::cpu::ewk::avx512 {

using i64 = std::int64_t;

// ---- conversions (elementwise_avx512.cpp) ----
void bf16_to_f32(const std::uint16_t* x, float* y, i64 n);
void f32_to_bf16(const float* x, std::uint16_t* y, i64 n);
void f16_to_f32(const std::uint16_t* x, float* y, i64 n);
void f32_to_f16(const float* x, std::uint16_t* y, i64 n);

// ---- pointwise (elementwise_avx512.cpp); y may equal x / a / b ----
void activation(const float* x, float* y, i64 n, Activation act);
/// sa, sb are 0 (broadcast the single value) or 1 (contiguous).
void binary(const float* a, i64 sa, const float* b, i64 sb, float* y, i64 n, BinaryOp op);
void scale(const float* x, float* y, i64 n, float s, float shift);
// The same on bf16 (bf16 = true) or f16 rows, converted in registers (no staging buffers).
void activation16(const std::uint16_t* x, std::uint16_t* y, i64 n, Activation act, bool bf16);
void binary16(const std::uint16_t* a, i64 sa, const std::uint16_t* b, i64 sb, std::uint16_t* y, i64 n, BinaryOp op,
              bool bf16);
void scale16(const std::uint16_t* x, std::uint16_t* y, i64 n, float s, float shift, bool bf16);
void glu(const float* a, const float* b, float* y, i64 n, GluKind kind);

// ---- row statistics and normalisation (norm_avx512.cpp) ----
/// sum(x - shift)
float sum_dev(const float* x, i64 n, float shift);
/// sum((x - mean)^2)
float sum_sq_dev(const float* x, i64 n, float mean);
float sum_sq(const float* x, i64 n);
/// y = (x - mean) * rstd * g + b; g, b may be null (1 and 0).
void normalize(const float* x, float* y, i64 n, float mean, float rstd, const float* g, const float* b);
/// s = a + b (f32 rows)
void add(const float* a, const float* b, float* s, i64 n);
float max(const float* x, i64 n);
/// y = exp(x - shift); returns the sum of y.
float exp_shift_sum(const float* x, float* y, i64 n, float shift);
/// y = x * s
void mul_scalar(const float* x, float* y, i64 n, float s);
/// y = x - s
void sub_scalar(const float* x, float* y, i64 n, float s);

}  // namespace encore::cpu::ewk::avx512
