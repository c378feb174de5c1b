// Resizing of [N, C, H, W] along H and W with PyTorch's interpolate() semantics (sizes given, no
// scale factors, align_corners = false, no antialias):
//   nearest:  src = min(floor(dst * in/out), in - 1)           (float arithmetic, like torch)
//   bilinear: src = max((dst + 0.5) * in/out - 0.5, 0), 2 taps, the upper one clamped
//   bicubic:  src = (dst + 0.5) * in/out - 0.5 (negative kept), Keys cubic A = -0.75 on
//             floor(src) - 1 .. floor(src) + 2, taps clamped to the border
// Coordinates and weights are computed in f32 as torch does, so indices match it exactly.
#include <cmath>
#include <vector>

#include "kernels/cpu/simd_common.h"

namespace encore::cpu {
namespace ewk {
namespace {

/// Source taps and weights of one output coordinate along one axis.
struct Taps {
  int count = 1;
  std::array<i64, 4> idx{};
  std::array<float, 4> w{};
};

float cubic_near(float t, float a) { return ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f; }          // |t| <= 1
float cubic_far(float t, float a) { return ((a * t - 5.0f * a) * t + 8.0f * a) * t - 4.0f * a; }     // 1 < |t| < 2

std::vector<Taps> make_taps(ResizeMode mode, i64 in, i64 out) {
  std::vector<Taps> taps(static_cast<std::size_t>(out));
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (i64 o = 0; o < out; ++o) {
    Taps& t = taps[static_cast<std::size_t>(o)];
    if (mode == ResizeMode::nearest) {
      t.count = 1;
      t.idx[0] = std::min(static_cast<i64>(std::floor(static_cast<float>(o) * scale)), in - 1);
      t.w[0] = 1.0f;
    } else if (mode == ResizeMode::bilinear) {
      const float src = std::max(scale * (static_cast<float>(o) + 0.5f) - 0.5f, 0.0f);
      const i64 i0 = std::min(static_cast<i64>(std::floor(src)), in - 1);
      const float l1 = std::min(std::max(src - static_cast<float>(i0), 0.0f), 1.0f);
      t.count = 2;
      t.idx = {i0, i0 < in - 1 ? i0 + 1 : i0, 0, 0};
      t.w = {1.0f - l1, l1, 0.0f, 0.0f};
    } else {
      const float src = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
      const i64 i0 = std::min(static_cast<i64>(std::floor(src)), in - 1);
      const float l = std::min(std::max(src - static_cast<float>(i0), 0.0f), 1.0f);
      constexpr float a = -0.75f;
      t.count = 4;
      t.w = {cubic_far(l + 1.0f, a), cubic_near(l, a), cubic_near(1.0f - l, a), cubic_far(2.0f - l, a)};
      for (int j = 0; j < 4; ++j) t.idx[static_cast<std::size_t>(j)] = std::clamp<i64>(i0 - 1 + j, 0, in - 1);
    }
  }
  return taps;
}

const char* mode_name(ResizeMode m) {
  switch (m) {
    case ResizeMode::nearest: return "nearest";
    case ResizeMode::bilinear: return "bilinear";
    case ResizeMode::bicubic: return "bicubic";
  }
  return "?";
}

}  // namespace
}  // namespace ewk

using namespace ewk;

void resize(const Tensor& x, const ResizeAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_float("resize", "x", x);
  check_float("resize", "y", y);
  ENCORE_CHECK(x.rank() == 4, invalid_argument, "resize: x must be [N, C, H, W], got {}", x.shape().str());
  ENCORE_CHECK(attrs.mode == ResizeMode::nearest || attrs.mode == ResizeMode::bilinear ||
                   attrs.mode == ResizeMode::bicubic,
               unsupported, "resize: unknown mode {}", static_cast<int>(attrs.mode));
  const i64 nb = x.shape()[0], nc = x.shape()[1], ih = x.shape()[2], iw = x.shape()[3];
  const i64 oh = attrs.out_h, ow = attrs.out_w;
  ENCORE_CHECK(oh > 0 && ow > 0, invalid_argument, "resize: output size {}x{} must be positive", oh, ow);
  check_shape("resize", "y", y, Shape{nb, nc, oh, ow});
  if (y.numel() == 0) return;
  ENCORE_CHECK(ih > 0 && iw > 0, invalid_argument, "resize ({}): cannot resize the empty input {}",
               mode_name(attrs.mode), x.shape().str());
  const std::vector<Taps> ty = make_taps(attrs.mode, ih, oh), tx = make_taps(attrs.mode, iw, ow);
  const int kx = tx[0].count, ky = ty[0].count;
  const std::byte* xb = bytes_of(x);
  std::byte* yb = bytes_of(y);
  const DType xt = x.dtype(), yt = y.dtype();
  const i64 xe = static_cast<i64>(dtype_size(xt)), ye = static_cast<i64>(dtype_size(yt));
  const Shape& xs = x.strides();
  const Shape& ys = y.strides();
  // One task per output row; the (up to 4) input rows it reads are staged as f32.
  parallel_rows(nb * nc * oh, ow * kx * ky, ctx, [&](i64 r0, i64 r1) {
    std::vector<float> rows(static_cast<std::size_t>(4 * iw)), out(static_cast<std::size_t>(ow));
    for (i64 r = r0; r < r1; ++r) {
      const i64 oy = r % oh, plane = r / oh, c = plane % nc, n = plane / nc;
      const Taps& vy = ty[static_cast<std::size_t>(oy)];
      const std::byte* base = xb + (n * xs[0] + c * xs[1]) * xe;
      std::array<const float*, 4> src{};
      for (int j = 0; j < ky; ++j)
        src[static_cast<std::size_t>(j)] = row_f32(base + vy.idx[static_cast<std::size_t>(j)] * xs[2] * xe, xt, xs[3],
                                                   iw, rows.data() + j * iw);
      for (i64 ox = 0; ox < ow; ++ox) {
        const Taps& vx = tx[static_cast<std::size_t>(ox)];
        float acc = 0.0f;
        for (int j = 0; j < ky; ++j) {
          const float* sr = src[static_cast<std::size_t>(j)];
          float h = 0.0f;
          for (int i = 0; i < kx; ++i) h += vx.w[static_cast<std::size_t>(i)] * sr[vx.idx[static_cast<std::size_t>(i)]];
          acc += vy.w[static_cast<std::size_t>(j)] * h;
        }
        out[static_cast<std::size_t>(ox)] = acc;
      }
      store_row(out.data(), ow, yb + (n * ys[0] + c * ys[1] + oy * ys[2]) * ye, yt, ys[3]);
    }
  });
}

}  // namespace encore::cpu
