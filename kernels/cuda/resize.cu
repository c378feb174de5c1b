// Resizing of [N, C, H, W] along H and W on CUDA with PyTorch's interpolate() semantics (sizes
// given, align_corners = false, no antialias), exactly as the CPU kernel (kernels/cpu/resize.cpp):
//   nearest:  src = min(floor(dst * in/out), in - 1)
//   bilinear: src = max((dst + 0.5) * in/out - 0.5, 0), 2 taps, the upper one clamped
//   bicubic:  src = (dst + 0.5) * in/out - 0.5 (negative kept), Keys cubic A = -0.75 on
//             floor(src) - 1 .. floor(src) + 2, taps clamped to the border
// Source coordinates use the non-contracting __fmul_rn/__fadd_rn so that nvcc's FMA contraction
// cannot move a floor() across an integer (the indices must equal torch's and the CPU's).
#include <cmath>

#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda {

using namespace kc;

namespace {

struct ResizeParams {
  i64 n = 0;  // output elements
  i64 C = 0, ih = 0, iw = 0, oh = 0, ow = 0;
  i64 xs[4] = {}, ys[4] = {};
  float scale_h = 1.0f, scale_w = 1.0f;
  int mode = 0;
  const void* x = nullptr;
  void* y = nullptr;
  int tx = 0, ty = 0;
};

struct Taps {
  int count;
  i64 idx[4];
  float w[4];
};

__device__ __forceinline__ float cubic_near(float t, float a) { return ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f; }
__device__ __forceinline__ float cubic_far(float t, float a) { return ((a * t - 5.0f * a) * t + 8.0f * a) * t - 4.0f * a; }

__device__ __forceinline__ Taps make_taps(int mode, i64 o, i64 in, float scale) {
  Taps t{};
  const float of = static_cast<float>(o);
  if (mode == static_cast<int>(ResizeMode::nearest)) {
    t.count = 1;
    t.idx[0] = min(static_cast<i64>(floorf(__fmul_rn(of, scale))), in - 1);
    t.w[0] = 1.0f;
  } else if (mode == static_cast<int>(ResizeMode::bilinear)) {
    const float src = fmaxf(__fsub_rn(__fmul_rn(scale, __fadd_rn(of, 0.5f)), 0.5f), 0.0f);
    const i64 i0 = min(static_cast<i64>(floorf(src)), in - 1);
    const float l1 = fminf(fmaxf(src - static_cast<float>(i0), 0.0f), 1.0f);
    t.count = 2;
    t.idx[0] = i0;
    t.idx[1] = i0 < in - 1 ? i0 + 1 : i0;
    t.w[0] = 1.0f - l1;
    t.w[1] = l1;
  } else {
    const float src = __fsub_rn(__fmul_rn(scale, __fadd_rn(of, 0.5f)), 0.5f);
    const i64 i0 = min(static_cast<i64>(floorf(src)), in - 1);
    const float l = fminf(fmaxf(src - static_cast<float>(i0), 0.0f), 1.0f);
    constexpr float a = -0.75f;
    t.count = 4;
    t.w[0] = cubic_far(l + 1.0f, a);
    t.w[1] = cubic_near(l, a);
    t.w[2] = cubic_near(1.0f - l, a);
    t.w[3] = cubic_far(2.0f - l, a);
    for (int j = 0; j < 4; ++j) t.idx[j] = min(max(i0 - 1 + j, i64{0}), in - 1);
  }
  return t;
}

// One thread per output element (consecutive threads: consecutive output columns).
__global__ void resize_kernel(const ResizeParams p) {
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 ox = i % p.ow, r = i / p.ow, oy = r % p.oh, plane = r / p.oh, c = plane % p.C, nb = plane / p.C;
    const Taps ty = make_taps(p.mode, oy, p.ih, p.scale_h), tx = make_taps(p.mode, ox, p.iw, p.scale_w);
    const i64 base = nb * p.xs[0] + c * p.xs[1];
    float acc = 0.0f;
    for (int j = 0; j < ty.count; ++j) {
      const i64 row = base + ty.idx[j] * p.xs[2];
      float h = 0.0f;
      for (int k = 0; k < tx.count; ++k) h += tx.w[k] * load_f(p.x, row + tx.idx[k] * p.xs[3], p.tx);
      acc += ty.w[j] * h;
    }
    store_f(p.y, nb * p.ys[0] + c * p.ys[1] + oy * p.ys[2] + ox * p.ys[3], p.ty, acc);
  }
}

}  // namespace

void resize(const Tensor& x, const ResizeAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  check_float("resize", "x", x);
  check_float("resize", "y", y);
  ENCORE_CU_CHECK(x.rank() == 4, invalid_argument, "resize: x must be [N, C, H, W], got ", x.shape().str());
  ENCORE_CU_CHECK(attrs.mode == ResizeMode::nearest || attrs.mode == ResizeMode::bilinear ||
                      attrs.mode == ResizeMode::bicubic,
                  unsupported, "resize: unknown mode ", static_cast<int>(attrs.mode));
  const i64 nb = x.shape()[0], nc = x.shape()[1], ih = x.shape()[2], iw = x.shape()[3];
  const i64 oh = attrs.out_h, ow = attrs.out_w;
  ENCORE_CU_CHECK(oh > 0 && ow > 0, invalid_argument, "resize: output size ", oh, "x", ow, " must be positive");
  check_shape("resize", "y", y, Shape{nb, nc, oh, ow});
  if (y.numel() == 0) return;
  ENCORE_CU_CHECK(ih > 0 && iw > 0, invalid_argument, "resize: cannot resize the empty input ", x.shape().str());
  Launch l(ctx, "resize");
  ResizeParams p;
  p.n = y.numel();
  p.C = nc, p.ih = ih, p.iw = iw, p.oh = oh, p.ow = ow;
  for (int d = 0; d < 4; ++d) p.xs[d] = x.strides()[d], p.ys[d] = y.strides()[d];
  p.scale_h = static_cast<float>(ih) / static_cast<float>(oh);
  p.scale_w = static_cast<float>(iw) / static_cast<float>(ow);
  p.mode = static_cast<int>(attrs.mode);
  p.x = x.data(), p.y = y.data();
  p.tx = code(x.dtype()), p.ty = code(y.dtype());
  resize_kernel<<<blocks_for(p.n), kThreads, 0, l.stream>>>(p);
  check_launch("resize");
}

}  // namespace encore::cuda
