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
std::atomic<bool> g_force_fallback{false};  // set by force_int8_fallback_for_testing

// CPUs where oneDNN's u8 x s8 kernels saturate (onednn_int8_exact): the same product on oneDNN's
// f32 matmul, still exact. |x - zp| <= 255 and |w| <= 128 bound a term by 32640, so a sum of at
// most kExactTerms = 512 terms is an integer of magnitude below 2^24, which f32 holds exactly
// whatever order the kernel adds in (fpmath strict: no bf16 shortcuts). K is cut into that many
// chunks; each chunk's f32 result goes into an int32 sum (no overflow: int8_checks bounds K). The
// weights are cached as f32 chunks, 4x their int8 size. The epilogue is oneDNN's, in f32:
// y = scale_n * (acc + bias_n / (x_scale * w_scale_n)), then for u8/s8 outputs + y_zp, rounded
// half to even and saturated.
constexpr std::int64_t kExactTerms = 512;

struct F32ChunkPlan {
  dnnl::matmul primitive;
  dnnl::memory::desc src, weights, dst;
};

// x_f32 columns [k0, k0 + kc) of a row-major [M, K] times a packed [kc, N] f32 weight.
std::shared_ptr<const F32ChunkPlan> f32_chunk_plan(std::int64_t M, std::int64_t kc, std::int64_t K, std::int64_t N,
                                                   int threads) {
  const std::string key = KeyBuilder("linear_int8_f32").add(M).add(kc).add(K).add(N).add(threads).str();
  return PrimitiveCache::instance().get<F32ChunkPlan>(key, [&] {
    F32ChunkPlan p;
    p.src = dnnl::memory::desc({M, kc}, dt::f32, dnnl::memory::dims{K, 1});
    p.dst = dnnl::memory::desc({M, N}, dt::f32, tag::ab);
    const dnnl::memory::desc w_any({kc, N}, dt::f32, tag::any);
    dnnl::primitive_attr attr = user_scratchpad_attr();
    attr.set_fpmath_mode(dnnl::fpmath_mode::strict);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p.src, w_any, p.dst), attr, engine());
    p.weights = pd.weights_desc();
    p.primitive = dnnl::matmul(pd);
    return p;
  });
}

void linear_int8_via_f32(const std::uint8_t* x, std::int32_t x_zp, const Tensor& w, std::span<const float> scales,
                         const float* bias_scaled, const Tensor& y, std::int32_t y_zp, std::int64_t M, std::int64_t K,
                         std::int64_t N, int threads, const CpuContext& ctx) {
  Scratch xf_buf(static_cast<std::size_t>(M * K) * sizeof(float));
  auto* xf = static_cast<float*>(xf_buf.data());
  ewk::parallel_rows(M, K, ctx, [&](std::int64_t m0, std::int64_t m1) {
    for (std::int64_t i = m0 * K; i < m1 * K; ++i) xf[i] = static_cast<float>(std::int32_t{x[i]} - x_zp);
  });
  const std::int64_t chunks = (K + kExactTerms - 1) / kExactTerms, kc = (K + chunks - 1) / chunks;
  Scratch part_buf(static_cast<std::size_t>(M * N) * sizeof(float));
  auto* part = static_cast<float*>(part_buf.data());
  std::optional<Scratch> acc_buf;  // only when there are several chunks; else `part` is the sum
  if (chunks > 1) acc_buf.emplace(static_cast<std::size_t>(M * N) * sizeof(std::int32_t));
  auto* acc = acc_buf ? static_cast<std::int32_t*>(acc_buf->data()) : nullptr;
  // (At most two chunk lengths: kc, and a shorter last one.)
  const auto plan_kc = f32_chunk_plan(M, kc, K, N, threads);
  const std::int64_t k_last = K - (chunks - 1) * kc;
  const auto plan_last = k_last == kc ? plan_kc : f32_chunk_plan(M, k_last, K, N, threads);
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::int64_t k0 = c * kc, k1 = std::min(K, k0 + kc);
    const auto& plan = c == chunks - 1 ? plan_last : plan_kc;
    const Tensor wc = w.slice(1, k0, k1);
    const dnnl::memory::desc w_user({k1 - k0, N}, dt::s8, {wc.strides()[1], wc.strides()[0]});
    const dnnl::memory packed = PackedWeights::instance().get(wc, w_user, plan->weights, threads, ctx.constant_weights);
    execute(plan->primitive, Args{{DNNL_ARG_SRC, wrap_cached(plan, 0, plan->src, xf + k0)},
                                  {DNNL_ARG_WEIGHTS, packed},
                                  {DNNL_ARG_DST, wrap_cached(plan, 1, plan->dst, part)}});
    if (acc != nullptr)
      ewk::parallel_rows(M, N, ctx, [&](std::int64_t m0, std::int64_t m1) {
        for (std::int64_t i = m0 * N; i < m1 * N; ++i)
          acc[i] = (c == 0 ? 0 : acc[i]) + static_cast<std::int32_t>(part[i]);
      });
  }
  // The epilogue per row, branch-free inside: per-channel scale and bias as two arrays, the output
  // type outside the loop (so that it vectorises: it was a third of the time per element).
  std::vector<float> scale_n(static_cast<std::size_t>(N)), bias_n(static_cast<std::size_t>(N), 0.0f);
  for (std::int64_t n = 0; n < N; ++n) {
    scale_n[static_cast<std::size_t>(n)] = scales[scales.size() == 1 ? 0 : static_cast<std::size_t>(n)];
    if (bias_scaled != nullptr) bias_n[static_cast<std::size_t>(n)] = bias_scaled[n];
  }
  const float* sn = scale_n.data();
  const float* bn = bias_n.data();
  ewk::parallel_rows(M, N, ctx, [&](std::int64_t m0, std::int64_t m1) {
    std::vector<float> v(y.dtype() == DType::F32 ? 0 : static_cast<std::size_t>(N));  // requantised rows
    for (std::int64_t m = m0; m < m1; ++m) {
      float* out = y.dtype() == DType::F32 ? static_cast<float*>(y.data()) + m * N : v.data();
      if (acc != nullptr) {
        const std::int32_t* a = acc + m * N;
        for (std::int64_t n = 0; n < N; ++n) out[n] = sn[n] * (static_cast<float>(a[n]) + bn[n]);
      } else {
        const float* a = part + m * N;
        for (std::int64_t n = 0; n < N; ++n) out[n] = sn[n] * (a[n] + bn[n]);
      }
      if (y.dtype() == DType::F32) continue;
      const float zp = static_cast<float>(y_zp);
      if (y.dtype() == DType::U8) {
        auto* q = static_cast<std::uint8_t*>(y.data()) + m * N;
        for (std::int64_t n = 0; n < N; ++n)  // half to even, then saturated
          q[n] = static_cast<std::uint8_t>(std::clamp(std::nearbyint(out[n] + zp), 0.0f, 255.0f));
      } else {
        auto* q = static_cast<std::int8_t*>(y.data()) + m * N;
        for (std::int64_t n = 0; n < N; ++n)
          q[n] = static_cast<std::int8_t>(std::clamp(std::nearbyint(out[n] + zp), -128.0f, 127.0f));
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
  const bool exact_onednn = probing || (!g_force_fallback.load() && onednn_int8_exact());
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
    return linear_int8_via_f32(static_cast<const std::uint8_t*>(src), x_zp, w, scales,
                               b_scaled ? static_cast<const float*>(b_scaled->data()) : nullptr, y, y_zp, M, K, N,
                               threads, ctx);

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

void force_int8_fallback_for_testing(bool on) noexcept { g_force_fallback.store(on); }

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
