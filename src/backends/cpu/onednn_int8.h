// Quantised linear on oneDNN: u8 activations x s8 weights with exact s32 accumulation (VNNI),
// dequantised to f32 or requantised to u8/s8 in the same primitive. On CPUs where oneDNN's int8
// products saturate (no VNNI: AVX2, or AVX-512 before Cascade Lake), the same integers from oneDNN's
// f32 matmul over chunks of K short enough to stay exact, with the same epilogue.
#pragma once

#include <cstdint>
#include <span>

#include "backends/cpu/kernels.h"
#include "encore/core/tensor.h"

namespace encore::cpu {

/// y = quantised x W^T, with
///   acc[m, n] = sum_k (x[m, k] - x_zero_point) * w[n, k]            (exact integer)
///   v[m, n]   = x_scale * w_scales[n] * acc[m, n] + bias[n]          (w_scales of size 1 broadcasts)
///   y f32:    y = v                                                  (y_scale, y_zero_point unused)
///   y u8/s8:  y = saturate(round_half_even(v / y_scale + y_zero_point))
/// x_u8 [..., K] u8 (any strides), w_s8 [N, K] s8 (per-output-channel symmetric; a constant,
/// packed once like linear's weights), bias_f32 [N] f32 or undefined, y [..., N] contiguous.
/// x_zero_point is in [0, 255]; y_zero_point in the range of y's type; scales are finite and > 0.
/// Rounding is oneDNN's: the zero point is added in f32 before the conversion, which uses the
/// MXCSR mode (round to nearest even unless the application changed it). So an exact tie with an
/// odd zero point rounds differently from PyTorch's round-then-add (e.g. -170.5 + 255 gives 84,
/// not 85); everywhere else the two agree. The scales are baked into the oneDNN
/// primitive (its brgemm kernels take no runtime scales in 2.6), so each distinct set of scales
/// creates one primitive; the zero points are runtime arguments.
void linear_int8(const Tensor& x_u8, float x_scale, std::int32_t x_zero_point, const Tensor& w_s8,
                 std::span<const float> w_scales, const Tensor& bias_f32, const Tensor& y, float y_scale,
                 std::int32_t y_zero_point, const CpuContext& ctx);

/// Tests and benchmarks only: makes linear_int8 take the fallback for CPUs without VNNI (the exact
/// f32 chunks) whatever oneDNN can do here, so that machines with VNNI test it too.
void force_int8_fallback_for_testing(bool on) noexcept;

}  // namespace encore::cpu
