// CPU linear and matmul (oneDNN) against the double-precision references: odd sizes, strided
// inputs, both weight layouts, bias, every fused activation, f32 and bf16, batch broadcasting and
// transposes; plus the caches (one creation per shape, weights packed once) and error messages.
// Up to Tuning::linear_rows_max rows of f32 x run on the weight-streaming kernel
// (kernels/cpu/linear_rows.h; 16 on its AVX2 loop) on AVX-512 or AVX2 machines, more on oneDNN:
// the cases cover both sides, and the AVX2 loop runs on AVX-512 machines too.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_context.h"
#include "backends/cpu/packed_weights.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/simd_common.h"
#include "reference/ref_gemm.h"
#include "reference/ref_tensor.h"

using namespace encore;

namespace {

const Activation kActivations[] = {Activation::none, Activation::gelu,    Activation::gelu_tanh, Activation::relu,
                                   Activation::silu, Activation::sigmoid, Activation::tanh};

Tensor poisoned(const Shape& shape, DType dtype) {
  Tensor y = Tensor::empty(shape, dtype);
  y.fill(std::numeric_limits<double>::quiet_NaN());
  return y;
}

// Restores the bf16 policy at scope exit.
struct Bf16ModeScope {
  explicit Bf16ModeScope(cpu::onednn::Bf16Mode m) : saved(cpu::onednn::bf16_mode()) { cpu::onednn::set_bf16_mode(m); }
  ~Bf16ModeScope() { cpu::onednn::set_bf16_mode(saved); }
  cpu::onednn::Bf16Mode saved;
};

enum class XKind { dense, row_strided, scattered };

struct LinearCase {
  std::int64_t M, K, N;
  WeightLayout layout = WeightLayout::out_in;
  bool bias = false;
  Activation act = Activation::none;
  XKind x_kind = XKind::dense;
  DType x_dtype = DType::F32, w_dtype = DType::F32, y_dtype = DType::F32;
  int threads = 2;
};

std::string describe(const LinearCase& c) {
  return "M " + std::to_string(c.M) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N) +
         (c.layout == WeightLayout::out_in ? " out_in" : " in_out") + (c.bias ? " bias" : "") + " act " +
         activation_name(c.act) + " x_kind " + std::to_string(static_cast<int>(c.x_kind)) + " " +
         dtype_name(c.x_dtype) + "/" + dtype_name(c.w_dtype) + "->" + dtype_name(c.y_dtype) + " threads " +
         std::to_string(c.threads);
}

Tensor make_x(const LinearCase& c, std::mt19937& rng) {
  switch (c.x_kind) {
    case XKind::dense:
      return ref::random_tensor({c.M, c.K}, c.x_dtype, rng);
    // A column slice of a wider matrix: rows share one stride (passed to oneDNN as is).
    case XKind::row_strided:
      return ref::random_tensor({c.M, c.K + 5}, c.x_dtype, rng).slice(1, 2, 2 + c.K);
    // Leading dims that do not collapse and a padded last dim: copied.
    case XKind::scattered:
      return ref::random_strided({1, c.M, c.K}, c.x_dtype, rng);
  }
  return {};
}

void check_linear(const LinearCase& c, std::uint32_t seed) {
  SCOPED_TRACE(describe(c));
  std::mt19937 rng(seed);
  const Tensor x = make_x(c, rng);
  const Tensor w = c.layout == WeightLayout::out_in ? ref::random_tensor({c.N, c.K}, c.w_dtype, rng)
                                                    : ref::random_tensor({c.K, c.N}, c.w_dtype, rng);
  const Tensor b = c.bias ? ref::random_tensor({c.N}, DType::F32, rng) : Tensor();
  Shape ys = x.shape();
  ys[ys.rank() - 1] = c.N;
  const Tensor y = poisoned(ys, c.y_dtype);
  const ref::RefTensor rb = c.bias ? ref::from_tensor(b) : ref::RefTensor();
  const ref::RefTensor want =
      ref::linear(ref::from_tensor(x), ref::from_tensor(w), c.bias ? &rb : nullptr, c.layout, c.act);
  cpu::linear(x, w, b, LinearAttrs{.layout = c.layout, .activation = c.act}, y, cpu::CpuContext{c.threads});
  const ref::RefTensor got = ref::from_tensor(y);
  for (double v : got.data) ASSERT_FALSE(std::isnan(v)) << "an output was not written";
  const bool low = c.x_dtype == DType::BF16 || c.w_dtype == DType::BF16 || c.y_dtype == DType::BF16;
  EXPECT_LE(ref::relative_error(got, want), low ? 1e-2 : 1e-5);
}

TEST(CpuLinear, F32OddSizesBothLayoutsBias) {
  std::uint32_t seed = 1;
  int act = 0;
  for (std::int64_t M : {1, 3, 17, 197})
    for (std::int64_t K : {1, 7, 64, 67})
      for (std::int64_t N : {1, 5, 33, 130})
        for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out})
          for (bool bias : {false, true}) {
            LinearCase c{M, K, N, layout, bias};
            c.act = kActivations[act++ % 7];
            check_linear(c, seed++);
          }
}

// The weight-streaming kernel for few rows (f32 weights; bf16 ones stay on oneDNN): row counts
// around its register tiles (8 rows on AVX-512, 2 on AVX2) and limits (32; 16 on AVX2), column
// counts around its 32-column blocks, 1-3 threads, against the double reference and against
// oneDNN's matmul for the same problem; with the AVX2 loop forced as well where the CPU has AVX2.
void check_few_rows_kernel() {
  std::uint32_t seed = 40;
  int act = 0;
  for (std::int64_t M : {1, 2, 3, 8, 9, 16, 17, 31, 32, 33})
    for (std::int64_t N : {31, 32, 33, 100})
      for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out}) {
        LinearCase c{M, 300, N, layout, N % 2 == 1, kActivations[act++ % 7]};
        c.threads = 1 + static_cast<int>(M % 3);
        check_linear(c, seed);
        // The same problem on oneDNN: both within the reference's tolerance of each other.
        SCOPED_TRACE(describe(c));
        std::mt19937 rng(seed++);
        const Tensor x = make_x(c, rng);
        const Tensor w = layout == WeightLayout::out_in ? ref::random_tensor({N, c.K}, c.w_dtype, rng)
                                                        : ref::random_tensor({c.K, N}, c.w_dtype, rng);
        const Tensor b = c.bias ? ref::random_tensor({N}, DType::F32, rng) : Tensor();
        const LinearAttrs attrs{.layout = layout, .activation = c.act};
        const Tensor rows = poisoned({M, N}, DType::F32), onednn = poisoned({M, N}, DType::F32);
        cpu::linear(x, w, b, attrs, rows, cpu::CpuContext{c.threads});
        const std::int64_t saved = cpu::onednn::tuning().linear_rows_max;
        cpu::onednn::tuning().linear_rows_max = 0;
        cpu::linear(x, w, b, attrs, onednn, cpu::CpuContext{c.threads});
        cpu::onednn::tuning().linear_rows_max = saved;
        EXPECT_LE(ref::relative_error(ref::from_tensor(rows), ref::from_tensor(onednn)), 1e-5);
      }
}

TEST(CpuLinear, FewRowsKernelAgreesWithOneDnn) { check_few_rows_kernel(); }

// On AVX-512 machines too, with the portable activations the AVX2 loop gets on CPUs without AVX-512.
TEST(CpuLinear, FewRowsKernelAvx2LoopAgreesWithOneDnn) {
  if (!cpu::has_avx2()) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  if (cpu::onednn::tuning().linear_rows_max < 1) GTEST_SKIP() << "ENCORE_CPU_LINEAR_ROWS_MAX=0: no rows kernel";
  struct Forced {  // restored also when an assertion returns early
    Forced() { cpu::onednn::tuning().linear_rows_force_avx2 = true, cpu::ewk::set_force_portable(true); }
    ~Forced() { cpu::onednn::tuning().linear_rows_force_avx2 = false, cpu::ewk::set_force_portable(false); }
  } forced;
  ASSERT_EQ(cpu::onednn::linear_rows_loop(1), cpu::onednn::RowsLoop::avx2);
  check_few_rows_kernel();
}

// A weight is packed into the kernel's layout once, then reused by every call and row count.
TEST(CpuLinear, FewRowsKernelPacksOnce) {
  std::mt19937 rng(41);
  const Tensor w = ref::random_tensor({96, 70}, DType::F32, rng);  // in_out [K, N]
  const LinearAttrs attrs{.layout = WeightLayout::in_out};
  cpu::PackedWeights& packed = cpu::PackedWeights::instance();
  cpu::linear(ref::random_tensor({1, 96}, DType::F32, rng), w, Tensor(), attrs, Tensor::empty({1, 70}, DType::F32),
              cpu::CpuContext{2});
  const std::size_t packs = packed.packs();
  for (std::int64_t M : {1, 4, 16}) {  // (16: the AVX2 loop's limit; AVX-512's is 32)
    const Tensor x = ref::random_tensor({M, 96}, DType::F32, rng);
    const Tensor y = poisoned({M, 70}, DType::F32);
    cpu::linear(x, w, Tensor(), attrs, y, cpu::CpuContext{2});
    const ref::RefTensor want = ref::linear(ref::from_tensor(x), ref::from_tensor(w), nullptr, attrs.layout, attrs.activation);
    EXPECT_LE(ref::relative_error(ref::from_tensor(y), want), 1e-5);
  }
  EXPECT_EQ(packed.packs(), packs);
}

TEST(CpuLinear, EveryActivation) {
  for (Activation a : kActivations)
    for (bool bias : {false, true}) check_linear(LinearCase{17, 67, 33, WeightLayout::out_in, bias, a}, 7);
}

TEST(CpuLinear, StridedInputs) {
  for (bool pass_strided : {true, false}) {
    cpu::onednn::tuning().linear_strided_rows = pass_strided;
    for (XKind k : {XKind::row_strided, XKind::scattered})
      for (std::int64_t M : {1, 3, 17, 197})
        for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out}) {
          LinearCase c{M, 67, 33, layout, true, Activation::gelu, k};
          check_linear(c, 11);
        }
  }
  cpu::onednn::tuning().linear_strided_rows = true;
}

TEST(CpuLinear, NonContiguousWeightAndBias) {
  std::mt19937 rng(5);
  const Tensor x = ref::random_tensor({2, 9, 20}, DType::F32, rng);
  const Tensor w = ref::random_tensor({20, 13}, DType::F32, rng).transpose(0, 1);  // [13, 20] column-major
  const Tensor b = ref::random_tensor({13, 2}, DType::F32, rng).select(1, 1);      // stride 2
  const Tensor y = poisoned({2, 9, 13}, DType::F32);
  cpu::linear(x, w, b, LinearAttrs{}, y, cpu::CpuContext{2});
  const ref::RefTensor rb = ref::from_tensor(b);
  EXPECT_LE(ref::relative_error(ref::from_tensor(y),
                                ref::linear(ref::from_tensor(x), ref::from_tensor(w), &rb, WeightLayout::out_in)),
            1e-5);
}

TEST(CpuLinear, Bf16BothPolicies) {
  using cpu::onednn::Bf16Mode;
  for (Bf16Mode mode : {Bf16Mode::native, Bf16Mode::via_f32, Bf16Mode::automatic}) {
    Bf16ModeScope scope(mode);
    for (DType xd : {DType::BF16, DType::F32})
      for (DType yd : {DType::BF16, DType::F32})
        for (std::int64_t M : {1, 17, 197}) {
          LinearCase c{M,  67,          130, WeightLayout::in_out, true, Activation::gelu_tanh, XKind::dense,
                       xd, DType::BF16, yd};
          check_linear(c, 21);
          c.x_kind = XKind::scattered;
          c.layout = WeightLayout::out_in;
          check_linear(c, 22);
        }
  }
  // bf16 activations with f32 weights compute in f32.
  check_linear(LinearCase{17, 64, 33, WeightLayout::out_in, true, Activation::relu, XKind::dense, DType::BF16,
                          DType::F32, DType::BF16},
               23);
}

TEST(CpuLinear, HigherRankAndThreadCounts) {
  std::mt19937 rng(9);
  // Large enough for every thread count to be used (resolve_threads keeps small calls on one):
  // 36 rows through oneDNN's matmul (more than the few-rows kernel takes), 3 through the few-rows
  // kernel where the machine has AVX-512.
  for (const auto& [xs, n] : {std::pair{Shape{2, 3, 6, 256}, std::int64_t{192}}, {Shape{3, 512}, 320}}) {
    const std::int64_t k = xs[xs.rank() - 1], m = xs.numel() / k;
    ASSERT_GE(cpu::onednn::call_work(double(m) * n * k, double(m) * k + double(n) * k + double(m) * n),
              cpu::onednn::kOneDnnParallelMin);
    const Tensor x = ref::random_tensor(xs, DType::F32, rng);
    const Tensor w = ref::random_tensor({n, k}, DType::F32, rng);
    const ref::RefTensor want = ref::linear(ref::from_tensor(x), ref::from_tensor(w), nullptr, WeightLayout::out_in);
    Shape ys = xs;
    ys[ys.rank() - 1] = n;
    const int before = omp_get_max_threads();
    for (int threads : {1, 2, 3}) {
      const Tensor y = poisoned(ys, DType::F32);
      cpu::linear(x, w, Tensor(), LinearAttrs{}, y, cpu::CpuContext{threads});
      EXPECT_LE(ref::relative_error(ref::from_tensor(y), want), 1e-5) << threads << " threads, x " << xs.str();
      EXPECT_EQ(omp_get_max_threads(), before) << "the OpenMP thread setting must be restored";
    }
  }
}

// Calls of a few microseconds run on one thread (no fork/join, no barrier that a descheduled
// thread could hold up); a one-row product streaming a decoder's 768 x 768 weight is not one.
TEST(CpuLinear, SmallCallsRunOnOneThread) {
  namespace dnn = cpu::onednn;
  const cpu::CpuContext two{2};
  EXPECT_EQ(dnn::resolve_threads(two, dnn::call_work(8 * 32 * 32, 8 * 32 + 32 * 32 + 8 * 32)), 1);
  EXPECT_EQ(dnn::resolve_threads(two, dnn::call_work(768 * 768, 768 + 768 * 768 + 768)), 2);
  EXPECT_EQ(dnn::resolve_threads(two, dnn::call_work(197.0 * 768 * 768, 0)), 2);
  EXPECT_EQ(dnn::resolve_threads(two, dnn::call_work(1e30, 1e30)), 2);  // clamped, not overflowed
}

TEST(CpuLinear, DegenerateShapes) {
  std::mt19937 rng(3);
  const Tensor w = ref::random_tensor({4, 0}, DType::F32, rng);
  const Tensor b = ref::random_tensor({4}, DType::F32, rng);
  const Tensor y = poisoned({3, 4}, DType::F32);
  cpu::linear(Tensor::empty({3, 0}, DType::F32), w, b, LinearAttrs{.activation = Activation::relu}, y, {});
  for (std::int64_t i = 0; i < 12; ++i)
    EXPECT_FLOAT_EQ(static_cast<float>(y.get(i)), std::max(0.0f, static_cast<float>(b.get(i % 4))));
  cpu::linear(Tensor::empty({0, 5}, DType::F32), ref::random_tensor({4, 5}, DType::F32, rng), Tensor(), LinearAttrs{},
              Tensor::empty({0, 4}, DType::F32), {});
}

TEST(CpuLinear, WeightsPackedOnceAndPrimitivesCreatedOnce) {
  auto& packs = cpu::PackedWeights::instance();
  auto& prims = cpu::onednn::PrimitiveCache::instance();
  std::mt19937 rng(17);
  const Tensor w = ref::random_tensor({96, 80}, DType::F32, rng);
  const Tensor b = ref::random_tensor({96}, DType::F32, rng);
  const cpu::CpuContext ctx{2};
  const std::size_t packs0 = packs.packs();
  for (std::int64_t M : {1, 16, 197, 1024}) {  // neither packed layout depends on M
    const Tensor x = ref::random_tensor({M, 80}, DType::F32, rng);
    cpu::linear(x, w, b, LinearAttrs{}, poisoned({M, 96}, DType::F32), ctx);
  }
  // One packing for the few-rows kernel (M = 1 and 16, on AVX-512 or AVX2) and one for oneDNN's.
  const bool rows_kernel = cpu::onednn::linear_rows_loop(1) != cpu::onednn::RowsLoop::none;
  EXPECT_EQ(packs.packs() - packs0, rows_kernel ? 2u : 1u) << "one packing per kernel for every M";
  const Tensor x = ref::random_tensor({16, 80}, DType::F32, rng);
  const std::size_t prims0 = prims.creations(), packs1 = packs.packs();
  for (int i = 0; i < 5; ++i) cpu::linear(x, w, b, LinearAttrs{}, poisoned({16, 96}, DType::F32), ctx);
  EXPECT_EQ(prims.creations(), prims0) << "steady state creates no primitive";
  EXPECT_EQ(packs.packs(), packs1) << "steady state packs nothing";
}

TEST(CpuLinear, ConcurrentFirstCallsCreateOnce) {
  auto& packs = cpu::PackedWeights::instance();
  auto& prims = cpu::onednn::PrimitiveCache::instance();
  std::mt19937 rng(19);
  for (const std::int64_t M : {29, 45}) {  // the few-rows kernel (on AVX-512), then oneDNN
    SCOPED_TRACE(M);
    const Tensor w = ref::random_tensor({77, 61}, DType::F32, rng);
    const Tensor x = ref::random_tensor({M, 61}, DType::F32, rng);
    const ref::RefTensor want = ref::linear(ref::from_tensor(x), ref::from_tensor(w), nullptr, WeightLayout::out_in);
    // (Emptied first: where M = 29 also runs on oneDNN, without AVX-512, its packing reorder would
    // already be cached for M = 45.)
    prims.clear();
    const std::size_t prims0 = prims.creations(), packs0 = packs.packs();
    std::vector<Tensor> ys;
    for (int i = 0; i < 4; ++i) ys.push_back(poisoned({M, 77}, DType::F32));
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&, i] { cpu::linear(x, w, Tensor(), LinearAttrs{}, ys[static_cast<std::size_t>(i)], {1}); });
    for (auto& t : threads) t.join();
    for (const Tensor& y : ys) EXPECT_LE(ref::relative_error(ref::from_tensor(y), want), 1e-5);
    EXPECT_EQ(packs.packs() - packs0, 1u);
    const bool rows_kernel = cpu::onednn::linear_rows_loop(M) != cpu::onednn::RowsLoop::none;
    EXPECT_EQ(prims.creations() - prims0, rows_kernel ? 0u : 2u) << "oneDNN: the matmul and the packing reorder, once each";
  }
}

TEST(CpuLinear, RecycledWeightAddressIsRepacked) {
  std::mt19937 rng(23);
  const Tensor x = ref::random_tensor({5, 32}, DType::F32, rng);
  for (int round = 0; round < 4; ++round) {  // freed and reallocated weights often reuse an address
    const Tensor w = ref::random_tensor({24, 32}, DType::F32, rng);
    const Tensor y = poisoned({5, 24}, DType::F32);
    cpu::linear(x, w, Tensor(), LinearAttrs{}, y, {2});
    EXPECT_LE(ref::relative_error(ref::from_tensor(y),
                                  ref::linear(ref::from_tensor(x), ref::from_tensor(w), nullptr, WeightLayout::out_in)),
              1e-5)
        << "round " << round;
  }
  // In-place edits need an explicit evict.
  Tensor w = ref::random_tensor({24, 32}, DType::F32, rng);
  cpu::linear(x, w, Tensor(), LinearAttrs{}, poisoned({5, 24}, DType::F32), {2});
  w.fill(0.5);
  cpu::PackedWeights::instance().evict(w);
  const Tensor y = poisoned({5, 24}, DType::F32);
  cpu::linear(x, w, Tensor(), LinearAttrs{}, y, {2});
  EXPECT_LE(ref::relative_error(ref::from_tensor(y),
                                ref::linear(ref::from_tensor(x), ref::from_tensor(w), nullptr, WeightLayout::out_in)),
            1e-5);
}

// Eviction while another thread streams from the evicted copy: with room for one entry, every
// call of one thread evicts the other's packed weight. The copy in use must stay alive until its
// kernel is done (a use-after-free before: the cache entry was its only owner).
TEST(CpuLinear, EvictionDuringUseKeepsTheCopyAlive) {
  auto& packs = cpu::PackedWeights::instance();
  packs.set_capacity(1);
  struct Restore {
    ~Restore() { cpu::PackedWeights::instance().set_capacity(65536); }
  } restore;
  std::mt19937 rng(29);
  std::vector<Tensor> ws, xs;
  std::vector<ref::RefTensor> want;
  for (int i = 0; i < 2; ++i) {
    ws.push_back(ref::random_tensor({512, 256}, DType::F32, rng));
    xs.push_back(ref::random_tensor({1, 256}, DType::F32, rng));
    want.push_back(ref::linear(ref::from_tensor(xs.back()), ref::from_tensor(ws.back()), nullptr, WeightLayout::out_in));
  }
  std::vector<double> worst(2, 0.0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i)
    threads.emplace_back([&, i] {
      for (int round = 0; round < 50; ++round) {
        const Tensor y = poisoned({1, 512}, DType::F32);
        cpu::linear(xs[static_cast<std::size_t>(i)], ws[static_cast<std::size_t>(i)], Tensor(), LinearAttrs{}, y, {1});
        worst[static_cast<std::size_t>(i)] =
            std::max(worst[static_cast<std::size_t>(i)], ref::relative_error(ref::from_tensor(y), want[i]));
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_LE(worst[0], 1e-5);
  EXPECT_LE(worst[1], 1e-5);
}

TEST(CpuLinear, ShapeMismatchNamesBothShapes) {
  const Tensor x = Tensor::zeros({4, 7}, DType::F32);
  const Tensor w = Tensor::zeros({5, 8}, DType::F32);
  try {
    cpu::linear(x, w, Tensor(), LinearAttrs{}, Tensor::empty({4, 5}, DType::F32), {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[4, 7]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[5, 8]"), std::string::npos) << msg;
  }
  EXPECT_THROW(cpu::linear(x, Tensor::zeros({7, 5}, DType::F32), Tensor::zeros({4}, DType::F32),
                           LinearAttrs{.layout = WeightLayout::in_out}, Tensor::empty({4, 5}, DType::F32), {}),
               Error);
  EXPECT_THROW(
      cpu::linear(x, Tensor::zeros({5, 7}, DType::F32), Tensor(), LinearAttrs{}, Tensor::empty({4, 6}, DType::F32), {}),
      Error);
}

// ---- matmul -------------------------------------------------------------------------------------

// a [.., M, K] or its transpose stored transposed (so trans_a is a strided view, never a copy).
Tensor operand(const Shape& logical, bool stored_transposed, DType dtype, std::mt19937& rng) {
  if (!stored_transposed) return ref::random_tensor(logical, dtype, rng);
  Shape s = logical;
  std::swap(s[s.rank() - 1], s[s.rank() - 2]);
  return ref::random_tensor(s, dtype, rng).transpose(-1, -2);
}

void check_matmul(const Shape& as, const Shape& bs, bool ta, bool tb, float alpha, DType dtype, DType ydt,
                  bool store_transposed, std::uint32_t seed) {
  SCOPED_TRACE("a " + as.str() + " b " + bs.str() + " ta " + std::to_string(ta) + " tb " + std::to_string(tb) +
               " alpha " + std::to_string(alpha) + " " + dtype_name(dtype) + "->" + dtype_name(ydt));
  std::mt19937 rng(seed);
  const Tensor a = operand(as, store_transposed, dtype, rng);
  const Tensor b = operand(bs, store_transposed, dtype, rng);
  const ref::RefTensor want = ref::matmul(ref::from_tensor(a), ref::from_tensor(b), ta, tb, alpha);
  const Tensor y = poisoned(want.shape, ydt);
  cpu::matmul(a, b, MatMulAttrs{.trans_a = ta, .trans_b = tb, .alpha = alpha}, y, {2});
  const ref::RefTensor got = ref::from_tensor(y);
  for (double v : got.data) ASSERT_FALSE(std::isnan(v));
  EXPECT_LE(ref::relative_error(got, want), (dtype == DType::F32 && ydt == DType::F32) ? 1e-5 : 1e-2);
}

TEST(CpuMatmul, BatchBroadcastAndTransposes) {
  std::uint32_t seed = 100;
  const std::int64_t M = 17, K = 67, N = 33;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool stored : {false, true}) {
        auto A = [&](Shape batch) {
          batch.push_back(ta ? K : M);
          batch.push_back(ta ? M : K);
          return batch;
        };
        auto B = [&](Shape batch) {
          batch.push_back(tb ? N : K);
          batch.push_back(tb ? K : N);
          return batch;
        };
        check_matmul(A({}), B({}), ta, tb, 1.0f, DType::F32, DType::F32, stored, seed++);
        check_matmul(A({3}), B({3}), ta, tb, 0.125f, DType::F32, DType::F32, stored, seed++);
        check_matmul(A({2, 1}), B({3}), ta, tb, 1.0f, DType::F32, DType::F32, stored, seed++);
        check_matmul(A({1, 4}), B({2, 1}), ta, tb, -0.5f, DType::F32, DType::F32, stored, seed++);
        check_matmul(A({2, 3}), B({}), ta, tb, 1.0f, DType::F32, DType::F32, stored, seed++);
      }
}

TEST(CpuMatmul, OddSizes) {
  std::uint32_t seed = 200;
  for (std::int64_t M : {1, 3, 17, 197})
    for (std::int64_t K : {1, 7, 64, 67})
      for (std::int64_t N : {1, 5, 33, 130})
        check_matmul({2, M, K}, {2, K, N}, false, false, 1.0f, DType::F32, DType::F32, false, seed++);
}

TEST(CpuMatmul, ExpandedAndSlicedOperands) {
  std::mt19937 rng(31);
  // Attention-style views: q and k are slices of a fused [B, T, 3*H*D] projection, permuted to
  // [B, H, T, D]; scores = q k^T.
  const std::int64_t B = 2, T = 19, H = 3, D = 16;
  const Tensor qkv = ref::random_tensor({B, T, 3 * H * D}, DType::F32, rng);
  const Tensor q = qkv.slice(2, 0, H * D).view({B, T, H, D}).permute({0, 2, 1, 3});
  const Tensor k = qkv.slice(2, H * D, 2 * H * D).view({B, T, H, D}).permute({0, 2, 1, 3});
  const Tensor y = poisoned({B, H, T, T}, DType::F32);
  cpu::matmul(q, k, MatMulAttrs{.trans_b = true, .alpha = 0.25f}, y, {2});
  EXPECT_LE(ref::relative_error(ref::from_tensor(y),
                                ref::matmul(ref::from_tensor(q), ref::from_tensor(k), false, true, 0.25)),
            1e-5);
  // A stride-0 (expanded) batch dim on either side, and on both.
  const Tensor a = ref::random_tensor({1, 5, 7}, DType::F32, rng).expand({4, 5, 7});
  const Tensor b = ref::random_tensor({4, 7, 6}, DType::F32, rng);
  const Tensor b1 = ref::random_tensor({1, 7, 6}, DType::F32, rng).expand({4, 7, 6});
  const Tensor rows = ref::random_tensor({1, 7}, DType::F32, rng).expand({5, 7});  // stride-0 rows
  for (const auto& [l, r, want_shape] :
       {std::tuple{a, b, Shape{4, 5, 6}}, std::tuple{a, b1, Shape{4, 5, 6}}, std::tuple{rows, b, Shape{4, 5, 6}}}) {
    const Tensor out = poisoned(want_shape, DType::F32);
    cpu::matmul(l, r, MatMulAttrs{}, out, {2});
    EXPECT_LE(
        ref::relative_error(ref::from_tensor(out), ref::matmul(ref::from_tensor(l), ref::from_tensor(r), false, false)),
        1e-5)
        << l.shape().str() << " x " << r.shape().str();
  }
}

TEST(CpuMatmul, Bf16) {
  using cpu::onednn::Bf16Mode;
  for (Bf16Mode mode : {Bf16Mode::native, Bf16Mode::via_f32, Bf16Mode::automatic}) {
    Bf16ModeScope scope(mode);
    for (DType ydt : {DType::BF16, DType::F32}) {
      check_matmul({3, 1, 64}, {3, 64, 40}, false, false, 1.0f, DType::BF16, ydt, false, 299);  // decode-like
      check_matmul({2, 17, 67}, {1, 67, 33}, false, false, 1.0f, DType::BF16, ydt, false, 300);
      check_matmul({3, 67, 17}, {33, 67}, true, true, 0.5f, DType::BF16, ydt, true, 301);
    }
  }
  check_matmul({17, 64}, {64, 5}, false, false, 1.0f, DType::F32, DType::BF16, false, 302);
}

TEST(CpuMatmul, ErrorsNameShapes) {
  try {
    cpu::matmul(Tensor::zeros({2, 4, 7}, DType::F32), Tensor::zeros({2, 8, 5}, DType::F32), MatMulAttrs{},
                Tensor::empty({2, 4, 5}, DType::F32), {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("[2, 4, 7]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 8, 5]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cpu::matmul(Tensor::zeros({2, 4, 7}, DType::F32), Tensor::zeros({3, 7, 5}, DType::F32), MatMulAttrs{},
                           Tensor::empty({3, 4, 5}, DType::F32), {}),
               Error);
}

}  // namespace
