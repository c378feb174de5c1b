// Rotary position embedding on CUDA: x [B, T, H*D] (any strides) -> y (any strides; y may be x or
// alias it with the same layout: every thread reads its pair before writing it).
//
// Angles follow the CPU kernel (kernels/cpu/rope.cpp), which defines them: inv_freq is computed
// on the host with the same f32 expression, angle = float(offset + t) * inv_freq[i] is one f32
// product (__fmul_rn: never contracted), then cosf/sinf (full-range accurate versions).
#include <cmath>
#include <vector>

#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda {

using namespace kc;

namespace {

constexpr int kMaxHalf = 512;  // rotary_dim up to 1024

struct RopeParams {
  i64 n = 0;  // work items: B * T * H * (half + D - R)
  i64 T = 0, H = 0, D = 0, R = 0, half = 0, per_head = 0;
  i64 xs[3] = {}, ys[3] = {};
  i64 offset = 0;
  bool interleaved = false;
  const void* x = nullptr;
  void* y = nullptr;
  int tx = 0, ty = 0;
  float inv_freq[kMaxHalf] = {};
};

__global__ void rope_kernel(const RopeParams p) {
  for (i64 w = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; w < p.n;
       w += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 item = w % p.per_head, bth = w / p.per_head, h = bth % p.H, bt = bth / p.H, t = bt % p.T,
              b = bt / p.T;
    const i64 xo = b * p.xs[0] + t * p.xs[1], yo = b * p.ys[0] + t * p.ys[1], e0 = h * p.D;
    if (item < p.half) {
      const i64 i = item;
      const i64 i1 = e0 + (p.interleaved ? 2 * i : i), i2 = e0 + (p.interleaved ? 2 * i + 1 : i + p.half);
      const float a = __fmul_rn(static_cast<float>(p.offset + t), p.inv_freq[i]);
      const float c = cosf(a), s = sinf(a);
      const float x1 = load_f(p.x, xo + i1 * p.xs[2], p.tx), x2 = load_f(p.x, xo + i2 * p.xs[2], p.tx);
      store_f(p.y, yo + i1 * p.ys[2], p.ty, x1 * c - x2 * s);
      store_f(p.y, yo + i2 * p.ys[2], p.ty, x2 * c + x1 * s);
    } else {  // dims R..D-1 pass through
      const i64 d = e0 + p.R + (item - p.half);
      store_f(p.y, yo + d * p.ys[2], p.ty, load_f(p.x, xo + d * p.xs[2], p.tx));
    }
  }
}

}  // namespace

void rope(const Tensor& x, const RopeAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  check_float("rope", "x", x);
  check_float("rope", "y", y);
  ENCORE_CU_CHECK(x.rank() == 3 && y.shape() == x.shape(), invalid_argument, "rope: x ", x.shape().str(),
                  " must be [B, T, H*D] and the output ", y.shape().str(), " the same shape");
  const int H = attrs.num_heads;
  ENCORE_CU_CHECK(H >= 1 && x.dim(2) % H == 0, invalid_argument, "rope: x ", x.shape().str(),
                  " last dim is not divisible by num_heads ", H);
  const i64 B = x.dim(0), T = x.dim(1), D = x.dim(2) / H;
  const i64 R = attrs.rotary_dim == 0 ? D : attrs.rotary_dim;
  ENCORE_CU_CHECK(R >= 0 && R <= D && R % 2 == 0, invalid_argument, "rope: rotary_dim ", R,
                  " must be even and at most the head dim ", D, " (x ", x.shape().str(), ")");
  ENCORE_CU_CHECK(R / 2 <= kMaxHalf, unsupported, "rope: rotary_dim ", R, " is above ", 2 * kMaxHalf);
  if (B == 0 || T == 0 || D == 0) return;
  Launch l(ctx, "rope");
  RopeParams p;
  p.T = T, p.H = H, p.D = D, p.R = R, p.half = R / 2, p.per_head = R / 2 + (D - R);
  p.n = B * T * H * p.per_head;
  for (int d = 0; d < 3; ++d) p.xs[d] = x.strides()[d], p.ys[d] = y.strides()[d];
  p.offset = attrs.position_offset;
  p.interleaved = attrs.layout == RopeLayout::interleaved;
  p.x = x.data(), p.y = y.data();
  p.tx = code(x.dtype()), p.ty = code(y.dtype());
  for (i64 i = 0; i < p.half; ++i)
    p.inv_freq[i] = 1.0f / std::pow(attrs.base, static_cast<float>(2 * i) / static_cast<float>(R));
  if (p.n == 0) return;
  rope_kernel<<<blocks_for(p.n), kThreads, 0, l.stream>>>(p);
  check_launch("rope");
}

}  // namespace encore::cuda
