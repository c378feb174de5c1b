// conv2d / conv1d as im2col + cuBLASLt GEMM: per image and group, Y [O/g, OH*OW] = W_g [O/g,
// C/g*kh*kw] x col [C/g*kh*kw, OH*OW], written straight into y's NCHW layout. conv1d is a conv2d of
// height 1 (views, no copies). Fast paths:
// - 1x1, stride 1, no padding: x itself is the col matrix (no im2col at all);
// - kernel == stride, no padding/dilation (ViT/Segmenter patch embeddings): an im2col without
//   bounds checks.
// With one group the images of a chunk are one batched GEMM (weights broadcast with batch stride 0);
// with several, each image is one GEMM batched over its groups. The bias is per output channel,
// i.e. along the GEMM's rows, which cuBLASLt's bias epilogue (per column here) cannot add: a kernel
// adds it after. Depthwise convolutions work (batched M=1 GEMMs) but are not fast; a dedicated
// kernel would be the next step if a model needs one.
#include <algorithm>

#include "backends/cuda/cublas_gemm.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/runtime.h"
#include "kernels/cuda/gemm_kernels.h"

namespace encore::cuda {
namespace {

// Scratch for the col matrices of one chunk of images.
constexpr std::size_t kColBudget = std::size_t{256} << 20;

struct ConvShape {
  std::int64_t N, C, H, W, O, G, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
};

kernels::FloatType float_type(DType t) {
  return t == DType::F16 ? kernels::FloatType::f16 : t == DType::BF16 ? kernels::FloatType::bf16 : kernels::FloatType::f32;
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

ConvShape check_conv(const char* op, CudaRuntime& rt, const Tensor& x, const Tensor& w, const Tensor& bias,
                     const Tensor& y, const std::array<int, 2>& stride, const std::array<int, 2>& pad,
                     const std::array<int, 2>& dilation, int groups) {
  ENCORE_CHECK(x.defined() && w.defined() && y.defined(), invalid_argument, "{}: x, weight and y must be defined", op);
  const Device dev = rt.device();
  ENCORE_CHECK(x.device() == dev && w.device() == dev && y.device() == dev && (!bias.defined() || bias.device() == dev),
               invalid_argument, "{} (CUDA): every tensor must be on {}", op, dev.str());
  ENCORE_CHECK(is_float(x.dtype()) && w.dtype() == x.dtype() && y.dtype() == x.dtype() &&
                   (!bias.defined() || is_float(bias.dtype())),
               unsupported, "{} (CUDA): x {}, weight {}, y {} must share one of f32/f16/bf16", op,
               dtype_name(x.dtype()), dtype_name(w.dtype()), dtype_name(y.dtype()));
  ConvShape s{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), groups, w.dim(2), w.dim(3), stride[0], stride[1],
              pad[0], pad[1], dilation[0], dilation[1], 0, 0};
  ENCORE_CHECK(s.G >= 1 && s.C % s.G == 0 && s.O % s.G == 0 && w.dim(1) == s.C / s.G, invalid_argument,
               "{}: x {} and weight {} do not fit groups = {}", op, x.shape().str(), w.shape().str(), groups);
  ENCORE_CHECK(s.sh >= 1 && s.sw >= 1 && s.dh >= 1 && s.dw >= 1 && s.ph >= 0 && s.pw >= 0 && s.kh >= 1 && s.kw >= 1,
               invalid_argument, "{}: stride, dilation and kernel must be >= 1 and padding >= 0", op);
  const std::int64_t eh = s.H + 2 * s.ph - s.dh * (s.kh - 1), ew = s.W + 2 * s.pw - s.dw * (s.kw - 1);
  s.OH = eh >= 1 ? (eh - 1) / s.sh + 1 : 0;
  s.OW = ew >= 1 ? (ew - 1) / s.sw + 1 : 0;
  ENCORE_CHECK(y.shape() == Shape({s.N, s.O, s.OH, s.OW}) && y.is_contiguous(), invalid_argument,
               "{}: y {} should be a contiguous [{}, {}, {}, {}]", op, y.shape().str(), s.N, s.O, s.OH, s.OW);
  ENCORE_CHECK(!bias.defined() || (bias.rank() == 1 && bias.dim(0) == s.O), invalid_argument, "{}: bias {} must be [{}]",
               op, bias.shape().str(), s.O);
  return s;
}

void conv_impl(CudaRuntime& rt, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvShape& s,
               const Tensor& y, bool allow_tf32) {
  const std::int64_t P = s.OH * s.OW, Cg = s.C / s.G, Og = s.O / s.G, Kc = Cg * s.kh * s.kw;
  if (s.N == 0 || s.O == 0 || P == 0) return;
  DeviceGuard guard(rt.ordinal());
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(y.dtype()));
  const std::int64_t total = s.N * s.O * P;
  auto* yp = static_cast<char*>(y.data());

  if (Kc > 0) {
    // Weights as [O, Kc] rows.
    DeviceBuffer w_copy;
    const void* wp = w.data();
    if (!w.is_contiguous()) {
      w_copy = dense_copy(rt, w);
      wp = w_copy.data();
    }
    const std::int64_t xs_n = x.strides()[0], xs_c = x.strides()[1], xs_h = x.strides()[2], xs_w = x.strides()[3];
    // 1x1/stride 1/no padding: each channel's plane must be one unit-stride run of P elements.
    const bool pointwise = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0 &&
                           (s.W == 1 || xs_w == 1) && (s.H == 1 || xs_h == s.W) && (Cg == 1 || xs_c >= P);
    const bool patch = s.kh == s.sh && s.kw == s.sw && s.ph == 0 && s.pw == 0 && s.dh == 1 && s.dw == 1;
    kernels::Im2colGeometry g{s.C, s.H, s.W, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw, s.OH, s.OW,
                              xs_n, xs_c, xs_h, xs_w};
    const std::int64_t col_image = s.C * s.kh * s.kw * P;  // elements of one image's col matrix
    const std::int64_t chunk =
        pointwise ? s.N : std::clamp<std::int64_t>(static_cast<std::int64_t>(kColBudget) / (col_image * es), 1, s.N);
    DeviceBuffer col;
    if (!pointwise) col = rt.scratch(static_cast<std::size_t>(chunk * col_image * es));

    for (std::int64_t n0 = 0; n0 < s.N; n0 += chunk) {
      const std::int64_t nc = std::min(chunk, s.N - n0);
      const char* x0 = static_cast<const char*>(x.data()) + n0 * xs_n * es;
      // The col matrix of image i, group g: [Kc, P] at q0 + i * q_image + g * q_group, row stride q_ld.
      const char* q0 = x0;
      std::int64_t q_image = xs_n, q_group = Cg * xs_c, q_ld = Cg == 1 ? P : xs_c;
      if (!pointwise) {
        const auto launch = patch ? kernels::launch_patchify : kernels::launch_im2col;
        ENCORE_CUDA_CHECK(launch(x0, col.data(), es, nc, g, rt.stream()));
        q0 = static_cast<const char*>(col.data());
        q_image = col_image;
        q_group = Kc * P;
        q_ld = P;
      }
      GemmProblem p;
      p.dtype = y.dtype();
      p.M = Og;
      p.N = P;
      p.K = Kc;
      p.allow_tf32 = allow_tf32;
      p.a = GemmOperand{wp, Kc, false, 0};
      if (s.G == 1) {  // all images of the chunk in one call, weights broadcast
        p.batch = nc;
        p.b = GemmOperand{q0, q_ld, false, q_image};
        p.d = yp + n0 * s.O * P * es;
        run_gemm(rt, p);
        continue;
      }
      p.batch = s.G;
      p.a.batch_stride = Og * Kc;
      for (std::int64_t i = 0; i < nc; ++i) {
        p.b = GemmOperand{q0 + i * q_image * es, q_ld, false, q_group};
        p.d = yp + (n0 + i) * s.O * P * es;
        run_gemm(rt, p);
      }
    }
  } else {
    rt.memset(y.data(), 0, static_cast<std::size_t>(total * es));  // no input channels: only the bias
  }
  if (bias.defined())
    ENCORE_CUDA_CHECK(kernels::launch_bias_activation(y.data(), float_type(y.dtype()), total, s.O, P, bias.data(),
                                                      float_type(bias.dtype()), bias.strides()[0], kernels::Act::none,
                                                      rt.stream()));
}

}  // namespace

void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dAttrs& attrs, const Tensor& y,
            const CudaContext& ctx) {
  CudaRuntime& rt = runtime_of(ctx, "conv2d");
  ENCORE_CHECK(x.defined() && w.defined() && x.rank() == 4 && w.rank() == 4, invalid_argument,
               "conv2d: x {} and weight {} must be 4-D", x.defined() ? x.shape().str() : "undefined",
               w.defined() ? w.shape().str() : "undefined");
  const ConvShape s = check_conv("conv2d", rt, x, w, bias, y, attrs.stride, attrs.padding, attrs.dilation, attrs.groups);
  conv_impl(rt, x, w, bias, s, y, ctx.allow_tf32);
}

void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv1dAttrs& attrs, const Tensor& y,
            const CudaContext& ctx) {
  CudaRuntime& rt = runtime_of(ctx, "conv1d");
  ENCORE_CHECK(x.defined() && w.defined() && y.defined() && x.rank() == 3 && w.rank() == 3 && y.rank() == 3,
               invalid_argument, "conv1d: x, weight and y must be 3-D");
  const Tensor x4 = x.unsqueeze(2), w4 = w.unsqueeze(2), y4 = y.unsqueeze(2);
  const ConvShape s = check_conv("conv1d", rt, x4, w4, bias, y4, {1, attrs.stride}, {0, attrs.padding},
                                 {1, attrs.dilation}, attrs.groups);
  conv_impl(rt, x4, w4, bias, s, y4, ctx.allow_tf32);
}

}  // namespace encore::cuda
