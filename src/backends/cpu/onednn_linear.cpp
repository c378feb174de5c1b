// linear: y = act(x W (+ bias)) as one oneDNN matmul over the rows of x, with the weights packed
// once (PackedWeights) and the bias and activation fused into the primitive. A few rows of f32 x
// (decode steps) take the weight-streaming kernel of kernels/cpu/linear_rows.h instead.
#include <cstring>
#include <optional>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_context.h"
#include "backends/cpu/packed_weights.h"
#include "core/check.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/linear_rows.h"

namespace encore::cpu {
namespace {

using namespace onednn;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct LinearPlan {
  dnnl::matmul primitive;
  dnnl::memory::desc src, weights, bias, dst;
};

const char* layout_text(WeightLayout l) { return l == WeightLayout::out_in ? "out_in [N, K]" : "in_out [K, N]"; }

// The row stride of x seen as an [M, K] matrix, or 0 when its leading dims do not collapse into
// one stride (or its rows are not dense along K, or overlap).
std::int64_t row_stride(const Tensor& x) {
  const int r = x.rank();
  const std::int64_t K = x.dim(-1);
  if (K > 1 && x.strides()[r - 1] != 1) return 0;
  std::int64_t ld = -1, expect = -1;  // walk leading dims from the innermost outwards
  for (int i = r - 2; i >= 0; --i) {
    if (x.shape()[i] == 1) continue;
    if (ld < 0)
      ld = x.strides()[i];
    else if (x.strides()[i] != expect)
      return 0;
    expect = x.strides()[i] * x.shape()[i];
  }
  if (ld < 0) return K;  // a single row
  return ld >= K ? ld : 0;
}

void check_args(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearAttrs& attrs, const Tensor& y) {
  ENCORE_CHECK(x.defined() && w.defined() && y.defined(), invalid_argument,
               "linear: x, weight and y must be defined tensors");
  ENCORE_CHECK(
      x.device().is_cpu() && w.device().is_cpu() && y.device().is_cpu() && (!bias.defined() || bias.device().is_cpu()),
      invalid_argument, "linear (CPU): every tensor must be on the CPU");
  ENCORE_CHECK(x.rank() >= 1, invalid_argument, "linear: x {} must have at least one dimension", x.shape().str());
  ENCORE_CHECK(w.rank() == 2, invalid_argument, "linear: weight {} must be 2-D ({})", w.shape().str(),
               layout_text(attrs.layout));
  const std::int64_t K = x.dim(-1);
  const bool out_in = attrs.layout == WeightLayout::out_in;
  const std::int64_t wk = out_in ? w.dim(1) : w.dim(0), N = out_in ? w.dim(0) : w.dim(1);
  ENCORE_CHECK(wk == K, invalid_argument, "linear: x {} has K = {} but weight {} (layout {}) has K = {}",
               x.shape().str(), K, w.shape().str(), layout_text(attrs.layout), wk);
  if (bias.defined())
    ENCORE_CHECK(bias.rank() == 1 && bias.dim(0) == N, invalid_argument,
                 "linear: bias {} must be [{}] for weight {} (layout {})", bias.shape().str(), N, w.shape().str(),
                 layout_text(attrs.layout));
  Shape expect = x.shape();
  expect[expect.rank() - 1] = N;
  ENCORE_CHECK(y.shape() == expect, invalid_argument, "linear: y {} should be {} for x {} and weight {}",
               y.shape().str(), expect.str(), x.shape().str(), w.shape().str());
  ENCORE_CHECK(y.is_contiguous(), invalid_argument, "linear: y {} must be contiguous", y.shape().str());
  auto floating = [](const Tensor& t) { return t.dtype() == DType::F32 || t.dtype() == DType::BF16; };
  ENCORE_CHECK(floating(x) && floating(w) && floating(y) && (!bias.defined() || floating(bias)), unsupported,
               "linear: dtypes x {}, weight {}, bias {}, y {} are not supported (f32 or bf16 each)",
               dtype_name(x.dtype()), dtype_name(w.dtype()), bias.defined() ? dtype_name(bias.dtype()) : "none",
               dtype_name(y.dtype()));
}

// K = 0: the product is empty, so y = act(bias or 0).
void fill_degenerate(const Tensor& bias, Activation act, const Tensor& y, std::int64_t M, std::int64_t N) {
  for (std::int64_t n = 0; n < N; ++n) {
    const float v = apply_activation(bias.defined() ? static_cast<float>(bias.get(n)) : 0.0f, act);
    for (std::int64_t m = 0; m < M; ++m) {
      if (y.dtype() == DType::F32)
        y.data_ptr<float>()[m * N + n] = v;
      else
        y.data_ptr<BFloat16>()[m * N + n] = float_to_bfloat16(v);
    }
  }
}

void linear_impl(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearAttrs& attrs, const Tensor& y,
                 const CpuContext& ctx) {
  check_args(x, w, bias, attrs, y);
  const bool out_in = attrs.layout == WeightLayout::out_in;
  const std::int64_t K = x.dim(-1), N = out_in ? w.dim(0) : w.dim(1);
  const std::int64_t M = K == 0 ? y.numel() / std::max<std::int64_t>(N, 1) : x.numel() / K;
  if (M == 0 || N == 0) return;
  if (K == 0) return fill_degenerate(bias, attrs.activation, y, M, N);

  const int threads = resolve_threads(ctx, call_work(double(M) * N * K, double(M) * K + double(N) * K + double(M) * N));
  ThreadScope scope(threads);

  // Compute type: bf16 x bf16 only when native bf16 pays off, else f32 (bf16 weights are packed
  // as f32 once, activations converted per call).
  const DType cdt = (w.dtype() == DType::BF16 && native_bf16(M)) ? DType::BF16 : DType::F32;
  // oneDNN 2.6 has no f32 -> bf16 matmul output: such a y gets an f32 scratch and a reorder.
  const DType ddt = cdt == DType::F32 ? DType::F32 : y.dtype();

  // Source rows: x itself when its rows share one stride, else a dense copy.
  std::int64_t ld = x.dtype() == cdt ? row_stride(x) : 0;
  if (ld != K && !tuning().linear_strided_rows) ld = 0;
  std::optional<Scratch> x_copy;
  const void* src = x.data();
  if (ld == 0) {
    x_copy.emplace(static_cast<std::size_t>(M * K) * dtype_size(cdt));
    to_dense(x, cdt, x_copy->data(), threads);
    src = x_copy->data();
    ld = K;
  }

  // Bias: f32 (any compute type) or bf16 (native bf16 only), dense.
  std::optional<Scratch> b_copy;
  const void* bias_ptr = nullptr;
  DType bdt = DType::F32;
  if (bias.defined()) {
    bdt = (bias.dtype() == DType::BF16 && cdt == DType::BF16) ? DType::BF16 : DType::F32;
    bias_ptr = bias.data();
    if (bias.dtype() != bdt || (N > 1 && bias.strides()[0] != 1)) {
      b_copy.emplace(static_cast<std::size_t>(N) * dtype_size(bdt));
      to_dense(bias, bdt, b_copy->data(), threads);
      bias_ptr = b_copy->data();
    }
  }

  // A few rows of f32 x, f32 weights and y (cdt f32: x rows and bias are f32 by now): the
  // weight-streaming kernel on its own packed layout instead of oneDNN.
  if (const RowsLoop loop = linear_rows_loop(M); loop != RowsLoop::none && x.dtype() == DType::F32 &&
                                                  w.dtype() == DType::F32 && y.dtype() == DType::F32) {
    // Held until the kernel is done: another thread's insert may evict the cache entry meanwhile.
    const dnnl::memory packed = PackedWeights::instance().rows_layout(w, out_in, threads, ctx.constant_weights);
    (loop == RowsLoop::avx512 ? rows::linear_rows_avx512 : rows::linear_rows_avx2)(
        static_cast<const float*>(src), ld, M, K, N, static_cast<const float*>(packed.get_data_handle()),
        static_cast<const float*>(bias_ptr), attrs.activation, y.data_ptr<float>(), threads);
    return;
  }

  // oneDNN's relu post-op turns NaN into 0; relu runs after the GEMM instead, as the standalone
  // activation (NaN stays NaN, like torch.relu), so that fusing it changes nothing.
  const Activation post_op = attrs.activation == Activation::relu ? Activation::none : attrs.activation;
  const std::string key = KeyBuilder("linear")
                              .add(M)
                              .add(K)
                              .add(N)
                              .add(ld)
                              .add(static_cast<std::int64_t>(cdt))
                              .add(static_cast<std::int64_t>(ddt))
                              .add(bias.defined() ? static_cast<std::int64_t>(bdt) : -1)
                              .add(static_cast<std::int64_t>(post_op))
                              .add(threads)
                              .str();
  auto plan = PrimitiveCache::instance().get<LinearPlan>(key, [&] {
    LinearPlan p;
    p.src = dnnl::memory::desc({M, K}, to_dnnl(cdt), {ld, 1});
    p.dst = dnnl::memory::desc({M, N}, to_dnnl(ddt), tag::ab);
    const dnnl::memory::desc w_any({K, N}, to_dnnl(cdt), tag::any);
    dnnl::post_ops ops;
    append_activation(ops, post_op);
    dnnl::primitive_attr attr = user_scratchpad_attr();
    attr.set_post_ops(ops);
    std::optional<dnnl::matmul::desc> d;
    if (bias.defined()) {
      p.bias = dnnl::memory::desc({1, N}, to_dnnl(bdt), tag::ab);
      d.emplace(p.src, w_any, p.bias, p.dst);
    } else {
      d.emplace(p.src, w_any, p.dst);
    }
    dnnl::matmul::primitive_desc pd(*d, attr, engine());
    p.weights = pd.weights_desc();
    p.primitive = dnnl::matmul(pd);
    return p;
  });

  // The weight as stored, in oneDNN's [K, N] order, then its packed copy (made once).
  const dnnl::memory::desc w_user(
      {K, N}, to_dnnl(w.dtype()),
      out_in ? dnnl::memory::dims{w.strides()[1], w.strides()[0]} : dnnl::memory::dims{w.strides()[0], w.strides()[1]});
  const dnnl::memory packed = PackedWeights::instance().get(w, w_user, plan->weights, threads, ctx.constant_weights);

  std::optional<Scratch> y_tmp;
  if (ddt != y.dtype()) y_tmp.emplace(static_cast<std::size_t>(M * N) * dtype_size(ddt));
  void* dst = y_tmp ? y_tmp->data() : y.data();
  Args args{{DNNL_ARG_SRC, wrap_cached(plan, 0, plan->src, src)},
            {DNNL_ARG_WEIGHTS, packed},
            {DNNL_ARG_DST, wrap_cached(plan, 1, plan->dst, dst)}};
  if (bias.defined()) args.add(DNNL_ARG_BIAS, wrap_cached(plan, 2, plan->bias, bias_ptr));
  execute(plan->primitive, args);
  if (y_tmp) reorder(plan->dst, dst, dense_md({M, N}, to_dnnl(y.dtype())), y.data(), threads);
  if (attrs.activation != post_op) activation(y, attrs.activation, y, ctx);
}

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearAttrs& attrs, const Tensor& y,
            const CpuContext& ctx) {
  try {
    linear_impl(x, w, bias, attrs, y, ctx);
  } catch (const dnnl::error& e) {
    detail::fail(ErrorCode::backend, "linear: oneDNN failed for x {} ({}), weight {} ({}): {}", x.shape().str(),
                 dtype_name(x.dtype()), w.shape().str(), dtype_name(w.dtype()), e.what());
  }
}

}  // namespace encore::cpu
