#include "backends/cpu/onednn_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <string_view>
#include <vector>

#include "backends/cpu/onednn_context.h"
#include "backends/cpu/packed_weights.h"
#include "core/check.h"
#include "kernels/common/int8_checks.h"
#include "kernels/cpu/simd_common.h"

namespace encore::cpu {
namespace {

using namespace onednn;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct Int8Plan {
  dnnl::matmul primitive;
  dnnl::memory::desc src, weights, bias, dst;
};

std::uint64_t fnv1a(const void* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
  return h;
}

void check_args(const Tensor& x, float x_scale, std::int32_t x_zp, const Tensor& w, std::span<const float> w_scales,
                const Tensor& bias, const Tensor& y, float y_scale, std::int32_t y_zp) {
  ENCORE_CHECK(x.defined() && w.defined() && y.defined(), invalid_argument,
               "linear_int8: x, weight and y must be defined");
  ENCORE_CHECK(
      x.device().is_cpu() && w.device().is_cpu() && y.device().is_cpu() && (!bias.defined() || bias.device().is_cpu()),
      invalid_argument, "linear_int8 (CPU): every tensor must be on the CPU");
  int8_checks::check_linear_int8(x, x_scale, x_zp, w, w_scales, bias, y, y_scale, y_zp);
}

bool onednn_int8_exact();
std::atomic<bool> g_force_loop{false};

// The same product in exact int32 arithmetic, and oneDNN's epilogue in f32: y = scale_n * (acc +
// bias_n / (x_scale * w_scale_n)), then for u8/s8 outputs + y_zp, rounded half to even and
// saturated. For CPUs where oneDNN's u8 x s8 kernels saturate (onednn_int8_exact).
void linear_int8_loop(const std::uint8_t* x, std::int32_t x_zp, const Tensor& w, std::span<const float> scales,
                      const float* bias_scaled, const Tensor& y, std::int32_t y_zp, std::int64_t M, std::int64_t K,
                      std::int64_t N, const CpuContext& ctx) {
  std::vector<std::int16_t> w16(static_cast<std::size_t>(N * K));  // widened once per call
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t k = 0; k < K; ++k)
      w16[static_cast<std::size_t>(n * K + k)] = static_cast<const std::int8_t*>(
          w.data())[n * w.strides()[0] + k * w.strides()[1]];
  const bool requant = y.dtype() != DType::F32;
  const float lo = y.dtype() == DType::U8 ? 0.0f : -128.0f, hi = y.dtype() == DType::U8 ? 255.0f : 127.0f;
  ewk::parallel_rows(M, N * K, ctx, [&](std::int64_t m0, std::int64_t m1) {
    std::vector<std::int16_t> xs(static_cast<std::size_t>(K));
    for (std::int64_t m = m0; m < m1; ++m) {
      for (std::int64_t k = 0; k < K; ++k)
        xs[static_cast<std::size_t>(k)] = static_cast<std::int16_t>(x[m * K + k] - x_zp);
      for (std::int64_t n = 0; n < N; ++n) {
        const std::int16_t* wr = w16.data() + n * K;
        std::int32_t acc = 0;  // |x - zp| <= 255, |w| <= 128: int16 operands, exact int32 sums
        for (std::int64_t k = 0; k < K; ++k) acc += std::int32_t{xs[static_cast<std::size_t>(k)]} * wr[k];
        const float v = scales[scales.size() == 1 ? 0 : static_cast<std::size_t>(n)] *
                        (static_cast<float>(acc) + (bias_scaled != nullptr ? bias_scaled[n] : 0.0f));
        const std::int64_t i = m * N + n;
        if (!requant) {
          y.data_ptr<float>()[i] = v;
        } else {
          const float q = std::clamp(std::nearbyint(v + static_cast<float>(y_zp)), lo, hi);  // half to even
          if (y.dtype() == DType::U8)
            y.data_ptr<std::uint8_t>()[i] = static_cast<std::uint8_t>(q);
          else
            y.data_ptr<std::int8_t>()[i] = static_cast<std::int8_t>(q);
        }
      }
    }
  });
}

void linear_int8_impl(const Tensor& x, float x_scale, std::int32_t x_zp, const Tensor& w,
                      std::span<const float> w_scales, const Tensor& bias, const Tensor& y, float y_scale,
                      std::int32_t y_zp, const CpuContext& ctx, bool probing = false) {
  check_args(x, x_scale, x_zp, w, w_scales, bias, y, y_scale, y_zp);
  const std::int64_t K = x.dim(-1), N = w.dim(0), M = K == 0 ? 0 : x.numel() / K;
  ENCORE_CHECK(K > 0 || y.numel() == 0, unsupported, "linear_int8: K = 0 (x {}) is not supported", x.shape().str());
  if (M == 0 || N == 0) return;
  const bool exact_onednn = probing || (!g_force_loop.load() && onednn_int8_exact());
  const int threads = resolve_threads(ctx, call_work(double(M) * N * K, double(M) * K + double(N) * K + double(M) * N));
  ThreadScope scope(threads);
  const bool requant = y.dtype() != DType::F32;

  // Per-channel output scales; oneDNN 2.6 adds the bias before scaling, so it is pre-divided.
  std::vector<float> scales(w_scales.size());
  for (std::size_t i = 0; i < scales.size(); ++i) scales[i] = x_scale * w_scales[i] / (requant ? y_scale : 1.0f);
  std::optional<Scratch> b_scaled;
  if (bias.defined()) {
    b_scaled.emplace(static_cast<std::size_t>(N) * sizeof(float));
    auto* b = static_cast<float*>(b_scaled->data());
    for (std::int64_t n = 0; n < N; ++n)
      b[n] = static_cast<float>(bias.get(n)) /
             (x_scale * w_scales[w_scales.size() == 1 ? 0 : static_cast<std::size_t>(n)]);
  }

  // Rows of x: dense rows are read in place, anything else is copied.
  std::optional<Scratch> x_copy;
  const void* src = x.data();
  if (!x.is_contiguous()) {
    x_copy.emplace(static_cast<std::size_t>(M * K));
    to_dense(x, DType::U8, x_copy->data(), threads);
    src = x_copy->data();
  }
  if (!exact_onednn)
    return linear_int8_loop(static_cast<const std::uint8_t*>(src), x_zp, w, scales,
                            b_scaled ? static_cast<const float*>(b_scaled->data()) : nullptr, y, y_zp, M, K, N, ctx);

  const std::size_t scale_bytes = scales.size() * sizeof(float);
  const std::string key = KeyBuilder("linear_int8")
                              .add(M)
                              .add(K)
                              .add(N)
                              .add(static_cast<std::int64_t>(y.dtype()))
                              .add(bias.defined())
                              .add(threads)
                              .add(static_cast<std::int64_t>(scales.size()))
                              .add(static_cast<std::int64_t>(fnv1a(scales.data(), scale_bytes)))
                              .add(static_cast<std::int64_t>(std::hash<std::string_view>{}(
                                  std::string_view(reinterpret_cast<const char*>(scales.data()), scale_bytes))))
                              .str();
  auto plan = PrimitiveCache::instance().get<Int8Plan>(key, [&] {
    Int8Plan p;
    p.src = dnnl::memory::desc({M, K}, dt::u8, tag::ab);
    p.dst = dnnl::memory::desc({M, N}, to_dnnl(y.dtype()), tag::ab);
    const dnnl::memory::desc w_any({K, N}, dt::s8, tag::any);
    dnnl::primitive_attr attr = user_scratchpad_attr();
    attr.set_output_scales(scales.size() == 1 ? 0 : 1 << 1, scales);
    // Runtime zero points keep one primitive (and one packed weight) for all of them; runtime
    // scales would drop oneDNN 2.6 from brgemm to gemm:jit.
    attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
    if (requant) attr.set_zero_points(DNNL_ARG_DST, 0, {DNNL_RUNTIME_S32_VAL});
    std::optional<dnnl::matmul::desc> d;
    if (bias.defined()) {
      p.bias = dnnl::memory::desc({1, N}, dt::f32, tag::ab);
      d.emplace(p.src, w_any, p.bias, p.dst);
    } else {
      d.emplace(p.src, w_any, p.dst);
    }
    dnnl::matmul::primitive_desc pd(*d, attr, engine());
    p.weights = pd.weights_desc();
    p.primitive = dnnl::matmul(pd);
    return p;
  });

  const dnnl::memory::desc w_user({K, N}, dt::s8, {w.strides()[1], w.strides()[0]});
  const dnnl::memory packed = PackedWeights::instance().get(w, w_user, plan->weights, threads, ctx.constant_weights);
  const dnnl::memory::desc zp_md({1}, dt::s32, tag::x);
  std::int32_t src_zp = x_zp, dst_zp = y_zp;
  Args args{{DNNL_ARG_SRC, wrap_cached(plan, 0, plan->src, src)},
            {DNNL_ARG_WEIGHTS, packed},
            {DNNL_ARG_DST, wrap_cached(plan, 1, plan->dst, y.data())},
            {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, wrap_cached(plan, 2, zp_md, &src_zp)}};
  if (requant) args.add(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, wrap_cached(plan, 3, zp_md, &dst_zp));
  if (bias.defined()) args.add(DNNL_ARG_BIAS, wrap_cached(plan, 4, plan->bias, b_scaled->data()));
  execute(plan->primitive, args);
}

// Whether oneDNN's u8 x s8 products are exact here. Without VNNI (AVX2, or AVX-512 before
// Cascade Lake) oneDNN multiplies with vpmaddubsw, whose pairwise s16 sums saturate: 255 * 127 * 2
// exceeds 32767. Asked of the kernel itself, once, with such a pair.
bool onednn_int8_exact() {
  static const bool exact = [] {
    const Tensor x = Tensor::from_vector(std::vector<std::uint8_t>{255, 255}, {1, 2});
    const Tensor w = Tensor::from_vector(std::vector<std::int8_t>{127, 127, -128, -128}, {2, 2});
    const Tensor y = Tensor::zeros({1, 2}, DType::F32);
    const float one = 1.0f;
    linear_int8_impl(x, 1.0f, 0, w, {&one, 1}, Tensor(), y, 1.0f, 0, CpuContext{1}, /*probing=*/true);
    PackedWeights::instance().evict(w);
    return y.data_ptr<float>()[0] == 64770.0f && y.data_ptr<float>()[1] == -65280.0f;
  }();
  return exact;
}

}  // namespace

void force_int8_loop_for_testing(bool on) noexcept { g_force_loop.store(on); }

void linear_int8(const Tensor& x_u8, float x_scale, std::int32_t x_zero_point, const Tensor& w_s8,
                 std::span<const float> w_scales, const Tensor& bias_f32, const Tensor& y, float y_scale,
                 std::int32_t y_zero_point, const CpuContext& ctx) {
  try {
    linear_int8_impl(x_u8, x_scale, x_zero_point, w_s8, w_scales, bias_f32, y, y_scale, y_zero_point, ctx);
  } catch (const dnnl::error& e) {
    detail::fail(ErrorCode::backend, "linear_int8: oneDNN failed for x {}, weight {}: {}", x_u8.shape().str(),
                 w_s8.shape().str(), e.what());
  }
}

}  // namespace encore::cpu
