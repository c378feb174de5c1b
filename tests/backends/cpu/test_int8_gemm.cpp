// Quantised linear (u8 x s8 -> s32 on oneDNN) against the exact integer reference: accumulation
// compared exactly (f32 output with unit scales), per-channel scales and bias, and requantised
// u8/s8 outputs compared exactly with round-half-to-even-then-saturate.
//
// Power-of-two scales keep every f32 step of oneDNN's epilogue exact, so exact ties (x.5) really
// occur and test the rounding rule; a realistic non-power-of-two case is checked to within one
// step, since f32 and double may then land on different sides of a tie.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/onednn_int8.h"
#include "reference/ref_gemm.h"
#include "reference/ref_tensor.h"

using namespace encore;

namespace {

struct Data {
  std::vector<std::uint8_t> x;
  std::vector<std::int8_t> w;
  Tensor xt, wt;
};

// x and w with the full value ranges, edges included on purpose.
Data make(std::int64_t M, std::int64_t K, std::int64_t N, std::uint32_t seed, bool strided_x = false) {
  std::mt19937 rng(seed);
  Data d;
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127);
  d.x.resize(static_cast<std::size_t>(M * K));
  d.w.resize(static_cast<std::size_t>(N * K));
  for (auto& v : d.x) v = static_cast<std::uint8_t>(u8(rng));
  for (auto& v : d.w) v = static_cast<std::int8_t>(s8(rng));
  d.x[0] = 0;
  d.x.back() = 255;
  d.w[0] = -128;
  d.w.back() = 127;
  if (strided_x) {  // a column slice of a wider buffer
    Tensor wide = Tensor::zeros({M, K + 3}, DType::U8);
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t k = 0; k < K; ++k) wide.at<std::uint8_t>({m, k + 1}) = d.x[static_cast<std::size_t>(m * K + k)];
    d.xt = wide.slice(1, 1, K + 1);
  } else {
    d.xt = Tensor::from_vector(d.x, {M, K});
  }
  d.wt = Tensor::from_vector(d.w, {N, K});
  return d;
}

Tensor poisoned(const Shape& s, DType dt) {
  Tensor y = Tensor::empty(s, dt);
  if (dt == DType::F32)
    y.fill(std::nan(""));
  else
    y.fill(dt == DType::U8 ? 77 : -77);  // a value the checks below would notice as wrong
  return y;
}

void check_exact_accumulation() {
  for (std::int64_t M : {1, 3, 17, 197})
    for (std::int64_t K : {1, 7, 64, 67})
      for (std::int64_t N : {1, 5, 33, 130})
        for (std::int32_t zp : {0, 255, 128}) {
          SCOPED_TRACE("M " + std::to_string(M) + " K " + std::to_string(K) + " N " + std::to_string(N) + " zp " +
                       std::to_string(zp));
          const Data d = make(M, K, N, static_cast<std::uint32_t>(M * 1000 + K * 10 + N + zp), M == 17);
          const auto want = ref::int8_gemm(d.x, M, K, zp, d.w, N);
          const Tensor y = poisoned({M, N}, DType::F32);
          const float one = 1.0f;
          cpu::linear_int8(d.xt, 1.0f, zp, d.wt, {&one, 1}, Tensor(), y, 1.0f, 0, cpu::CpuContext{2});
          const float* got = y.data_ptr<float>();
          for (std::int64_t i = 0; i < M * N; ++i)
            ASSERT_EQ(static_cast<double>(got[i]), static_cast<double>(want[static_cast<std::size_t>(i)]))
                << "at " << i;
        }
}

TEST(CpuInt8Gemm, ExactAccumulationUnitScales) { check_exact_accumulation(); }

TEST(CpuInt8Gemm, PerChannelScalesAndBiasF32) {
  const std::int64_t M = 17, K = 67, N = 33;
  const Data d = make(M, K, N, 5);
  std::vector<float> ws(N);
  std::vector<float> bias(N);
  for (std::int64_t n = 0; n < N; ++n) {
    ws[static_cast<std::size_t>(n)] = std::ldexp(1.0f, -static_cast<int>(n % 5) - 3);
    bias[static_cast<std::size_t>(n)] = 0.25f * static_cast<float>(n - 16);
  }
  const float xs = 0.0625f;
  const std::int32_t zp = 131;
  const auto acc = ref::int8_gemm(d.x, M, K, zp, d.w, N);
  const Tensor y = poisoned({M, N}, DType::F32);
  cpu::linear_int8(d.xt, xs, zp, d.wt, ws, Tensor::from_vector(bias, {N}), y, 1.0f, 0, {2});
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      const double want = xs * static_cast<double>(ws[static_cast<std::size_t>(n)]) *
                              static_cast<double>(acc[static_cast<std::size_t>(m * N + n)]) +
                          bias[static_cast<std::size_t>(n)];
      ASSERT_EQ(y.at<float>({m, n}), want) << m << ", " << n;
    }
}

void check_requant(DType out, std::int32_t x_zp, std::int32_t y_zp, bool per_channel, bool with_bias, bool exact,
                   std::uint32_t seed, std::int64_t K = 64) {
  SCOPED_TRACE(std::string(dtype_name(out)) + " x_zp " + std::to_string(x_zp) + " y_zp " + std::to_string(y_zp) +
               (per_channel ? " per-channel" : " per-tensor") + (with_bias ? " bias" : "") +
               (exact ? " pow2" : " realistic") + " K " + std::to_string(K));
  const std::int64_t M = 97, N = 130;
  const Data d = make(M, K, N, seed);
  std::vector<float> ws(per_channel ? N : 1);
  for (std::size_t n = 0; n < ws.size(); ++n)
    ws[n] = exact ? std::ldexp(1.0f, -static_cast<int>(n % 3)) : 0.0037f * (1.0f + 0.01f * static_cast<float>(n));
  std::vector<float> bias(N);
  for (std::int64_t n = 0; n < N; ++n)
    bias[static_cast<std::size_t>(n)] =
        exact ? 8.0f * static_cast<float>(n % 41 - 20) : 0.37f * static_cast<float>(n % 41 - 20);
  const float xs = exact ? 0.5f : 0.0213f;
  // Chosen so the outputs cover the whole range, both saturation ends included.
  const float ys = exact ? 256.0f : 0.03f;
  const auto acc = ref::int8_gemm(d.x, M, K, x_zp, d.w, N);
  const Tensor y = poisoned({M, N}, out);
  cpu::linear_int8(d.xt, xs, x_zp, d.wt, ws, with_bias ? Tensor::from_vector(bias, {N}) : Tensor(), y, ys, y_zp, {2});
  const std::int64_t lo = out == DType::U8 ? 0 : -128, hi = out == DType::U8 ? 255 : 127;
  int ties = 0, mismatches = 0, saturated = 0;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      const std::size_t i = static_cast<std::size_t>(m * N + n);
      const double v =
          static_cast<double>(xs) * ws[per_channel ? static_cast<std::size_t>(n) : 0] * static_cast<double>(acc[i]) +
          (with_bias ? bias[static_cast<std::size_t>(n)] : 0.0);
      const std::int64_t want = ref::requantize(v, ys, y_zp, lo, hi);
      const std::int64_t got = static_cast<std::int64_t>(y.get(static_cast<std::int64_t>(i)));
      const double q = v / ys;
      if (q - std::floor(q) == 0.5) ++ties;
      if (want == lo || want == hi) ++saturated;
      if (exact) {
        ASSERT_EQ(got, want) << "at " << m << ", " << n << ": v / y_scale = " << q;
      } else {
        ASSERT_LE(std::abs(got - want), 1) << "at " << m << ", " << n;
        mismatches += got != want;
      }
    }
  if (exact) EXPECT_GT(ties, 0) << "the data should contain exact ties";
  EXPECT_GT(saturated, 0) << "the data should reach a saturation bound";
  EXPECT_LE(mismatches, 2) << "only near-ties may differ";
}

TEST(CpuInt8Gemm, RequantisedRoundHalfEvenSaturate) {
  std::uint32_t seed = 900;
  for (bool exact : {true, false})
    for (bool per_channel : {false, true})
      for (bool bias : {false, true}) {
        for (std::int32_t x_zp : {0, 255})
          for (std::int32_t y_zp : {0, 255, 128})
            check_requant(DType::U8, x_zp, y_zp, per_channel, bias, exact, seed++);
        for (std::int32_t y_zp : {-128, 127, 0}) check_requant(DType::I8, 100, y_zp, per_channel, bias, exact, seed++);
      }
}

struct ForcedFallback {
  ForcedFallback() { cpu::force_int8_fallback_for_testing(true); }
  ~ForcedFallback() { cpu::force_int8_fallback_for_testing(false); }
};

// The fallback for CPUs without VNNI (f32 matmuls over chunks of K) against the same references,
// on any CPU: with one chunk (K <= 512), and with several (K = 1300: three chunks of 434, 434, 432).
TEST(CpuInt8Gemm, FallbackMatchesTheReferences) {
  const ForcedFallback forced;
  check_exact_accumulation();
  std::uint32_t seed = 700;
  for (std::int64_t K : {64, 1300})
    for (bool exact : {true, false})
      for (bool per_channel : {false, true}) {
        check_requant(DType::U8, 255, 128, per_channel, true, exact, seed++, K);
        check_requant(DType::I8, 100, 127, per_channel, false, exact, seed++, K);
      }
}

// Several chunks with x a column slice, the weight a view at an offset into a wider buffer, the
// largest terms (x 0 or 255 against zero point 255 or 0, w -128) and weights that are not
// constants (packed per call): exact f32 output with unit scales.
TEST(CpuInt8Gemm, FallbackOverViewsAndWorstTerms) {
  const ForcedFallback forced;
  const std::int64_t M = 19, N = 7;
  for (std::int64_t K : {513, 1100})
    for (std::int32_t zp : {0, 255}) {
      SCOPED_TRACE("K " + std::to_string(K) + " zp " + std::to_string(zp));
      Data d = make(M, K, N, static_cast<std::uint32_t>(K + zp), /*strided_x=*/true);
      for (std::size_t i = 0; i < d.x.size(); i += 3) d.x[i] = zp == 0 ? 255 : 0;
      for (std::size_t i = 0; i < d.w.size(); i += 2) d.w[i] = -128;
      Tensor xs = Tensor::zeros({M, K + 3}, DType::U8);
      for (std::int64_t m = 0; m < M; ++m)
        for (std::int64_t k = 0; k < K; ++k) xs.at<std::uint8_t>({m, k + 1}) = d.x[static_cast<std::size_t>(m * K + k)];
      Tensor wide = Tensor::zeros({N, K + 5}, DType::I8);
      for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t k = 0; k < K; ++k)
          wide.at<std::int8_t>({n, k + 2}) = d.w[static_cast<std::size_t>(n * K + k)];
      const auto want = ref::int8_gemm(d.x, M, K, zp, d.w, N);
      const Tensor y = poisoned({M, N}, DType::F32);
      const float one = 1.0f;
      cpu::CpuContext ctx{2};
      ctx.constant_weights = false;
      cpu::linear_int8(xs.slice(1, 1, K + 1), 1.0f, zp, wide.slice(1, 2, K + 2), {&one, 1}, Tensor(), y, 1.0f, 0, ctx);
      for (std::int64_t i = 0; i < M * N; ++i)  // (f32 rounds a total past 2^24 as it rounds the exact one)
        ASSERT_EQ(y.data_ptr<float>()[i], static_cast<float>(want[static_cast<std::size_t>(i)])) << "at " << i;
    }
}

// Where one f32 sum over all of K would round: odd terms of ~31000 whose sum passes 2^24 (where f32
// steps by 2 or more) over the first half of K (from K ~ 1090 on; -50M at 3072) and comes back to
// a small total over the second half. The total is exact in f32, so the output must equal it:
// only sums kept below 2^24 (the chunks) get there. Chunk lengths: 1537 = 385 * 3 + 382.
TEST(CpuInt8Gemm, FallbackStaysExactWhereOneF32SumWouldRound) {
  const ForcedFallback forced;
  const std::int64_t M = 3, N = 5;
  for (std::int64_t K : {1537, 2048, 3072, 5001}) {
    SCOPED_TRACE("K " + std::to_string(K));
    std::mt19937 rng(static_cast<std::uint32_t>(K));
    std::vector<std::uint8_t> x(static_cast<std::size_t>(M * K));
    std::vector<std::int8_t> w(static_cast<std::size_t>(N * K));
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t k = 0; k < K; ++k)
        x[static_cast<std::size_t>(m * K + k)] = static_cast<std::uint8_t>(255 - 2 * m);
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < K; ++k)
        w[static_cast<std::size_t>(n * K + k)] =
            static_cast<std::int8_t>((k < K / 2 ? -1 : 1) * (127 - 2 * static_cast<int>(rng() % 4)));
    const auto want = ref::int8_gemm(x, M, K, 0, w, N);
    const Tensor y = poisoned({M, N}, DType::F32);
    const float one = 1.0f;
    cpu::linear_int8(Tensor::from_vector(x, {M, K}), 1.0f, 0, Tensor::from_vector(w, {N, K}), {&one, 1}, Tensor(), y,
                     1.0f, 0, cpu::CpuContext{2});
    for (std::int64_t i = 0; i < M * N; ++i) {
      ASSERT_LT(std::abs(want[static_cast<std::size_t>(i)]), std::int64_t{1} << 24) << "the total must be exact in f32";
      ASSERT_EQ(static_cast<double>(y.data_ptr<float>()[i]), static_cast<double>(want[static_cast<std::size_t>(i)]))
          << "at " << i;
    }
  }
}

TEST(CpuInt8Gemm, HigherRankInput) {
  const Data d = make(12, 33, 7, 3);
  const Tensor x3 = d.xt.view({3, 4, 33});
  const Tensor y = poisoned({3, 4, 7}, DType::F32);
  const float one = 1.0f;
  cpu::linear_int8(x3, 1.0f, 7, d.wt, {&one, 1}, Tensor(), y, 1.0f, 0, {1});
  const auto want = ref::int8_gemm(d.x, 12, 33, 7, d.w, 7);
  for (std::int64_t i = 0; i < 84; ++i) ASSERT_EQ(y.get(i), static_cast<double>(want[static_cast<std::size_t>(i)]));
}

TEST(CpuInt8Gemm, Errors) {
  const Tensor x = Tensor::zeros({4, 7}, DType::U8);
  const float one = 1.0f;
  try {
    cpu::linear_int8(x, 1.0f, 0, Tensor::zeros({5, 8}, DType::I8), {&one, 1}, Tensor(),
                     Tensor::empty({4, 5}, DType::F32), 1.0f, 0, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("[4, 7]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[5, 8]"), std::string::npos) << e.what();
  }
  try {  // past 65793 terms an int32 sum can overflow
    cpu::linear_int8(Tensor::zeros({1, 65794}, DType::U8), 1.0f, 0, Tensor::zeros({2, 65794}, DType::I8), {&one, 1},
                     Tensor(), Tensor::empty({1, 2}, DType::F32), 1.0f, 0, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(std::string(e.what()).find("65794"), std::string::npos) << e.what();
  }
  const Tensor w = Tensor::zeros({5, 7}, DType::I8);
  const std::vector<float> two(2, 1.0f);
  EXPECT_THROW(cpu::linear_int8(x, 1.0f, 0, w, two, Tensor(), Tensor::empty({4, 5}, DType::F32), 1.0f, 0, {}), Error);
  EXPECT_THROW(cpu::linear_int8(x, 1.0f, 256, w, {&one, 1}, Tensor(), Tensor::empty({4, 5}, DType::U8), 1.0f, 0, {}),
               Error);
  EXPECT_THROW(cpu::linear_int8(x, 1.0f, 0, w, {&one, 1}, Tensor(), Tensor::empty({4, 5}, DType::I8), 1.0f, 128, {}),
               Error);
  EXPECT_THROW(cpu::linear_int8(x, 0.0f, 0, w, {&one, 1}, Tensor(), Tensor::empty({4, 5}, DType::F32), 1.0f, 0, {}),
               Error);
  EXPECT_THROW(cpu::linear_int8(Tensor::zeros({4, 7}, DType::I8), 1.0f, 0, w, {&one, 1}, Tensor(),
                                Tensor::empty({4, 5}, DType::F32), 1.0f, 0, {}),
               Error);
}

}  // namespace
