// CUDA GEMM family (linear, matmul, conv2d/conv1d, int8 linear) against the CPU kernels on the
// same inputs: f32 with TF32 off to 1e-5, f16/bf16 to 1e-2 (relative L2). The CPU side runs in f32
// on the already rounded inputs. Outputs are poisoned (0xFF) before every launch.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_int8.h"
#include "backends/cuda/cublas_gemm.h"
#include "cuda_test_util.h"

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
  for (DType dt : kFloatTypes)
    for (const auto& s : shapes)
      for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out}) {
        SCOPED_TRACE(trace(dt, fmt::format("M {} K {} N {} layout {}", s[0], s[1], s[2], static_cast<int>(layout))));
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
  for (DType dt : kFloatTypes)
    for (BiasKind bias : {BiasKind::none, BiasKind::dense, BiasKind::f32, BiasKind::strided})
      for (Activation act : {Activation::none, Activation::relu, Activation::gelu_tanh}) {
        SCOPED_TRACE(trace(dt, fmt::format("bias {} {}", static_cast<int>(bias), activation_name(act))));
        check_linear(make_x(XKind::dense, 9, 40, dt, rng), make_w(WKind::dense, WeightLayout::in_out, 40, 30, dt, rng),
                     make_bias(bias, 30, dt, rng), WeightLayout::in_out, act, dt);
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
