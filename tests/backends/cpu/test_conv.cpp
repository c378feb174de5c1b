// CPU conv2d / conv1d (oneDNN) against the double-precision references: groups, stride, padding,
// dilation, bias, strided inputs, bf16, the patch-embedding fast path, depthwise and pointwise
// conv1d, and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_context.h"
#include "reference/ref_gemm.h"
#include "reference/ref_tensor.h"

using namespace encore;

namespace {

Tensor poisoned(const Shape& shape, DType dtype) {
  Tensor y = Tensor::empty(shape, dtype);
  y.fill(std::numeric_limits<double>::quiet_NaN());
  return y;
}

struct Conv2dCase {
  Shape x;  // [N, C, H, W]
  std::int64_t O, kh, kw;
  Conv2dAttrs attrs;
  bool bias = true, strided = false;
  DType dtype = DType::F32;
};

void check_conv2d(const Conv2dCase& c, std::uint32_t seed) {
  const auto& a = c.attrs;
  SCOPED_TRACE("x " + c.x.str() + " O " + std::to_string(c.O) + " k " + std::to_string(c.kh) + "x" +
               std::to_string(c.kw) + " stride " + std::to_string(a.stride[0]) + "," + std::to_string(a.stride[1]) +
               " pad " + std::to_string(a.padding[0]) + "," + std::to_string(a.padding[1]) + " dil " +
               std::to_string(a.dilation[0]) + "," + std::to_string(a.dilation[1]) + " groups " +
               std::to_string(a.groups) + (c.bias ? " bias" : "") + (c.strided ? " strided" : "") + " " +
               dtype_name(c.dtype));
  std::mt19937 rng(seed);
  const Tensor x = c.strided ? ref::random_strided(c.x, c.dtype, rng) : ref::random_tensor(c.x, c.dtype, rng);
  const Tensor w = ref::random_tensor({c.O, c.x[1] / a.groups, c.kh, c.kw}, c.dtype, rng);
  const Tensor b = c.bias ? ref::random_tensor({c.O}, DType::F32, rng) : Tensor();
  const ref::RefTensor rb = c.bias ? ref::from_tensor(b) : ref::RefTensor();
  const ref::RefTensor want = ref::conv2d(ref::from_tensor(x), ref::from_tensor(w), c.bias ? &rb : nullptr, a);
  const Tensor y = poisoned(want.shape, c.dtype);
  cpu::conv2d(x, w, b, a, y, cpu::CpuContext{2});
  const ref::RefTensor got = ref::from_tensor(y);
  for (double v : got.data) ASSERT_FALSE(std::isnan(v)) << "an output was not written";
  EXPECT_LE(ref::relative_error(got, want), ref::tolerance_for(c.dtype));
}

// Runs the body under each activation-layout strategy, then restores the defaults.
template <class F>
void for_each_layout(F&& body) {
  using Layout = cpu::onednn::Tuning::ConvLayout;
  for (Layout l : {Layout::automatic, Layout::plain, Layout::preferred}) {
    SCOPED_TRACE("layout strategy " + std::to_string(static_cast<int>(l)));
    cpu::onednn::tuning().conv_layout = l;
    body();
  }
  cpu::onednn::tuning() = cpu::onednn::Tuning{};
}

TEST(CpuConv2d, GroupsStridePaddingDilation) {
  for_each_layout([] {
    std::uint32_t seed = 1;
    for (int groups : {1, 2, 6})
      for (int stride : {1, 2})
        for (int pad : {0, 1, 2})
          for (int dil : {1, 2})
            for (bool bias : {false, true}) {
              Conv2dCase c{{2, 6, 11, 9}, 6 * (groups == 6 ? 1 : 2), 3, 3};
              c.attrs = Conv2dAttrs{
                  .stride = {stride, stride}, .padding = {pad, pad}, .dilation = {dil, dil}, .groups = groups};
              c.bias = bias;
              check_conv2d(c, seed++);
            }
  });
}

TEST(CpuConv2d, AsymmetricSettingsAndStridedInput) {
  for_each_layout([] {
    Conv2dCase c{{1, 4, 13, 10}, 5, 3, 2};
    c.attrs = Conv2dAttrs{.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}, .groups = 1};
    c.strided = true;
    check_conv2d(c, 40);
    c.dtype = DType::BF16;
    check_conv2d(c, 41);
    Conv2dCase dw{{2, 8, 9, 9}, 8, 3, 3, Conv2dAttrs{.stride = {1, 1}, .padding = {1, 1}, .groups = 8}};
    dw.strided = true;
    check_conv2d(dw, 42);
    dw.dtype = DType::BF16;
    check_conv2d(dw, 43);
  });
}

TEST(CpuConv2d, PatchEmbeddingBothPaths) {
  // ViT-style: kernel == stride, no padding; H and W not multiples of the patch (remainder dropped).
  for (bool as_linear : {true, false}) {
    cpu::onednn::tuning().conv_patch_as_linear = as_linear;
    for (DType dt : {DType::F32, DType::BF16})
      for (bool strided : {false, true}) {
        Conv2dCase c{{2, 3, 35, 32}, 24, 8, 8, Conv2dAttrs{.stride = {8, 8}}};
        c.dtype = dt;
        c.strided = strided;
        check_conv2d(c, 50);
        c.bias = false;
        check_conv2d(c, 51);
      }
  }
  cpu::onednn::tuning().conv_patch_as_linear = true;
}

TEST(CpuConv2d, CassNatSubsampling) {
  // Conv2dSubsampling: [B, 1, T, 80] -> 3x3 stride 2 -> 3x3 stride 2.
  check_conv2d(Conv2dCase{{2, 1, 37, 80}, 16, 3, 3, Conv2dAttrs{.stride = {2, 2}}}, 60);
  check_conv2d(Conv2dCase{{2, 16, 18, 39}, 16, 3, 3, Conv2dAttrs{.stride = {2, 2}}}, 61);
  // Channel-rich: runs in oneDNN's preferred layout by default.
  check_conv2d(Conv2dCase{{2, 64, 17, 19}, 24, 3, 3, Conv2dAttrs{.stride = {2, 2}}}, 62);
  Conv2dCase strided{{1, 64, 9, 13}, 8, 3, 3, Conv2dAttrs{.stride = {2, 2}, .padding = {1, 1}}};
  strided.strided = true;
  check_conv2d(strided, 63);
  strided.dtype = DType::BF16;
  check_conv2d(strided, 64);
}

void check_conv1d(const Shape& xs, std::int64_t O, std::int64_t k, const Conv1dAttrs& a, bool bias, bool strided,
                  DType dtype, std::uint32_t seed) {
  SCOPED_TRACE("x " + xs.str() + " O " + std::to_string(O) + " k " + std::to_string(k) + " stride " +
               std::to_string(a.stride) + " pad " + std::to_string(a.padding) + " dil " + std::to_string(a.dilation) +
               " groups " + std::to_string(a.groups) + (bias ? " bias" : "") + (strided ? " strided" : "") + " " +
               dtype_name(dtype));
  std::mt19937 rng(seed);
  const Tensor x = strided ? ref::random_strided(xs, dtype, rng) : ref::random_tensor(xs, dtype, rng);
  const Tensor w = ref::random_tensor({O, xs[1] / a.groups, k}, dtype, rng);
  const Tensor b = bias ? ref::random_tensor({O}, dtype, rng) : Tensor();
  const ref::RefTensor rb = bias ? ref::from_tensor(b) : ref::RefTensor();
  const ref::RefTensor want = ref::conv1d(ref::from_tensor(x), ref::from_tensor(w), bias ? &rb : nullptr, a);
  const Tensor y = poisoned(want.shape, dtype);
  cpu::conv1d(x, w, b, a, y, cpu::CpuContext{2});
  const ref::RefTensor got = ref::from_tensor(y);
  for (double v : got.data) ASSERT_FALSE(std::isnan(v));
  EXPECT_LE(ref::relative_error(got, want), ref::tolerance_for(dtype));
}

TEST(CpuConv1d, PointwiseDepthwiseGeneral) {
  for_each_layout([] {
    std::uint32_t seed = 70;
    for (DType dt : {DType::F32, DType::BF16})
      for (bool strided : {false, true})
        for (bool bias : {false, true}) {
          // Pointwise (Conformer conv module in/out projections).
          check_conv1d({2, 16, 37}, 32, 1, Conv1dAttrs{}, bias, strided, dt, seed++);
          // Depthwise with same padding, odd and even kernels.
          check_conv1d({2, 16, 37}, 16, 5, Conv1dAttrs{.padding = 2, .groups = 16}, bias, strided, dt, seed++);
          check_conv1d({1, 12, 40}, 12, 31, Conv1dAttrs{.padding = 15, .groups = 12}, bias, strided, dt, seed++);
          // General: stride, dilation, groups.
          check_conv1d({2, 8, 29}, 12, 3, Conv1dAttrs{.stride = 2, .padding = 1, .dilation = 2, .groups = 2}, bias,
                       strided, dt, seed++);
          // kernel == stride (runs as a patch linear).
          check_conv1d({1, 4, 30}, 6, 3, Conv1dAttrs{.stride = 3}, bias, strided, dt, seed++);
        }
  });
}

TEST(CpuConv, ShapeErrorsNameShapes) {
  const Tensor x = Tensor::zeros({1, 4, 8, 8}, DType::F32);
  try {
    cpu::conv2d(x, Tensor::zeros({6, 3, 3, 3}, DType::F32), Tensor(), Conv2dAttrs{},
                Tensor::empty({1, 6, 6, 6}, DType::F32), {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("[1, 4, 8, 8]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[6, 3, 3, 3]"), std::string::npos) << e.what();
  }
  // Wrong y shape, groups not dividing, bad stride, kernel larger than the padded input.
  EXPECT_THROW(cpu::conv2d(x, Tensor::zeros({6, 4, 3, 3}, DType::F32), Tensor(), Conv2dAttrs{},
                           Tensor::empty({1, 6, 7, 6}, DType::F32), {}),
               Error);
  EXPECT_THROW(cpu::conv2d(x, Tensor::zeros({6, 2, 3, 3}, DType::F32), Tensor(), Conv2dAttrs{.groups = 3},
                           Tensor::empty({1, 6, 6, 6}, DType::F32), {}),
               Error);
  EXPECT_THROW(cpu::conv2d(x, Tensor::zeros({6, 4, 3, 3}, DType::F32), Tensor(), Conv2dAttrs{.stride = {0, 1}},
                           Tensor::empty({1, 6, 6, 6}, DType::F32), {}),
               Error);
  EXPECT_THROW(cpu::conv1d(Tensor::zeros({1, 4, 3}, DType::F32), Tensor::zeros({4, 4, 5}, DType::F32), Tensor(),
                           Conv1dAttrs{}, Tensor::empty({1, 4, 1}, DType::F32), {}),
               Error);
  EXPECT_THROW(cpu::conv1d(Tensor::zeros({1, 4, 9}, DType::F32), Tensor::zeros({4, 4, 3}, DType::F32),
                           Tensor::zeros({5}, DType::F32), Conv1dAttrs{}, Tensor::empty({1, 4, 7}, DType::F32), {}),
               Error);
}

}  // namespace
