// conv2d / conv1d on oneDNN's convolution_forward with prepacked weights. conv1d runs as a conv2d
// of height 1. Patch embeddings (kernel == stride, no padding) run as im2col + linear, and
// depthwise and channel-rich convolutions in oneDNN's preferred activation layout, relaid out in
// and out: each measured faster than oneDNN on plain NCHW (docs/benchmarks.md).
#include <algorithm>
#include <array>
#include <optional>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_context.h"
#include "backends/cpu/packed_weights.h"
#include "core/check.h"

namespace encore::cpu {
namespace {

using namespace onednn;
using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct ConvPlan {
  dnnl::convolution_forward primitive;
  dnnl::memory::desc src, weights, bias, dst;  // as the primitive wants them
};

// Geometry over S spatial dims (1 or 2); vectors are per spatial dim.
struct ConvGeom {
  std::int64_t N = 0, C = 0, O = 0, groups = 1;
  dims in, kernel, out, stride, pad, dilation;
};

ConvGeom check_conv(const char* op, int S, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y,
                    const int* stride, const int* pad, const int* dilation, int groups) {
  ENCORE_CHECK(x.defined() && w.defined() && y.defined(), invalid_argument, "{}: x, weight and y must be defined", op);
  ENCORE_CHECK(
      x.device().is_cpu() && w.device().is_cpu() && y.device().is_cpu() && (!bias.defined() || bias.device().is_cpu()),
      invalid_argument, "{} (CPU): every tensor must be on the CPU", op);
  ENCORE_CHECK(x.rank() == S + 2 && w.rank() == S + 2, invalid_argument,
               "{}: x {} and weight {} must both have {} dims", op, x.shape().str(), w.shape().str(), S + 2);
  ConvGeom g;
  g.N = x.dim(0);
  g.C = x.dim(1);
  g.O = w.dim(0);
  g.groups = groups;
  ENCORE_CHECK(groups >= 1 && g.C % groups == 0 && g.O % groups == 0, invalid_argument,
               "{}: groups = {} must divide the channels of x {} ({}) and of weight {} ({})", op, groups,
               x.shape().str(), g.C, w.shape().str(), g.O);
  ENCORE_CHECK(w.dim(1) * groups == g.C, invalid_argument,
               "{}: x {} has C = {} but weight {} takes C/groups = {} with groups = {}", op, x.shape().str(), g.C,
               w.shape().str(), w.dim(1), groups);
  Shape expect{g.N, g.O};
  for (int i = 0; i < S; ++i) {
    ENCORE_CHECK(stride[i] >= 1 && dilation[i] >= 1 && pad[i] >= 0, invalid_argument,
                 "{}: stride {}, dilation {} (>= 1) and padding {} (>= 0) are not valid", op, stride[i], dilation[i],
                 pad[i]);
    const std::int64_t in = x.dim(2 + i), k = w.dim(2 + i);
    const std::int64_t span = static_cast<std::int64_t>(dilation[i]) * (k - 1) + 1;
    ENCORE_CHECK(k >= 1 && in + 2 * pad[i] >= span, invalid_argument,
                 "{}: kernel {} (dilation {}) does not fit x {} padded by {}", op, w.shape().str(), dilation[i],
                 x.shape().str(), pad[i]);
    g.in.push_back(in);
    g.kernel.push_back(k);
    g.out.push_back((in + 2 * pad[i] - span) / stride[i] + 1);
    g.stride.push_back(stride[i]);
    g.pad.push_back(pad[i]);
    g.dilation.push_back(dilation[i]);
    expect.push_back(g.out.back());
  }
  ENCORE_CHECK(y.shape() == expect, invalid_argument, "{}: y {} should be {} for x {} and weight {}", op,
               y.shape().str(), expect.str(), x.shape().str(), w.shape().str());
  ENCORE_CHECK(y.is_contiguous(), invalid_argument, "{}: y {} must be contiguous", op, y.shape().str());
  if (bias.defined())
    ENCORE_CHECK(bias.rank() == 1 && bias.dim(0) == g.O, invalid_argument, "{}: bias {} must be [{}]", op,
                 bias.shape().str(), g.O);
  auto floating = [](const Tensor& t) { return t.dtype() == DType::F32 || t.dtype() == DType::BF16; };
  ENCORE_CHECK(floating(x) && floating(w) && floating(y) && (!bias.defined() || floating(bias)), unsupported,
               "{}: dtypes x {}, weight {}, y {} are not supported (f32 or bf16 each)", op, dtype_name(x.dtype()),
               dtype_name(w.dtype()), dtype_name(y.dtype()));
  return g;
}

// dst[b][c][r] = src[b][r][c] for f32: the NCHW <-> NHWC relayouts around a convolution. oneDNN
// 2.6's generic reorder is 3-5x slower than this for such transposes (measured), so they are
// done here in tiles that stay in L1.
void transpose_f32(const float* src, float* dst, std::int64_t batch, std::int64_t rows, std::int64_t cols,
                   int threads) {
  constexpr std::int64_t kTile = 32;
  const std::int64_t rt = (rows + kTile - 1) / kTile, ct = (cols + kTile - 1) / kTile;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t t = 0; t < batch * rt * ct; ++t) {
    const std::int64_t b = t / (rt * ct), r0 = (t / ct) % rt * kTile, c0 = t % ct * kTile;
    const std::int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
    const float* s = src + b * rows * cols;
    float* d = dst + b * rows * cols;
    for (std::int64_t c = c0; c < c1; ++c)
      for (std::int64_t r = r0; r < r1; ++r) d[c * rows + r] = s[r * cols + c];
  }
}

// Non-overlapping patches: im2col is a pure relayout and the conv is one GEMM whose weight is the
// conv weight seen as [O, C*kh*kw], so it gets linear's packed weights and kernels.
void patch_conv(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvGeom& g, const Tensor& y,
                const CpuContext& ctx) {
  const std::int64_t Ho = g.out[0], Wo = g.out[1], kh = g.kernel[0], kw = g.kernel[1];
  const std::int64_t P = Ho * Wo, CK = g.C * kh * kw, rows = g.N * P;
  const int threads = resolve_threads(ctx, call_work(double(rows) * CK * g.O, double(x.numel()) + w.numel() + y.numel()));
  const auto& s = x.strides();
  // [N, Ho, Wo, C, kh, kw] over x's memory: row (n, ho, wo) holds patch (c, i, j) in weight order.
  const dnnl::memory::desc patches_view({g.N, Ho, Wo, g.C, kh, kw}, to_dnnl(x.dtype()),
                                        {s[0], s[2] * kh, s[3] * kw, s[1], s[2], s[3]});
  Scratch patches(static_cast<std::size_t>(rows * CK) * sizeof(float));
  reorder(patches_view, x.data(), dense_md(patches_view.dims(), dt::f32), patches.data(), threads);
  Scratch tokens(static_cast<std::size_t>(rows * g.O) * sizeof(float));
  linear(Tensor::from_blob(patches.data(), {rows, CK}, DType::F32), w.view({g.O, CK}), bias,
         LinearAttrs{.layout = WeightLayout::out_in}, Tensor::from_blob(tokens.data(), {rows, g.O}, DType::F32), ctx);
  // tokens [N, P, O] -> y [N, O, P].
  if (y.dtype() == DType::F32)
    transpose_f32(static_cast<const float*>(tokens.data()), static_cast<float*>(y.data()), g.N, P, g.O, threads);
  else
    reorder(dnnl::memory::desc({g.N, g.O, P}, dt::f32, {P * g.O, 1, g.O}), tokens.data(),
            dense_md({g.N, g.O, P}, to_dnnl(y.dtype())), y.data(), threads);
}

// x [N, C, H, W] (any strides), w [O, C/groups, kh, kw]; computed in f32.
void conv2d_impl(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvGeom& g, const Tensor& y,
                 const CpuContext& ctx) {
  if (y.numel() == 0) return;
  if (tuning().conv_patch_as_linear && g.groups == 1 && g.stride == g.kernel && g.pad == dims{0, 0} &&
      g.dilation == dims{1, 1} && w.is_contiguous())
    return patch_conv(x, w, bias, g, y, ctx);

  double macs = double(y.numel()) * double(g.C / g.groups);  // multiply-adds
  for (const auto k : g.kernel) macs *= double(k);
  const int threads = resolve_threads(ctx, call_work(macs, double(x.numel()) + w.numel() + y.numel()));
  ThreadScope scope(threads);
  const dims x_dims{g.N, g.C, g.in[0], g.in[1]}, y_dims{g.N, g.O, g.out[0], g.out[1]};
  const dnnl::memory::desc x_plain = dense_md(x_dims, dt::f32), y_plain = dense_md(y_dims, dt::f32);
  using Layout = Tuning::ConvLayout;
  const Layout layout = tuning().conv_layout;
  const bool depthwise = g.groups == g.C && g.groups > 1;
  // oneDNN's depthwise kernels need a channels-last layout (plain NCHW falls to gemm:jit, 9x
  // slower); channel-rich 3x3+ convolutions gain ~10% from brgconv even after the relayouts; the
  // rest (few channels, 1x1) are faster on plain NCHW (docs/benchmarks.md).
  const bool channel_rich = g.C / g.groups >= 64 && g.kernel[0] * g.kernel[1] >= 9;
  const bool preferred = layout == Layout::preferred || (layout == Layout::automatic && (depthwise || channel_rich));

  KeyBuilder kb("conv");
  for (std::int64_t v : {g.N, g.C, g.in[0], g.in[1], g.O, g.kernel[0], g.kernel[1], g.stride[0], g.stride[1], g.pad[0],
                         g.pad[1], g.dilation[0], g.dilation[1], g.groups, std::int64_t{bias.defined()},
                         std::int64_t{preferred}, std::int64_t{threads}})
    kb.add(v);
  const std::string& key = kb.str();
  auto plan = PrimitiveCache::instance().get<ConvPlan>(key, [&] {
    ConvPlan p;
    const dnnl::memory::desc src = preferred ? dnnl::memory::desc(x_dims, dt::f32, tag::any) : x_plain;
    const dnnl::memory::desc dst = preferred ? dnnl::memory::desc(y_dims, dt::f32, tag::any) : y_plain;
    const dims w_dims = g.groups > 1 ? dims{g.groups, g.O / g.groups, g.C / g.groups, g.kernel[0], g.kernel[1]}
                                     : dims{g.O, g.C, g.kernel[0], g.kernel[1]};
    const dnnl::memory::desc w_any(w_dims, dt::f32, tag::any);
    const dims dil{g.dilation[0] - 1, g.dilation[1] - 1};  // oneDNN counts the gaps
    std::optional<dnnl::convolution_forward::desc> d;
    if (bias.defined()) {
      p.bias = dnnl::memory::desc({g.O}, dt::f32, tag::a);
      d.emplace(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, w_any, p.bias, dst,
                g.stride, dil, g.pad, g.pad);
    } else {
      d.emplace(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, w_any, dst, g.stride, dil,
                g.pad, g.pad);
    }
    dnnl::convolution_forward::primitive_desc pd(*d, user_scratchpad_attr(), engine());
    p.src = pd.src_desc();
    p.dst = pd.dst_desc();
    p.weights = pd.weights_desc();
    p.primitive = dnnl::convolution_forward(pd);
    return p;
  });

  // Source: x itself when it is dense f32 in the layout the primitive takes, else a relayout.
  const bool dense_f32_x = x.dtype() == DType::F32 && x.is_contiguous();
  const std::int64_t HW = g.in[0] * g.in[1], HWo = g.out[0] * g.out[1];
  std::optional<Scratch> x_copy;
  const void* src = x.data();
  if (!(dense_f32_x && plan->src == x_plain)) {
    x_copy.emplace(plan->src.get_size());
    if (dense_f32_x && plan->src == dnnl::memory::desc(x_dims, dt::f32, tag::nhwc))
      transpose_f32(static_cast<const float*>(x.data()), static_cast<float*>(x_copy->data()), g.N, g.C, HW, threads);
    else
      reorder(strided_md(x), x.data(), plan->src, x_copy->data(), threads);
    src = x_copy->data();
  }
  // The weight as stored (grouped: [g, O/g, C/g, kh, kw]) and its packed copy.
  const auto& ws = w.strides();
  const dnnl::memory::desc w_user = g.groups > 1
                                        ? dnnl::memory::desc(plan->weights.dims(), to_dnnl(w.dtype()),
                                                             {ws[0] * (g.O / g.groups), ws[0], ws[1], ws[2], ws[3]})
                                        : strided_md(w);
  const dnnl::memory packed = PackedWeights::instance().get(w, w_user, plan->weights, threads, ctx.constant_weights);

  std::optional<Scratch> b_copy, y_tmp;
  Args args{{DNNL_ARG_WEIGHTS, packed}};
  if (bias.defined()) {
    const void* bp = bias.data();
    if (bias.dtype() != DType::F32 || (g.O > 1 && bias.strides()[0] != 1)) {
      b_copy.emplace(static_cast<std::size_t>(g.O) * sizeof(float));
      to_dense(bias, DType::F32, b_copy->data(), threads);
      bp = b_copy->data();
    }
    args.add(DNNL_ARG_BIAS, wrap(plan->bias, bp));
  }
  const bool direct_out = y.dtype() == DType::F32 && plan->dst == y_plain;
  if (!direct_out) y_tmp.emplace(plan->dst.get_size());
  void* dst = direct_out ? y.data() : y_tmp->data();
  args.add(DNNL_ARG_SRC, wrap(plan->src, src));
  args.add(DNNL_ARG_DST, wrap(plan->dst, dst));
  execute(plan->primitive, args);
  if (direct_out) return;
  if (y.dtype() == DType::F32 && plan->dst == dnnl::memory::desc(y_dims, dt::f32, tag::nhwc))
    transpose_f32(static_cast<const float*>(dst), static_cast<float*>(y.data()), g.N, HWo, g.O, threads);
  else
    reorder(plan->dst, dst, dense_md(y_dims, to_dnnl(y.dtype())), y.data(), threads);
}

template <class F>
void guarded(const char* op, const Tensor& x, const Tensor& w, F&& f) {
  try {
    f();
  } catch (const dnnl::error& e) {
    detail::fail(ErrorCode::backend, "{}: oneDNN failed for x {} ({}), weight {} ({}): {}", op, x.shape().str(),
                 dtype_name(x.dtype()), w.shape().str(), dtype_name(w.dtype()), e.what());
  }
}

}  // namespace

void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dAttrs& attrs, const Tensor& y,
            const CpuContext& ctx) {
  const ConvGeom g = check_conv("conv2d", 2, x, w, bias, y, attrs.stride.data(), attrs.padding.data(),
                                attrs.dilation.data(), attrs.groups);
  guarded("conv2d", x, w, [&] { conv2d_impl(x, w, bias, g, y, ctx); });
}

void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv1dAttrs& attrs, const Tensor& y,
            const CpuContext& ctx) {
  check_conv("conv1d", 1, x, w, bias, y, &attrs.stride, &attrs.padding, &attrs.dilation, attrs.groups);
  // A conv1d is a conv2d of height 1 (oneDNN's depthwise kernels exist only for 2-D and 3-D).
  const std::array<int, 2> stride{1, attrs.stride}, pad{0, attrs.padding}, dil{1, attrs.dilation};
  const Tensor x2 = x.unsqueeze(2), w2 = w.unsqueeze(2), y2 = y.unsqueeze(2);
  const ConvGeom g = check_conv("conv1d", 2, x2, w2, bias, y2, stride.data(), pad.data(), dil.data(), attrs.groups);
  guarded("conv1d", x, w, [&] { conv2d_impl(x2, w2, bias, g, y2, ctx); });
}

}  // namespace encore::cpu
