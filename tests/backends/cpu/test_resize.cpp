// Resize (nearest / bilinear / bicubic, PyTorch semantics) against hand-computed values and the
// double reference.
#include <gtest/gtest.h>

#include <vector>

#include "backends/cpu/ewk_test_util.h"
#include "reference/ref_data.h"

namespace encore {
namespace {

using ewk_test::ctx;
using ewk_test::expect_close;
using ewk_test::Layout;
using ewk_test::make_input;
using ewk_test::poisoned;

std::vector<float> run(const std::vector<float>& in, std::int64_t h, std::int64_t w, ResizeMode mode, std::int64_t oh,
                       std::int64_t ow) {
  const Tensor x = Tensor::from_vector(in, {1, 1, h, w});
  const Tensor y = poisoned({1, 1, oh, ow}, DType::F32);
  cpu::resize(x, ResizeAttrs{.mode = mode, .out_h = oh, .out_w = ow}, y, ctx());
  return y.to_float_vector();
}

void expect_values(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 2e-6) << "element " << i;
}

// 2x2 -> 3x3, scale = 2/3. Source coordinates (dst + 0.5) * 2/3 - 0.5 = -1/6, 1/2, 7/6.
//  bilinear: -1/6 clamps to 0; 1/2 mixes rows/cols 0 and 1 equally; 7/6 has i0 = 1 = the last, so
//            both taps are 1. 1-D weights per output: (1, 0), (1/2, 1/2), (0, 1).
//  bicubic:  floor(-1/6) = -1, t = 5/6: taps -2..1 clamp to 0,0,0,1 with Keys weights
//            W(11/6), W(5/6), W(1/6), W(7/6) = -5/288, 139/864, 815/864, -25/288, so output 0 is
//            313/288 in[0] - 25/288 in[1]; output 1 (t = 1/2) is (in[0] + in[1]) / 2; output 2
//            mirrors output 0: -25/288 in[0] + 313/288 in[1].
//  nearest:  floor(dst * 2/3) = 0, 0, 1.
TEST(Resize, TwoByTwoToThreeByThreeByHand) {
  const std::vector<float> x = {1, 2, 3, 4};
  expect_values(run(x, 2, 2, ResizeMode::bilinear, 3, 3), {1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});
  expect_values(run(x, 2, 2, ResizeMode::nearest, 3, 3), {1, 1, 2, 1, 1, 2, 3, 3, 4});
  // x is linear (1 + 2 r + c) and the weights sum to 1, so each output is 1 + 2 E[r] + E[c] with
  // E = -25/288, 1/2, 313/288.
  const double e0 = -25.0 / 288, e1 = 0.5, e2 = 313.0 / 288;
  const double e[] = {e0, e1, e2};
  std::vector<double> want;
  for (double er : e)
    for (double ec : e) want.push_back(1 + 2 * er + ec);
  expect_values(run(x, 2, 2, ResizeMode::bicubic, 3, 3), want);
  EXPECT_NEAR(want[0], 213.0 / 288, 1e-12);  // 0.739583..., as torch prints 0.7396

  // A non-linear input: y[i][j] = sum_r sum_c w_i[r] w_j[c] x[r][c] with the 1-D weights above.
  const std::vector<float> z = {1, 5, 2, 0};
  const double a = 313.0 / 288, b = -25.0 / 288;
  const double w[3][2] = {{a, b}, {0.5, 0.5}, {b, a}};
  std::vector<double> want_z;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      want_z.push_back(w[i][0] * (w[j][0] * 1 + w[j][1] * 5) + w[i][1] * (w[j][0] * 2 + w[j][1] * 0));
  expect_values(run(z, 2, 2, ResizeMode::bicubic, 3, 3), want_z);
  const double l[3][2] = {{1, 0}, {0.5, 0.5}, {0, 1}};
  std::vector<double> want_l;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      want_l.push_back(l[i][0] * (l[j][0] * 1 + l[j][1] * 5) + l[i][1] * (l[j][0] * 2 + l[j][1] * 0));
  expect_values(run(z, 2, 2, ResizeMode::bilinear, 3, 3), want_l);
}

TEST(Resize, MatchesReferenceForModesDtypesAndSizes) {
  std::mt19937 rng(41);
  struct Case {
    std::int64_t ih, iw, oh, ow;
  };
  const Case cases[] = {{5, 7, 11, 3}, {8, 8, 4, 4}, {1, 1, 3, 2}, {3, 5, 3, 5}, {17, 13, 40, 29}, {6, 9, 2, 17}};
  for (ResizeMode mode : {ResizeMode::nearest, ResizeMode::bilinear, ResizeMode::bicubic})
    for (DType dt : ewk_test::float_dtypes())
      for (const Case& c : cases)
        for (Layout layout : {Layout::contiguous, Layout::strided}) {
          SCOPED_TRACE(std::to_string(static_cast<int>(mode)) + " " + dtype_name(dt) + " " + std::to_string(c.ih) + "x" +
                       std::to_string(c.iw) + " -> " + std::to_string(c.oh) + "x" + std::to_string(c.ow));
          const ResizeAttrs attrs{.mode = mode, .out_h = c.oh, .out_w = c.ow};
          const Tensor x = make_input({2, 3, c.ih, c.iw}, dt, rng, layout);
          const ref::RefTensor want = ref::resize(ref::from_tensor(x), attrs);
          const Tensor y = poisoned(want.shape, dt);
          cpu::resize(x, attrs, y, ctx());
          expect_close(y, want, dt, "resize");
        }
  // Segmentation-logit size: parallel over output rows.
  const Tensor x = ref::random_tensor({1, 8, 32, 32}, DType::F32, rng);
  for (ResizeMode mode : {ResizeMode::bilinear, ResizeMode::bicubic}) {
    const ResizeAttrs attrs{.mode = mode, .out_h = 96, .out_w = 80};
    const Tensor y = poisoned({1, 8, 96, 80}, DType::F32);
    cpu::resize(x, attrs, y, ctx());
    expect_close(y, ref::resize(ref::from_tensor(x), attrs), DType::F32, "large");
  }
}

TEST(Resize, Errors) {
  ewk_test::expect_error(
      [&] {
        cpu::resize(Tensor::zeros({1, 4, 4}, DType::F32), ResizeAttrs{.out_h = 2, .out_w = 2},
                    Tensor::zeros({1, 2, 2}, DType::F32), ctx());
      },
      ErrorCode::invalid_argument, "[N, C, H, W]");
  ewk_test::expect_error(
      [&] {
        cpu::resize(Tensor::zeros({1, 1, 4, 4}, DType::I32), ResizeAttrs{.out_h = 2, .out_w = 2},
                    Tensor::zeros({1, 1, 2, 2}, DType::I32), ctx());
      },
      ErrorCode::unsupported, "i32");
  ewk_test::expect_error(
      [&] {
        cpu::resize(Tensor::zeros({1, 1, 4, 4}, DType::F32), ResizeAttrs{.out_h = 2, .out_w = 3},
                    Tensor::zeros({1, 1, 2, 2}, DType::F32), ctx());
      },
      ErrorCode::invalid_argument, "[1, 1, 2, 3]");
}

}  // namespace
}  // namespace encore
