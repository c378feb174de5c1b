// CPU rotary position embedding against the double reference (f32 angle recipe, double rotation).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>

#include "backends/cpu/kernels.h"
#include "reference/ref_attention.h"
#include "reference/ref_tensor.h"

using namespace encore;

namespace {

void check_rope(RopeLayout layout, int rotary_dim, std::int64_t offset, bool strided, DType dtype, int threads) {
  std::mt19937 rng(static_cast<std::uint32_t>(rotary_dim * 7 + offset));
  const int H = 3;
  const std::int64_t B = 2, T = 37, D = 32, HD = H * D;
  // Strided: the q slice of a fused [B, T, 3*H*D] projection.
  Tensor x = strided ? ref::random_tensor({B, T, 3 * HD}, dtype, rng).slice(2, HD, 2 * HD)
                     : ref::random_tensor({B, T, HD}, dtype, rng);
  const RopeAttrs a{.num_heads = H, .rotary_dim = rotary_dim, .base = 10000.0f, .layout = layout,
                    .position_offset = offset};
  const ref::RefTensor want = ref::rope(ref::from_tensor(x), a);
  Tensor y = Tensor::empty({B, T, HD}, dtype);
  y.fill(std::nan(""));
  cpu::rope(x, a, y, cpu::CpuContext{threads});
  const std::string what = std::string(layout == RopeLayout::half_split ? "half_split" : "interleaved") + " R " +
                           std::to_string(rotary_dim) + " offset " + std::to_string(offset) + " strided " +
                           std::to_string(strided) + " " + dtype_name(dtype);
  EXPECT_LE(ref::relative_error(ref::from_tensor(y), want), ref::tolerance_for(dtype)) << what;
  // In place on the (possibly strided) input itself.
  cpu::rope(x, a, x, cpu::CpuContext{threads});
  EXPECT_LE(ref::relative_error(ref::from_tensor(x), want), ref::tolerance_for(dtype)) << what << " in place";
}

TEST(Rope, MatchesReference) {
  for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved})
    for (int R : {0, 32, 16, 8})
      for (std::int64_t offset : {0, 5, 1000})
        for (bool strided : {false, true}) {
          check_rope(layout, R, offset, strided, DType::F32, 2);
          check_rope(layout, R, offset, strided, DType::BF16, 1);
        }
}

// The rotation pairs: position 1, half_split rotates (0, R/2); interleaved rotates (0, 1).
TEST(Rope, PairsAndUntouchedTail) {
  Tensor x = Tensor::zeros({1, 2, 8}, DType::F32);
  x.at<float>({0, 1, 0}) = 1.0f;  // t = 1, dim 0
  x.at<float>({0, 1, 7}) = 5.0f;  // beyond R = 4: copied
  for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved}) {
    Tensor y = Tensor::empty({1, 2, 8}, DType::F32);
    y.fill(99.0);  // every element is written: none may keep the sentinel
    cpu::rope(x, {.num_heads = 1, .rotary_dim = 4, .layout = layout}, y, cpu::CpuContext{1});
    const int partner = layout == RopeLayout::half_split ? 2 : 1;
    for (int d = 0; d < 8; ++d) {  // t = 0 rotates by angle 0: zeros stay zeros
      EXPECT_EQ(y.at<float>({0, 0, d}), 0.0f) << d;
      const float want = d == 0 ? std::cos(1.0f) : d == partner ? std::sin(1.0f) : d == 7 ? 5.0f : 0.0f;
      EXPECT_NEAR(y.at<float>({0, 1, d}), want, 1e-6) << d;
    }
  }
}

TEST(Rope, Errors) {
  Tensor x = Tensor::zeros({1, 2, 8}, DType::F32), y = Tensor::empty({1, 2, 8}, DType::F32);
  auto expect_invalid = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_invalid([&] { cpu::rope(x, {.num_heads = 1, .rotary_dim = 3}, y, cpu::CpuContext{1}); },
                 "rotary_dim 3 must be even");
  expect_invalid([&] { cpu::rope(x, {.num_heads = 2, .rotary_dim = 6}, y, cpu::CpuContext{1}); },
                 "at most the head dim 4");
  expect_invalid([&] { cpu::rope(x, {.num_heads = 3}, y, cpu::CpuContext{1}); }, "not divisible by num_heads 3");
}

}  // namespace
