// CUDA normalisation and softmax kernels against the CPU kernels on the same inputs: both
// LayerNorm kinds, the fused add_layer_norm, rms_norm, group_norm, l2_normalize, softmax and
// log_softmax along every axis; odd sizes, strided views, rows above the shared-memory cache,
// every float dtype, poisoned outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "backends/cpu/kernels.h"
#include "backends/cuda/cuda_test_util.h"

using namespace encore;
using namespace encore::cuda::test;

namespace {

const cpu::CpuContext kCpu{2};
constexpr DType kFloats[] = {DType::F32, DType::F16, DType::BF16};

Pair make(const Shape& s, DType dt, std::mt19937& rng, bool strided, double lo = -1.0, double hi = 1.0) {
  return strided ? random_strided_pair(s, dt, rng, lo, hi) : random_pair(s, dt, rng, lo, hi);
}

std::string tag(DType dt, bool strided, std::int64_t c) {
  return std::string(dtype_name(dt)) + (strided ? " strided" : "") + " C " + std::to_string(c);
}

// Row widths: tiny, odd, ViT, not a multiple of the vector width, above the 11K-float cache.
constexpr std::int64_t kWidths[] = {1, 7, 768, 1003, 13000};

TEST(CudaNorm, LayerNorm) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(11);
  for (LayerNormKind kind : {LayerNormKind::standard, LayerNormKind::unbiased_std})
    for (std::int64_t c : kWidths)
      for (DType dt : kFloats)
        for (bool strided : {false, true})
          for (bool affine : {true, false}) {
            if (kind == LayerNormKind::unbiased_std && c == 1) continue;  // NaN by definition (tested below)
            const Pair x = make({3, 5, c}, dt, rng, strided, -2.0, 3.0);
            const Pair g = make({c}, DType::F32, rng, false, 0.5, 1.5), b = make({c}, dt, rng, false);
            const LayerNormAttrs attrs{.eps = 1e-5f, .kind = kind};
            Tensor want = Tensor::empty(x.host.shape(), dt);
            cpu::layer_norm(x.host, affine ? g.host : Tensor(), affine ? b.host : Tensor(), attrs, want, kCpu);
            Tensor y = poisoned(x.host.shape(), dt);
            cuda::layer_norm(x.device, affine ? g.device : Tensor(), affine ? b.device : Tensor(), attrs, y,
                             context());
            EXPECT_TRUE(close_to(y, want, tolerance(dt)))
                << "kind " << static_cast<int>(kind) << " " << tag(dt, strided, c) << " affine " << affine;
          }
}

TEST(CudaNorm, LayerNormUnbiasedSingleElementIsNaN) {
  ENCORE_REQUIRE_GPU();
  Tensor y = poisoned({4, 1}, DType::F32);
  runtime().memset(y.data(), 0, y.nbytes());
  cuda::layer_norm(upload(Tensor::from_vector<float>({1, 2, 3, 4}, {4, 1})), {}, {},
                   {.kind = LayerNormKind::unbiased_std}, y, context());
  const Tensor got = download(y);
  for (std::int64_t i = 0; i < 4; ++i) EXPECT_TRUE(std::isnan(got.get(i))) << i;
}

TEST(CudaNorm, AddLayerNorm) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(12);
  for (std::int64_t c : kWidths)
    for (DType dt : kFloats)
      for (DType sum_dt : {dt, DType::F32})
        for (bool strided : {false, true}) {
          const Pair x = make({4, 3, c}, dt, rng, strided), r = make({4, 3, c}, dt, rng, false);
          const Pair g = make({c}, dt, rng, false, 0.5, 1.5), b = make({c}, dt, rng, false);
          const LayerNormAttrs attrs{.eps = 1e-6f};
          Tensor want_sum = Tensor::empty(x.host.shape(), sum_dt), want = Tensor::empty(x.host.shape(), dt);
          cpu::add_layer_norm(x.host, r.host, g.host, b.host, attrs, want_sum, want, kCpu);
          Tensor sum = poisoned(x.host.shape(), sum_dt), y = poisoned(x.host.shape(), dt);
          cuda::add_layer_norm(x.device, r.device, g.device, b.device, attrs, sum, y, context());
          EXPECT_TRUE(close_to(sum, want_sum, tolerance(sum_dt))) << tag(dt, strided, c) << " sum";
          EXPECT_TRUE(close_to(y, want, tolerance(dt))) << tag(dt, strided, c) << " sum " << dtype_name(sum_dt);
        }
}

// The residual sum may be written over x or over the residual (the memory planner reuses a buffer
// whose last reader is this node): rows wider than the kernel's cache re-read what they wrote.
TEST(CudaNorm, AddLayerNormSumOverItsInputs) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(17);
  for (std::int64_t c : {std::int64_t{768}, std::int64_t{13000}})
    for (DType dt : {DType::F32, DType::BF16})
      for (const bool over_x : {true, false}) {
        const Pair x = make({3, c}, dt, rng, false), r = make({3, c}, dt, rng, false);
        const Pair g = make({c}, dt, rng, false, 0.5, 1.5), b = make({c}, dt, rng, false);
        const LayerNormAttrs attrs{.eps = 1e-6f};
        Tensor want_sum = Tensor::empty({3, c}, dt), want = Tensor::empty({3, c}, dt);
        cpu::add_layer_norm(x.host, r.host, g.host, b.host, attrs, want_sum, want, kCpu);
        const Tensor& sum = over_x ? x.device : r.device;  // written in place
        Tensor y = poisoned({3, c}, dt);
        cuda::add_layer_norm(x.device, r.device, g.device, b.device, attrs, sum, y, context());
        EXPECT_TRUE(close_to(sum, want_sum, tolerance(dt))) << tag(dt, false, c) << (over_x ? " over x" : " over r");
        EXPECT_TRUE(close_to(y, want, tolerance(dt))) << tag(dt, false, c) << (over_x ? " over x" : " over r");
      }
}

TEST(CudaNorm, RmsNorm) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(13);
  for (std::int64_t c : kWidths)
    for (DType dt : kFloats)
      for (bool strided : {false, true}) {
        const Pair x = make({2, 7, c}, dt, rng, strided, -3.0, 3.0), g = make({c}, dt, rng, false);
        const RmsNormAttrs attrs{.eps = 1e-6f};
        Tensor want = Tensor::empty(x.host.shape(), dt);
        cpu::rms_norm(x.host, g.host, attrs, want, kCpu);
        Tensor y = poisoned(x.host.shape(), dt);
        cuda::rms_norm(x.device, g.device, attrs, y, context());
        EXPECT_TRUE(close_to(y, want, tolerance(dt))) << tag(dt, strided, c);
      }
}

TEST(CudaNorm, GroupNorm) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(14);
  const Shape shapes[] = {{2, 12, 5, 7}, {3, 6, 31}, {1, 32, 17, 19}, {2, 4}};
  for (const Shape& s : shapes)
    for (int groups : {1, 2, 3, 4})
      for (DType dt : kFloats)
        for (bool strided : {false, true}) {
          const std::int64_t ch = s[1];
          if (ch % groups != 0) continue;
          const Pair x = make(s, dt, rng, strided, -2.0, 2.0);
          const Pair g = make({ch}, DType::F32, rng, false, 0.5, 1.5), b = make({ch}, DType::F32, rng, false);
          const GroupNormAttrs attrs{.groups = groups, .eps = 1e-5f};
          Tensor want = Tensor::empty(s, dt);
          cpu::group_norm(x.host, g.host, b.host, attrs, want, kCpu);
          Tensor y = poisoned(s, dt);
          cuda::group_norm(x.device, g.device, b.device, attrs, y, context());
          EXPECT_TRUE(close_to(y, want, tolerance(dt))) << s.str() << " groups " << groups << " " << tag(dt, strided, ch);
        }
}

TEST(CudaNorm, L2Normalize) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(15);
  // [4, 300, 64] along axis 1 has 256 lines, [4, 300, 300] 1200: both the block and thread paths.
  const Shape shapes[] = {{4, 300, 64}, {4, 300, 300}, {5, 1025}};
  for (const Shape& s : shapes)
    for (int axis = -1; axis < s.rank(); ++axis)
      for (DType dt : kFloats)
        for (bool strided : {false, true}) {
          const Pair x = make(s, dt, rng, strided);
          const L2NormAttrs attrs{.axis = axis, .eps = 1e-12f};
          Tensor want = Tensor::empty(s, dt);
          cpu::l2_normalize(x.host, attrs, want, kCpu);
          Tensor y = poisoned(s, dt);
          cuda::l2_normalize(x.device, attrs, y, context());
          EXPECT_TRUE(close_to(y, want, tolerance(dt))) << s.str() << " axis " << axis << " " << tag(dt, strided, 0);
        }
}

// A NaN in a line makes the whole line NaN, as on the CPU and in torch (the norm is NaN, and the
// eps floor must not replace it).
TEST(CudaNorm, L2NormalizeNaNLine) {
  ENCORE_REQUIRE_GPU();
  for (const float eps : {1e-12f, 0.0f}) {
    const Tensor x = Tensor::from_vector<float>({1, std::numeric_limits<float>::quiet_NaN(), 2, 3, 4, 0}, {2, 3});
    Tensor want = Tensor::empty({2, 3}, DType::F32);
    cpu::l2_normalize(x, {.axis = -1, .eps = eps}, want, kCpu);
    Tensor y = poisoned({2, 3}, DType::F32);
    runtime().memset(y.data(), 0, y.nbytes());  // finite: an unwritten line cannot pass for NaN
    cuda::l2_normalize(upload(x), {.axis = -1, .eps = eps}, y, context());
    const Tensor got = download(y);
    for (std::int64_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(std::isnan(got.get(i))) << "eps " << eps << " element " << i;
      EXPECT_TRUE(std::isnan(want.get(i))) << "CPU, eps " << eps << " element " << i;
    }
    for (std::int64_t i = 3; i < 6; ++i) EXPECT_NEAR(got.get(i), want.get(i), 1e-6) << i;
  }
}

TEST(CudaNorm, Softmax) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(16);
  const Shape shapes[] = {{3, 5, 197}, {2, 1100, 3}, {2, 20011}, {9}};
  for (bool log : {false, true})
    for (const Shape& s : shapes)
      for (int axis = 0; axis < s.rank(); ++axis)
        for (DType dt : kFloats)
          for (bool strided : {false, true}) {
            const Pair x = make(s, dt, rng, strided, -8.0, 8.0);
            const SoftmaxAttrs attrs{.axis = axis};
            Tensor want = Tensor::empty(s, dt);
            cpu::softmax(x.host, attrs, log, want, kCpu);
            Tensor y = poisoned(s, dt);
            cuda::softmax(x.device, attrs, log, y, context());
            EXPECT_TRUE(close_to(y, want, tolerance(dt)))
                << (log ? "log_softmax " : "softmax ") << s.str() << " axis " << axis << " " << tag(dt, strided, 0);
          }
}

TEST(CudaNorm, SoftmaxSpecialRows) {
  ENCORE_REQUIRE_GPU();
  const float lowest = std::numeric_limits<float>::lowest(), inf = std::numeric_limits<float>::infinity();
  // Row 0: all lowest -> uniform. Row 1: all -inf -> NaN (torch). Row 2: a NaN -> NaN row.
  const Tensor x = Tensor::from_vector<float>({lowest, lowest, lowest, lowest, -inf, -inf, -inf, -inf, 1.0f,
                                               std::nanf(""), 2.0f, 3.0f},
                                              {3, 4});
  Tensor y = poisoned({3, 4}, DType::F32);
  runtime().memset(y.data(), 0, y.nbytes());  // finite: an unwritten row cannot pass for NaN
  cuda::softmax(upload(x), {.axis = -1}, false, y, context());
  const Tensor got = download(y);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(got.at<float>({0, i}), 0.25f);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isnan(got.at<float>({1, i})));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isnan(got.at<float>({2, i})));
}

TEST(CudaNorm, ParameterErrors) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(17);
  const Pair x = make({2, 8}, DType::F32, rng, false), g = make({7}, DType::F32, rng, false);
  Tensor y = poisoned({2, 8}, DType::F32);
  try {
    cuda::layer_norm(x.device, g.device, {}, {}, y, context());
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("gamma"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda::group_norm(upload(Tensor::zeros({2, 6, 3}, DType::F32)), {}, {}, {.groups = 4}, poisoned({2, 6, 3}, DType::F32),
                                context()),
               Error);
}

}  // namespace
