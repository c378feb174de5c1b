// linear_int8: the argument checks shared by the CPU (oneDNN) and CUDA (cuBLASLt) backends, after
// each has checked that the tensors are defined and on its device. Host code only.
#pragma once

#include <cstdint>
#include <span>

#include "encore/core/tensor.h"

namespace encore::int8_checks {

/// x u8 [..., K] (K <= 65793: int32 sums), weight i8 [N, K] with 1 or N positive finite scales, x and y scales positive
/// and finite, x zero point in [0, 255], bias (optional) f32 [N], y a contiguous [..., N] of f32,
/// u8 (zero point in [0, 255]) or i8 (in [-128, 127]). Throws Error naming the value.
void check_linear_int8(const Tensor& x, float x_scale, std::int32_t x_zp, const Tensor& w,
                       std::span<const float> w_scales, const Tensor& bias, const Tensor& y, float y_scale,
                       std::int32_t y_zp);

}  // namespace encore::int8_checks
