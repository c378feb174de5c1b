// Rotary position embedding on x [B, T, H*D] (any strides), written to y (any strides; y may be x
// itself or alias it with the same layout: each pair is read before it is written).
//
// Angles follow the PyTorch/HF recipe in f32, so that they agree bit for bit with the models:
//   inv_freq[i] = 1.0f / powf(base, float(2 i) / float(R))         i in [0, R/2)
//   angle(t, i) = float(position_offset + t) * inv_freq[i]          (one f32 product)
//   c, s        = cosf(angle), sinf(angle)
// half_split  (rotate_half):  y[i] = x[i] c - x[i + R/2] s,  y[i + R/2] = x[i + R/2] c + x[i] s
// interleaved (GPT-J):        y[2i] = x[2i] c - x[2i+1] s,   y[2i+1]   = x[2i+1] c + x[2i] s
// Dimensions R..D-1 are copied unchanged.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/kernels.h"
#include "core/check.h"

namespace encore::cpu {

void rope(const Tensor& x, const RopeAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  ENCORE_CHECK(x.defined() && y.defined(), invalid_argument, "rope: input and output must be defined");
  ENCORE_CHECK(x.device().is_cpu() && y.device().is_cpu(), invalid_argument,
               "rope: the input ({}) and the output ({}) must be on the CPU", x.device().str(), y.device().str());
  ENCORE_CHECK(x.rank() == 3 && y.shape() == x.shape(), invalid_argument,
               "rope: x {} must be [B, T, H*D] and the output {} the same shape", x.shape().str(), y.shape().str());
  for (const Tensor* t : {&x, &y})
    ENCORE_CHECK(t->dtype() == DType::F32 || t->dtype() == DType::BF16, invalid_argument,
                 "rope: tensors must be f32 or bf16, got {}", dtype_name(t->dtype()));
  const int H = attrs.num_heads;
  ENCORE_CHECK(H >= 1 && x.dim(2) % H == 0, invalid_argument, "rope: x {} last dim is not divisible by num_heads {}",
               x.shape().str(), H);
  const std::int64_t B = x.dim(0), T = x.dim(1), D = x.dim(2) / H;
  const std::int64_t R = attrs.rotary_dim == 0 ? D : attrs.rotary_dim;
  ENCORE_CHECK(R >= 0 && R <= D && R % 2 == 0, invalid_argument,
               "rope: rotary_dim {} must be even and at most the head dim {} (x {})", R, D, x.shape().str());
  if (B == 0 || T == 0 || D == 0) return;

  const std::int64_t half = R / 2;
  std::vector<float> inv_freq(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i)
    inv_freq[static_cast<std::size_t>(i)] =
        1.0f / std::pow(attrs.base, static_cast<float>(2 * i) / static_cast<float>(R));
  // cos/sin per (t, i): shared by every batch and head.
  std::vector<float> cs(static_cast<std::size_t>(T * half * 2));
  for (std::int64_t t = 0; t < T; ++t) {
    const float pos = static_cast<float>(attrs.position_offset + t);
    for (std::int64_t i = 0; i < half; ++i) {
      const float a = pos * inv_freq[static_cast<std::size_t>(i)];
      cs[static_cast<std::size_t>((t * half + i) * 2)] = std::cos(a);
      cs[static_cast<std::size_t>((t * half + i) * 2 + 1)] = std::sin(a);
    }
  }

  const bool xb = x.dtype() == DType::BF16, yb = y.dtype() == DType::BF16;
  const auto* xf = static_cast<const float*>(x.data());
  const auto* xh = static_cast<const BFloat16*>(x.data());
  auto* yf = static_cast<float*>(y.data());
  auto* yh = static_cast<BFloat16*>(y.data());
  const Shape xs = x.strides(), ys = y.strides();
  const bool interleaved = attrs.layout == RopeLayout::interleaved;

#pragma omp parallel for schedule(static) num_threads(std::max(1, ctx.num_threads))
  for (std::int64_t bt = 0; bt < B * T; ++bt) {
    const std::int64_t b = bt / T, t = bt % T;
    const float* cst = cs.data() + t * half * 2;
    auto ld = [&](std::int64_t e) {
      const std::int64_t o = b * xs[0] + t * xs[1] + e * xs[2];
      return xb ? bfloat16_to_float(xh[o]) : xf[o];
    };
    auto st = [&](std::int64_t e, float val) {
      const std::int64_t o = b * ys[0] + t * ys[1] + e * ys[2];
      if (yb) yh[o] = float_to_bfloat16(val); else yf[o] = val;
    };
    for (std::int64_t h = 0; h < H; ++h) {
      const std::int64_t e0 = h * D;
      for (std::int64_t i = 0; i < half; ++i) {
        const std::int64_t i1 = interleaved ? 2 * i : i, i2 = interleaved ? 2 * i + 1 : i + half;
        const float c = cst[2 * i], s = cst[2 * i + 1];
        const float x1 = ld(e0 + i1), x2 = ld(e0 + i2);
        st(e0 + i1, x1 * c - x2 * s);
        st(e0 + i2, x2 * c + x1 * s);
      }
      for (std::int64_t d = R; d < D; ++d) st(e0 + d, ld(e0 + d));
    }
  }
}

}  // namespace encore::cpu
