#include "kernels/common/int8_checks.h"

#include <cmath>

#include "core/check.h"

namespace encore::int8_checks {

void check_linear_int8(const Tensor& x, float x_scale, std::int32_t x_zp, const Tensor& w,
                       std::span<const float> w_scales, const Tensor& bias, const Tensor& y, float y_scale,
                       std::int32_t y_zp) {
  ENCORE_CHECK(x.dtype() == DType::U8 && w.dtype() == DType::I8, unsupported,
               "linear_int8: x must be u8 and weight i8 (got {} and {})", dtype_name(x.dtype()), dtype_name(w.dtype()));
  ENCORE_CHECK(x.rank() >= 1 && w.rank() == 2, invalid_argument, "linear_int8: x {} and weight {} ([N, K]) ranks",
               x.shape().str(), w.shape().str());
  const std::int64_t K = x.dim(-1), N = w.dim(0);
  ENCORE_CHECK(w.dim(1) == K, invalid_argument, "linear_int8: x {} has K = {} but weight {} ([N, K]) has K = {}",
               x.shape().str(), K, w.shape().str(), w.dim(1));
  // A term (x - zp) * w is at most 255 * 128 = 32640 in magnitude; past this K, the int32 sum the
  // backends accumulate in could overflow.
  constexpr std::int64_t kMaxK = 2147483647 / 32640;
  ENCORE_CHECK(K <= kMaxK, unsupported,
               "linear_int8: K = {} (x {}) exceeds {}, past which the int32 sum of (x - zero point) * w can overflow",
               K, x.shape().str(), kMaxK);
  ENCORE_CHECK(w_scales.size() == 1 || static_cast<std::int64_t>(w_scales.size()) == N, invalid_argument,
               "linear_int8: {} weight scales given for weight {}: expected 1 or {}", w_scales.size(), w.shape().str(),
               N);
  auto good = [](float s) { return std::isfinite(s) && s > 0.0f; };
  bool scales_ok = good(x_scale) && good(y_scale);
  for (float s : w_scales) scales_ok = scales_ok && good(s);
  ENCORE_CHECK(scales_ok, invalid_argument, "linear_int8: scales must be finite and > 0 (x {}, y {})", x_scale,
               y_scale);
  ENCORE_CHECK(x_zp >= 0 && x_zp <= 255, invalid_argument, "linear_int8: x zero point {} is outside [0, 255]", x_zp);
  if (bias.defined())
    ENCORE_CHECK(bias.dtype() == DType::F32 && bias.rank() == 1 && bias.dim(0) == N, invalid_argument,
                 "linear_int8: bias {} ({}) must be f32 [{}]", bias.shape().str(), dtype_name(bias.dtype()), N);
  Shape expect = x.shape();
  expect[expect.rank() - 1] = N;
  ENCORE_CHECK(y.shape() == expect && y.is_contiguous(), invalid_argument,
               "linear_int8: y {} should be a contiguous {} for x {} and weight {}", y.shape().str(), expect.str(),
               x.shape().str(), w.shape().str());
  ENCORE_CHECK(y.dtype() == DType::F32 || y.dtype() == DType::U8 || y.dtype() == DType::I8, unsupported,
               "linear_int8: y must be f32, u8 or i8 (got {})", dtype_name(y.dtype()));
  if (y.dtype() == DType::U8)
    ENCORE_CHECK(y_zp >= 0 && y_zp <= 255, invalid_argument, "linear_int8: u8 y zero point {} is outside [0, 255]",
                 y_zp);
  if (y.dtype() == DType::I8)
    ENCORE_CHECK(y_zp >= -128 && y_zp <= 127, invalid_argument,
                 "linear_int8: i8 y zero point {} is outside [-128, 127]", y_zp);
}

}  // namespace encore::int8_checks
