// CUDA GEMM family (linear, matmul, conv2d/conv1d, int8 linear) against the CPU kernels on the
// same inputs: f32 with TF32 off to 1e-5, f16/bf16 to 1e-2 (relative L2). The CPU side runs in f32
// on the already rounded inputs. Outputs are poisoned (0xFF) before every launch. linear's GEMV
// kernels (M <= 16) are also checked against the double reference, run to run (bitwise), against
// the cuBLASLt path and under CUDA-graph replay.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_int8.h"
#include "backends/cuda/cublas_gemm.h"
#include "cuda_test_util.h"
#include "reference/ref_gemm.h"

namespace encore::cuda {
namespace {

using test::Pair;
using test::as_f32;
using test::close_to;
using test::poisoned;
using test::tolerance;
using test::upload;
using test::upload_view;

constexpr DType kFloatTypes[] = {DType::F32, DType::F16, DType::BF16};
constexpr Activation kActivations[] = {Activation::none, Activation::gelu,    Activation::gelu_tanh, Activation::relu,
                                       Activation::silu, Activation::sigmoid, Activation::tanh};

std::string trace(DType dt, const std::string& what) { return std::string(dtype_name(dt)) + " " + what; }

// Forces linear's GEMV path (M <= 16) on or off for a scope, whatever ENCORE_CUDA_GEMV says.
class GemvMode {
 public:
  explicit GemvMode(bool on) : GemvMode(on ? GemvPolicy::always : GemvPolicy::never) {}
  explicit GemvMode(GemvPolicy policy) : saved_(gemv_policy()) { set_gemv_policy(policy); }
  ~GemvMode() { set_gemv_policy(saved_); }
  GemvMode(const GemvMode&) = delete;
  GemvMode& operator=(const GemvMode&) = delete;

 private:
  GemvPolicy saved_;
};

enum class XKind { dense, row_slice, transposed, scattered };
enum class WKind { dense, transposed_view };
enum class BiasKind { none, dense, f32, strided };

Pair make_x(XKind kind, std::int64_t M, std::int64_t K, DType dt, std::mt19937& rng) {
  switch (kind) {
    case XKind::dense: return test::random_pair({M, K}, dt, rng);
    case XKind::row_slice: {  // a column slice of a wider tensor (fused QKV): row stride 3K+1, odd offset
      const Tensor h = ref::random_tensor({M, 3 * K + 1}, dt, rng).slice(1, 1, 1 + K);
      return {h, upload_view(h)};
    }
    case XKind::transposed: {  // [M, K] with strides (1, M)
      const Tensor h = ref::random_tensor({K, M}, dt, rng).transpose(0, 1);
      return {h, upload_view(h)};
    }
    case XKind::scattered:  // [2, M, K] whose leading dims do not collapse (copied to dense)
      return test::random_strided_pair({2, M, K}, dt, rng);
  }
  return {};
}

Pair make_w(WKind kind, WeightLayout layout, std::int64_t K, std::int64_t N, DType dt, std::mt19937& rng) {
  const bool out_in = layout == WeightLayout::out_in;
  const Shape shape = out_in ? Shape{N, K} : Shape{K, N};
  if (kind == WKind::dense) return test::random_pair(shape, dt, rng);
  const Tensor h = ref::random_tensor({shape[1], shape[0]}, dt, rng).transpose(0, 1);
  return {h, upload_view(h)};
}

Pair make_bias(BiasKind kind, std::int64_t N, DType dt, std::mt19937& rng) {
  switch (kind) {
    case BiasKind::none: return {};
    case BiasKind::dense: return test::random_pair({N}, dt, rng);
    case BiasKind::f32: return test::random_pair({N}, DType::F32, rng);
    case BiasKind::strided: {
      const Tensor h = ref::random_tensor({2 * N}, dt, rng).slice(0, 0, 2 * N, 2);
      return {h, upload_view(h)};
    }
  }
  return {};
}

// Runs cuda::linear and cpu::linear (f32) on the same inputs and compares.
void check_linear(const Pair& x, const Pair& w, const Pair& bias, WeightLayout layout, Activation act, DType dt,
                  bool tf32 = false) {
  const std::int64_t N = layout == WeightLayout::out_in ? w.host.dim(0) : w.host.dim(1);
  Shape y_shape = x.host.shape();
  y_shape[y_shape.rank() - 1] = N;
  const LinearAttrs attrs{layout, act};
  Tensor expected = Tensor::empty(y_shape, DType::F32);
  cpu::linear(as_f32(x.host), as_f32(w.host), bias.host.defined() ? as_f32(bias.host) : Tensor(), attrs, expected,
              cpu::CpuContext{});
  Tensor y = poisoned(y_shape, dt);
  CudaContext ctx = test::context();
  ctx.allow_tf32 = tf32;
  linear(x.device, w.device, bias.device, attrs, y, ctx);
  EXPECT_TRUE(close_to(y, expected, tf32 ? 1e-2 : tolerance(dt)));
}

// ---- linear ---------------------------------------------------------------------------------------

TEST(CudaLinear, ShapesAndLayouts) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(1);
  const std::int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {1, 768, 2304}, {64, 128, 96}, {197, 64, 72}};
  for (const bool gemv : {true, false})  // small M: the GEMV kernels, then cuBLASLt
    for (DType dt : kFloatTypes)
      for (const auto& s : shapes)
        for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out}) {
          const GemvMode mode(gemv);
          SCOPED_TRACE(trace(dt, fmt::format("M {} K {} N {} layout {} gemv {}", s[0], s[1], s[2],
                                             static_cast<int>(layout), gemv)));
          check_linear(make_x(XKind::dense, s[0], s[1], dt, rng), make_w(WKind::dense, layout, s[1], s[2], dt, rng),
                       make_bias(BiasKind::dense, s[2], dt, rng), layout, Activation::none, dt);
        }
}

TEST(CudaLinear, Activations) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(2);
  for (DType dt : kFloatTypes)
    for (Activation act : kActivations)
      for (BiasKind bias : {BiasKind::none, BiasKind::dense}) {
        SCOPED_TRACE(trace(dt, fmt::format("{} bias {}", activation_name(act), static_cast<int>(bias))));
        // Inputs in [-2, 2) so that the activations see both tails.
        const Pair x = test::random_pair({37, 64}, dt, rng, -2.0, 2.0);
        check_linear(x, make_w(WKind::dense, WeightLayout::out_in, 64, 48, dt, rng), make_bias(bias, 48, dt, rng),
                     WeightLayout::out_in, act, dt);
      }
}

TEST(CudaLinear, StridedInputsAndWeights) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(3);
  for (DType dt : kFloatTypes)
    for (XKind xk : {XKind::dense, XKind::row_slice, XKind::transposed, XKind::scattered})
      for (WKind wk : {WKind::dense, WKind::transposed_view})
        for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out}) {
          SCOPED_TRACE(trace(dt, fmt::format("x kind {} w kind {} layout {}", static_cast<int>(xk),
                                             static_cast<int>(wk), static_cast<int>(layout))));
          check_linear(make_x(xk, 20, 33, dt, rng), make_w(wk, layout, 33, 24, dt, rng),
                       make_bias(BiasKind::dense, 24, dt, rng), layout, Activation::gelu, dt);
        }
}

TEST(CudaLinear, BiasVariants) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(4);
  for (const bool gemv : {true, false})  // M = 9: the GEMV kernels, then cuBLASLt's epilogues
    for (DType dt : kFloatTypes)
      for (BiasKind bias : {BiasKind::none, BiasKind::dense, BiasKind::f32, BiasKind::strided})
        for (Activation act : {Activation::none, Activation::relu, Activation::gelu_tanh}) {
          const GemvMode mode(gemv);
          SCOPED_TRACE(trace(dt, fmt::format("bias {} {} gemv {}", static_cast<int>(bias), activation_name(act), gemv)));
          check_linear(make_x(XKind::dense, 9, 40, dt, rng),
                       make_w(WKind::dense, WeightLayout::in_out, 40, 30, dt, rng), make_bias(bias, 30, dt, rng),
                       WeightLayout::in_out, act, dt);
        }
}

TEST(CudaLinear, DegenerateShapes) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(5);
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dt));
    // K = 0: y = act(bias).
    check_linear(test::random_pair({4, 0}, dt, rng), test::random_pair({6, 0}, dt, rng),
                 make_bias(BiasKind::dense, 6, dt, rng), WeightLayout::out_in, Activation::relu, dt);
    // M = 0: nothing to do (and nothing to read).
    const Pair x0 = test::random_pair({0, 8}, dt, rng), w0 = test::random_pair({5, 8}, dt, rng);
    Tensor y0 = poisoned({0, 5}, dt);
    linear(x0.device, w0.device, Tensor(), LinearAttrs{}, y0, test::context());
    // A rank-3 x and N = 1.
    check_linear(test::random_pair({2, 3, 16}, dt, rng), test::random_pair({1, 16}, dt, rng), Pair{},
                 WeightLayout::out_in, Activation::none, dt);
  }
  test::runtime().synchronize();
}

TEST(CudaLinear, Tf32IsOptIn) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(6);
  check_linear(make_x(XKind::dense, 64, 256, DType::F32, rng),
               make_w(WKind::dense, WeightLayout::out_in, 256, 128, DType::F32, rng), Pair{}, WeightLayout::out_in,
               Activation::none, DType::F32, /*tf32=*/true);
}

TEST(CudaLinear, PlansAreCachedPerShape) {
  ENCORE_REQUIRE_GPU();
  const GemvMode cublaslt(false);  // M = 11 would take the GEMV kernels (no plans)
  std::mt19937 rng(7);
  const Pair x = test::random_pair({11, 24}, DType::F16, rng), w = test::random_pair({40, 24}, DType::F16, rng);
  Tensor y = poisoned({11, 40}, DType::F16);
  linear(x.device, w.device, Tensor(), LinearAttrs{}, y, test::context());
  const std::size_t plans = gemm_plan_count(test::runtime());
  for (int i = 0; i < 3; ++i) linear(x.device, w.device, Tensor(), LinearAttrs{}, y, test::context());
  EXPECT_EQ(gemm_plan_count(test::runtime()), plans);
}

TEST(CudaLinear, ArgumentErrors) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(8);
  const Pair x = test::random_pair({3, 8}, DType::F32, rng), w = test::random_pair({5, 7}, DType::F32, rng);
  Tensor y = poisoned({3, 5}, DType::F32);
  const auto code_of = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::cancelled;  // "no error"
  };
  EXPECT_EQ(code_of([&] { linear(x.device, w.device, Tensor(), LinearAttrs{}, y, test::context()); }),
            ErrorCode::invalid_argument);  // K mismatch
  const Pair w_ok = test::random_pair({5, 8}, DType::F32, rng);
  EXPECT_EQ(code_of([&] { linear(x.host, w_ok.device, Tensor(), LinearAttrs{}, y, test::context()); }),
            ErrorCode::invalid_argument);  // x on the host
  EXPECT_EQ(code_of([&] { linear(x.device, w_ok.device, Tensor(), LinearAttrs{}, y, CudaContext{}); }),
            ErrorCode::invalid_argument);  // no runtime
  const Tensor xi = upload(Tensor::zeros({3, 8}, DType::I32));
  EXPECT_EQ(code_of([&] { linear(xi, w_ok.device, Tensor(), LinearAttrs{}, y, test::context()); }),
            ErrorCode::unsupported);
}

// ---- linear: GEMV kernels (M <= 16) ------------------------------------------------------------------

Shape linear_out_shape(const Tensor& x, const Tensor& w, WeightLayout layout) {
  Shape s = x.shape();
  s[s.rank() - 1] = layout == WeightLayout::out_in ? w.dim(0) : w.dim(1);
  return s;
}

// cuda::linear into a poisoned y.
Tensor run_linear(const Pair& x, const Pair& w, const Pair& bias, const LinearAttrs& attrs, DType dt) {
  Tensor y = poisoned(linear_out_shape(x.host, w.host, attrs.layout), dt);
  linear(x.device, w.device, bias.device, attrs, y, test::context());
  return y;
}

// y against the double-precision reference on the same (already rounded) host inputs.
::testing::AssertionResult matches_reference(const Tensor& y, const Pair& x, const Pair& w, const Pair& bias,
                                             const LinearAttrs& attrs, double tol) {
  const ref::RefTensor b = bias.host.defined() ? ref::from_tensor(bias.host) : ref::RefTensor();
  const ref::RefTensor want = ref::linear(ref::from_tensor(x.host), ref::from_tensor(w.host),
                                          bias.host.defined() ? &b : nullptr, attrs.layout, attrs.activation);
  const ref::RefTensor got = ref::from_tensor(test::download(y));
  for (std::size_t i = 0; i < got.data.size(); ++i)
    if (std::isnan(got.data[i])) return ::testing::AssertionFailure() << "element " << i << " is NaN (unwritten?)";
  const double err = ref::relative_error(got, want);
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "relative error " << err << " > " << tol;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor ha = test::download(a), hb = test::download(b);
  return ha.nbytes() == hb.nbytes() && std::memcmp(ha.data(), hb.data(), ha.nbytes()) == 0;
}

// A [rows, cols] weight as columns [first, first + cols) of a [rows, wide] tensor, wide a multiple
// of 8: 16-byte aligned rows with a partial last vector (first = 0) or a misaligned base (first = 1).
Pair sliced_weight(std::int64_t rows, std::int64_t cols, std::int64_t first, DType dt, std::mt19937& rng) {
  const std::int64_t wide = (cols + 1 + 7) / 8 * 8;
  const Tensor h = ref::random_tensor({rows, wide}, dt, rng).slice(1, first, first + cols);
  return {h, upload_view(h)};
}

TEST(CudaGemv, MatchesDoubleReference) {
  ENCORE_REQUIRE_GPU();
  const GemvMode on(true);
  std::mt19937 rng(21);
  // Odd K and N (scalar weight loads where rows are not 16-byte aligned) and aligned ones.
  const std::int64_t kn[][2] = {{7, 33}, {33, 7}, {770, 1000}, {1000, 770}, {64, 2304}};
  int variant = 0;
  for (DType dt : kFloatTypes)
    for (const std::int64_t M : {1, 2, 3, 5, 8, 16})
      for (const auto& [K, N] : kn)
        for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out}) {
          const Activation act = kActivations[variant % 7];
          const BiasKind bias_kind = variant % 2 == 0 ? BiasKind::dense : BiasKind::none;
          ++variant;
          SCOPED_TRACE(trace(dt, fmt::format("M {} K {} N {} layout {} {} bias {}", M, K, N, static_cast<int>(layout),
                                             activation_name(act), static_cast<int>(bias_kind))));
          const Pair x = test::random_pair({M, K}, dt, rng), w = make_w(WKind::dense, layout, K, N, dt, rng);
          const Pair bias = make_bias(bias_kind, N, dt, rng);
          const LinearAttrs attrs{layout, act};
          ASSERT_TRUE(linear_takes_gemv(test::runtime(), x.device, w.device, attrs));
          EXPECT_TRUE(matches_reference(run_linear(x, w, bias, attrs, dt), x, w, bias, attrs, tolerance(dt)));
        }
}

TEST(CudaGemv, StridedOperands) {
  ENCORE_REQUIRE_GPU();
  const GemvMode on(true);
  std::mt19937 rng(22);
  const std::int64_t M = 5, K = 203, N = 997;  // 203 and 997: partial vectors for f32 and 16-bit
  for (DType dt : kFloatTypes)
    for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out}) {
      const bool out_in = layout == WeightLayout::out_in;
      const LinearAttrs attrs{layout, Activation::gelu};
      // x: a column slice of a wider tensor (odd offset), a transposed view, collapsing batch dims
      // [1, 5, K] and [5, 1, K] of a slice, and batch dims that do not collapse (cuBLASLt).
      const Tensor x3 = ref::random_tensor({M, 1, 2 * K}, dt, rng).slice(2, K, 2 * K);
      std::vector<std::pair<std::string, Pair>> xs;
      xs.emplace_back("row slice", make_x(XKind::row_slice, M, K, dt, rng));
      xs.emplace_back("transposed", make_x(XKind::transposed, M, K, dt, rng));
      xs.emplace_back("rank 3 slice", Pair{x3, upload_view(x3)});
      xs.emplace_back("rank 3", test::random_pair({1, M, K}, dt, rng));
      // w: transposed views (the other kernel), aligned rows with a tail, a misaligned base.
      std::vector<std::pair<std::string, Pair>> ws;
      ws.emplace_back("dense", make_w(WKind::dense, layout, K, N, dt, rng));
      ws.emplace_back("transposed view", make_w(WKind::transposed_view, layout, K, N, dt, rng));
      ws.emplace_back("padded rows", sliced_weight(out_in ? N : K, out_in ? K : N, 0, dt, rng));
      ws.emplace_back("misaligned", sliced_weight(out_in ? N : K, out_in ? K : N, 1, dt, rng));
      for (const auto& [xname, x] : xs)
        for (const auto& [wname, w] : ws)
          for (BiasKind bias_kind : {BiasKind::f32, BiasKind::strided}) {
            SCOPED_TRACE(trace(dt, fmt::format("layout {} x {} w {} bias {}", static_cast<int>(layout), xname, wname,
                                               static_cast<int>(bias_kind))));
            const Pair bias = make_bias(bias_kind, N, dt, rng);
            ASSERT_TRUE(linear_takes_gemv(test::runtime(), x.device, w.device, attrs));
            EXPECT_TRUE(matches_reference(run_linear(x, w, bias, attrs, dt), x, w, bias, attrs, tolerance(dt)));
          }
      const Pair scattered = make_x(XKind::scattered, M, K, dt, rng), w = make_w(WKind::dense, layout, K, N, dt, rng);
      EXPECT_FALSE(linear_takes_gemv(test::runtime(), scattered.device, w.device, attrs));
      EXPECT_TRUE(matches_reference(run_linear(scattered, w, Pair{}, attrs, dt), scattered, w, Pair{}, attrs,
                                    tolerance(dt)));
    }
}

TEST(CudaGemv, SelectionBounds) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(23);
  const Pair w = test::random_pair({32, 24}, DType::F16, rng);
  const LinearAttrs attrs{};
  const GemvMode on(true);
  EXPECT_TRUE(linear_takes_gemv(test::runtime(), test::random_pair({16, 24}, DType::F16, rng).device, w.device, attrs));
  EXPECT_TRUE(linear_takes_gemv(test::runtime(), test::random_pair({2, 8, 24}, DType::F16, rng).device, w.device, attrs));
  EXPECT_FALSE(linear_takes_gemv(test::runtime(), test::random_pair({17, 24}, DType::F16, rng).device, w.device, attrs));
  EXPECT_FALSE(linear_takes_gemv(test::runtime(), test::random_pair({3, 0}, DType::F16, rng).device,
                                 test::random_pair({32, 0}, DType::F16, rng).device, attrs));
  const GemvMode off(false);
  EXPECT_FALSE(linear_takes_gemv(test::runtime(), test::random_pair({1, 24}, DType::F16, rng).device, w.device, attrs));
  // automatic: one f16/bf16 row, and only with programmatic dependent launch.
  CudaRuntime& rt = test::runtime();
  const GemvMode automatic(GemvPolicy::automatic);
  const bool saved_pdl = rt.programmatic_launch();
  for (const bool pdl : {false, true}) {
    rt.set_programmatic_launch(pdl);
    SCOPED_TRACE(rt.programmatic_launch() ? "pdl" : "no pdl");
    const Pair w32 = test::random_pair({32, 24}, DType::F32, rng), wb = test::random_pair({32, 24}, DType::BF16, rng);
    EXPECT_EQ(linear_takes_gemv(rt, test::random_pair({1, 24}, DType::F16, rng).device, w.device, attrs),
              rt.programmatic_launch());
    EXPECT_EQ(linear_takes_gemv(rt, test::random_pair({1, 1, 24}, DType::BF16, rng).device, wb.device, attrs),
              rt.programmatic_launch());
    EXPECT_FALSE(linear_takes_gemv(rt, test::random_pair({2, 24}, DType::F16, rng).device, w.device, attrs));
    EXPECT_FALSE(linear_takes_gemv(rt, test::random_pair({1, 24}, DType::F32, rng).device, w32.device, attrs));
  }
  rt.set_programmatic_launch(saved_pdl);
}

// Shapes that split K over CTAs and, K-contiguous, loop CTAs over column tiles (LM-head-like; on an
// H200's 132 SMs [9000, 1000] out_in loops at every M and also splits K at M = 16). In_out splits
// are summed within a thread-block cluster on sm_90 when they are at most 8 (K 768 and 3072), and
// through the global workspace otherwise (K 4099 needs 9).
TEST(CudaGemv, SplitsAndTileLoops) {
  ENCORE_REQUIRE_GPU();
  const GemvMode on(true);
  std::mt19937 rng(24);
  struct Case {
    std::int64_t K, N;
    WeightLayout layout;
  };
  const Case cases[] = {{3072, 768, WeightLayout::in_out},
                        {768, 3072, WeightLayout::in_out},
                        {4099, 40, WeightLayout::in_out},
                        {1000, 9000, WeightLayout::out_in},
                        {5000, 96, WeightLayout::out_in}};
  for (DType dt : {DType::F16, DType::F32})
    for (const std::int64_t M : {1, 8, 16})
      for (const Case& c : cases) {
        SCOPED_TRACE(trace(dt, fmt::format("M {} K {} N {} layout {}", M, c.K, c.N, static_cast<int>(c.layout))));
        const Pair x = test::random_pair({M, c.K}, dt, rng), w = make_w(WKind::dense, c.layout, c.K, c.N, dt, rng);
        const Pair bias = make_bias(BiasKind::dense, c.N, dt, rng);
        const LinearAttrs attrs{c.layout, Activation::gelu_tanh};
        EXPECT_TRUE(matches_reference(run_linear(x, w, bias, attrs, dt), x, w, bias, attrs, tolerance(dt)));
      }
}

TEST(CudaGemv, BitwiseReproducible) {
  ENCORE_REQUIRE_GPU();
  const GemvMode on(true);
  std::mt19937 rng(25);
  struct Case {
    std::int64_t M, K, N;
    WeightLayout layout;
  };
  const Case cases[] = {{1, 3072, 768, WeightLayout::in_out},
                        {5, 768, 2304, WeightLayout::in_out},
                        {1, 768, 768, WeightLayout::out_in},
                        {16, 1000, 9000, WeightLayout::out_in}};
  for (DType dt : kFloatTypes) {
    std::vector<Pair> xs, ws, bs;
    std::vector<Tensor> first;
    for (const Case& c : cases) {
      xs.push_back(test::random_pair({c.M, c.K}, dt, rng));
      ws.push_back(make_w(WKind::dense, c.layout, c.K, c.N, dt, rng));
      bs.push_back(make_bias(BiasKind::dense, c.N, dt, rng));
      first.push_back(run_linear(xs.back(), ws.back(), bs.back(), LinearAttrs{c.layout, Activation::relu}, dt));
    }
    // Interleaved repeats: the split counters must be back at zero after every launch.
    for (int rep = 0; rep < 5; ++rep)
      for (std::size_t i = 0; i < std::size(cases); ++i) {
        SCOPED_TRACE(trace(dt, fmt::format("case {} repeat {}", i, rep)));
        const Tensor again =
            run_linear(xs[i], ws[i], bs[i], LinearAttrs{cases[i].layout, Activation::relu}, dt);
        EXPECT_TRUE(same_bytes(again, first[i]));
      }
  }
}

TEST(CudaGemv, AgreesWithCublasLt) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(26);
  for (DType dt : kFloatTypes)
    for (const std::int64_t M : {1, 4, 16})
      for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out}) {
        SCOPED_TRACE(trace(dt, fmt::format("M {} layout {}", M, static_cast<int>(layout))));
        const Pair x = test::random_pair({M, 768}, dt, rng), w = make_w(WKind::dense, layout, 768, 2304, dt, rng);
        const Pair bias = make_bias(BiasKind::dense, 2304, dt, rng);
        const LinearAttrs attrs{layout, Activation::gelu_tanh};
        Tensor by_gemv, by_cublaslt;
        {
          const GemvMode on(true);
          ASSERT_TRUE(linear_takes_gemv(test::runtime(), x.device, w.device, attrs));
          by_gemv = run_linear(x, w, bias, attrs, dt);
        }
        {
          const GemvMode off(false);
          ASSERT_FALSE(linear_takes_gemv(test::runtime(), x.device, w.device, attrs));
          by_cublaslt = run_linear(x, w, bias, attrs, dt);
        }
        EXPECT_TRUE(close_to(by_gemv, as_f32(test::download(by_cublaslt)), tolerance(dt)));
      }
}

// Recorded into a CUDA graph (after a warm-up outside it) and replayed: the same bytes as eager runs.
TEST(CudaGemv, GraphReplayMatchesEager) {
  ENCORE_REQUIRE_GPU();
  const GemvMode on(true);
  std::mt19937 rng(27);
  CudaRuntime& rt = test::runtime();
  const cudaStream_t stream = rt.stream();
  for (DType dt : {DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Pair x = test::random_pair({1, 768}, dt, rng), x8 = test::random_pair({8, 768}, dt, rng);
    const Pair w_in_out = make_w(WKind::dense, WeightLayout::in_out, 768, 768, dt, rng);
    const Pair w_out_in = make_w(WKind::dense, WeightLayout::out_in, 768, 5000, dt, rng);
    const Pair bias = make_bias(BiasKind::dense, 768, dt, rng);
    const LinearAttrs a1{WeightLayout::in_out, Activation::gelu_tanh}, a2{WeightLayout::out_in, Activation::none};
    const Tensor eager1 = run_linear(x, w_in_out, bias, a1, dt), eager2 = run_linear(x8, w_out_in, Pair{}, a2, dt);
    Tensor y1 = poisoned(eager1.shape(), dt), y2 = poisoned(eager2.shape(), dt);
    rt.synchronize();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    linear(x.device, w_in_out.device, bias.device, a1, y1, test::context());
    linear(x8.device, w_out_in.device, Tensor(), a2, y2, test::context());
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int rep = 0; rep < 3; ++rep) {
      rt.memset(y1.data(), 0xFF, y1.nbytes());
      rt.memset(y2.data(), 0xFF, y2.nbytes());
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      EXPECT_TRUE(same_bytes(y1, eager1)) << "replay " << rep;
      EXPECT_TRUE(same_bytes(y2, eager2)) << "replay " << rep;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

// ---- matmul ---------------------------------------------------------------------------------------

void check_matmul(const Pair& a, const Pair& b, const MatMulAttrs& attrs, DType dt) {
  const int r = std::max(a.host.rank(), b.host.rank());
  Shape y_shape;
  for (int i = 0; i < r - 2; ++i) {  // broadcast batch dims
    const int ia = i - (r - a.host.rank()), ib = i - (r - b.host.rank());
    const std::int64_t ea = ia >= 0 ? a.host.shape()[ia] : 1, eb = ib >= 0 ? b.host.shape()[ib] : 1;
    y_shape.push_back(std::max(ea, eb));
  }
  y_shape.push_back(attrs.trans_a ? a.host.dim(-1) : a.host.dim(-2));
  y_shape.push_back(attrs.trans_b ? b.host.dim(-2) : b.host.dim(-1));
  Tensor expected = Tensor::empty(y_shape, DType::F32);
  cpu::matmul(as_f32(a.host), as_f32(b.host), attrs, expected, cpu::CpuContext{});
  Tensor y = poisoned(y_shape, dt);
  matmul(a.device, b.device, attrs, y, test::context());
  EXPECT_TRUE(close_to(y, expected, tolerance(dt)));
}

// Stored shape of an operand: [batch..., rows, cols], last two swapped when transposed.
Shape stored(Shape batch, std::int64_t rows, std::int64_t cols, bool trans) {
  batch.push_back(trans ? cols : rows);
  batch.push_back(trans ? rows : cols);
  return batch;
}

TEST(CudaMatmul, BatchedBroadcastAndTransposes) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(9);
  const std::int64_t M = 13, K = 21, N = 10;
  const std::vector<std::pair<Shape, Shape>> batches = {
      {Shape{2, 3}, Shape{2, 3}},  // same batch: one strided-batched call
      {Shape{2, 3}, Shape{}},      // b broadcast: batch stride 0
      {Shape{}, Shape{4}},         // a broadcast
      {Shape{2, 1}, Shape{1, 3}},  // mixed broadcast: loops over the leading dim
      {Shape{}, Shape{}}};
  for (DType dt : kFloatTypes)
    for (const auto& [ba, bb] : batches)
      for (int t = 0; t < 4; ++t) {
        const MatMulAttrs attrs{(t & 1) != 0, (t & 2) != 0, t == 3 ? 0.5f : 1.0f};
        SCOPED_TRACE(trace(dt, fmt::format("a batch {} b batch {} trans {} {}", ba.str(), bb.str(), attrs.trans_a,
                                           attrs.trans_b)));
        check_matmul(test::random_pair(stored(ba, M, K, attrs.trans_a), dt, rng),
                     test::random_pair(stored(bb, K, N, attrs.trans_b), dt, rng), attrs, dt);
      }
}

TEST(CudaMatmul, AttentionStyleViews) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(10);
  const std::int64_t B = 2, T = 9, H = 3, D = 16;
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dt));
    // q [B, T, H, D] -> [B, H, T, D]; k -> [B, H, D, T]: scores = q k^T without copies.
    const Tensor qh = ref::random_tensor({B, T, H, D}, dt, rng), kh = ref::random_tensor({B, T, H, D}, dt, rng);
    const Pair q{qh.permute({0, 2, 1, 3}), upload_view(qh).permute({0, 2, 1, 3})};
    const Pair k{kh.permute({0, 2, 3, 1}), upload_view(kh).permute({0, 2, 3, 1})};
    check_matmul(q, k, MatMulAttrs{false, false, 0.25f}, dt);
    // The same through trans_b on the [B, H, T, D] view of k.
    const Pair k2{kh.permute({0, 2, 1, 3}), upload_view(kh).permute({0, 2, 1, 3})};
    check_matmul(q, k2, MatMulAttrs{false, true, 0.25f}, dt);
    // Interleaved batch members (batch stride 15 < matrix row stride 45).
    check_matmul(test::random_strided_pair({3, 7, 12}, dt, rng), test::random_pair({3, 12, 5}, dt, rng),
                 MatMulAttrs{}, dt);
    // No unit stride in the matrix (every other column): copied to a dense scratch first.
    const Tensor every_other = ref::random_tensor({3, 7, 24}, dt, rng).slice(2, 0, 24, 2);
    check_matmul(Pair{every_other, upload_view(every_other)}, test::random_pair({12, 5}, dt, rng), MatMulAttrs{}, dt);
  }
}

TEST(CudaMatmul, DegenerateShapes) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(11);
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dt));
    check_matmul(test::random_pair({2, 4, 0}, dt, rng), test::random_pair({2, 0, 3}, dt, rng), MatMulAttrs{}, dt);
    check_matmul(test::random_pair({1, 9}, dt, rng), test::random_pair({9, 1}, dt, rng), MatMulAttrs{}, dt);
  }
}

// ---- convolution ------------------------------------------------------------------------------------

void check_conv2d(const Pair& x, const Pair& w, const Pair& bias, const Conv2dAttrs& attrs, DType dt) {
  const std::int64_t H = x.host.dim(2), W = x.host.dim(3), kh = w.host.dim(2), kw = w.host.dim(3);
  const std::int64_t OH = (H + 2 * attrs.padding[0] - attrs.dilation[0] * (kh - 1) - 1) / attrs.stride[0] + 1;
  const std::int64_t OW = (W + 2 * attrs.padding[1] - attrs.dilation[1] * (kw - 1) - 1) / attrs.stride[1] + 1;
  const Shape y_shape{x.host.dim(0), w.host.dim(0), OH, OW};
  Tensor expected = Tensor::empty(y_shape, DType::F32);
  cpu::conv2d(as_f32(x.host), as_f32(w.host), bias.host.defined() ? as_f32(bias.host) : Tensor(), attrs, expected,
              cpu::CpuContext{});
  Tensor y = poisoned(y_shape, dt);
  conv2d(x.device, w.device, bias.device, attrs, y, test::context());
  EXPECT_TRUE(close_to(y, expected, tolerance(dt)));
}

void check_conv1d(const Pair& x, const Pair& w, const Pair& bias, const Conv1dAttrs& attrs, DType dt) {
  const std::int64_t T = x.host.dim(2), k = w.host.dim(2);
  const std::int64_t OT = (T + 2 * attrs.padding - attrs.dilation * (k - 1) - 1) / attrs.stride + 1;
  const Shape y_shape{x.host.dim(0), w.host.dim(0), OT};
  Tensor expected = Tensor::empty(y_shape, DType::F32);
  cpu::conv1d(as_f32(x.host), as_f32(w.host), bias.host.defined() ? as_f32(bias.host) : Tensor(), attrs, expected,
              cpu::CpuContext{});
  Tensor y = poisoned(y_shape, dt);
  conv1d(x.device, w.device, bias.device, attrs, y, test::context());
  EXPECT_TRUE(close_to(y, expected, tolerance(dt)));
}

TEST(CudaConv, Conv2dPathsAgainstCpu) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(12);
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dt));
    const auto rp = [&](const Shape& s) { return test::random_pair(s, dt, rng); };
    // Patch embedding (kernel == stride): the bounds-free im2col.
    check_conv2d(rp({2, 3, 32, 32}), rp({16, 3, 8, 8}), rp({16}), Conv2dAttrs{{8, 8}, {0, 0}, {1, 1}, 1}, dt);
    // Patch embedding whose size does not divide the image (trailing pixels dropped).
    check_conv2d(rp({1, 3, 20, 21}), rp({8, 3, 8, 8}), Pair{}, Conv2dAttrs{{8, 8}, {0, 0}, {1, 1}, 1}, dt);
    // General: stride, padding, dilation.
    check_conv2d(rp({2, 4, 11, 13}), rp({6, 4, 3, 3}), rp({6}), Conv2dAttrs{{2, 1}, {1, 2}, {1, 2}, 1}, dt);
    // Groups (per image, batched over groups).
    check_conv2d(rp({2, 4, 9, 9}), rp({6, 2, 3, 3}), rp({6}), Conv2dAttrs{{1, 1}, {1, 1}, {1, 1}, 2}, dt);
    // 1x1: x is the col matrix; also on a channel slice (plane stride kept) and a transposed view.
    check_conv2d(rp({2, 16, 5, 7}), rp({8, 16, 1, 1}), rp({8}), Conv2dAttrs{}, dt);
    const Tensor wide = ref::random_tensor({2, 20, 5, 7}, dt, rng).slice(1, 2, 18);
    check_conv2d(Pair{wide, upload_view(wide)}, rp({8, 16, 1, 1}), Pair{}, Conv2dAttrs{}, dt);
    const Tensor tr = ref::random_tensor({2, 16, 7, 5}, dt, rng).transpose(2, 3);
    check_conv2d(Pair{tr, upload_view(tr)}, rp({8, 16, 1, 1}), rp({8}), Conv2dAttrs{}, dt);
  }
}

TEST(CudaConv, Conv1dAgainstCpu) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(13);
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dt));
    const auto rp = [&](const Shape& s) { return test::random_pair(s, dt, rng); };
    check_conv1d(rp({3, 5, 40}), rp({7, 5, 3}), rp({7}), Conv1dAttrs{2, 1, 1, 1}, dt);
    // Depthwise (Conformer convolution module): groups = channels, 'same' padding.
    check_conv1d(rp({2, 8, 50}), rp({8, 1, 7}), rp({8}), Conv1dAttrs{1, 3, 1, 8}, dt);
    // Dilated, no bias.
    check_conv1d(rp({1, 4, 30}), rp({6, 4, 5}), Pair{}, Conv1dAttrs{1, 4, 2, 1}, dt);
  }
}

// ---- int8 linear ------------------------------------------------------------------------------------

TEST(CudaLinearInt8, MatchesCpu) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(14);
  const std::int64_t shapes[][3] = {{5, 33, 7}, {16, 64, 32}, {1, 768, 768}};
  for (const auto& s : shapes)
    for (DType yt : {DType::F32, DType::U8, DType::I8})
      for (const bool per_channel : {false, true}) {
        const std::int64_t M = s[0], K = s[1], N = s[2];
        SCOPED_TRACE(fmt::format("M {} K {} N {} y {} per-channel {}", M, K, N, dtype_name(yt), per_channel));
        const Tensor xh = ref::random_tensor({M, K}, DType::U8, rng, 0.0, 256.0);
        const Tensor wh = ref::random_tensor({N, K}, DType::I8, rng, -128.0, 128.0);
        const Tensor bh = ref::random_tensor({N}, DType::F32, rng, -5.0, 5.0);
        std::vector<float> scales(per_channel ? static_cast<std::size_t>(N) : 1);
        for (float& v : scales) v = 0.001f + 0.002f * static_cast<float>(rng() % 100) / 100.0f;
        const float x_scale = 0.02f, y_scale = yt == DType::F32 ? 1.0f : 0.5f;
        const std::int32_t x_zp = 37, y_zp = yt == DType::U8 ? 128 : (yt == DType::I8 ? -3 : 0);
        Tensor expected = Tensor::empty({M, N}, yt);
        cpu::linear_int8(xh, x_scale, x_zp, wh, scales, bh, expected, y_scale, y_zp, cpu::CpuContext{});
        Tensor y = poisoned({M, N}, yt);
        linear_int8(upload(xh), x_scale, x_zp, upload(wh), scales, upload(bh), y, y_scale, y_zp, test::context());
        if (yt == DType::F32) {
          EXPECT_TRUE(close_to(y, expected, 1e-5));
          continue;
        }
        const std::vector<float> got = test::download(y).to_float_vector(), want = expected.to_float_vector();
        float worst = 0;
        for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
        EXPECT_LE(worst, 1.0f);  // the rounding of a value at a .5 boundary may differ by one step
      }
}

}  // namespace
}  // namespace encore::cuda
