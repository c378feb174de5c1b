// Normalisation and softmax kernels against the double references.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backends/cpu/ewk_test_util.h"
#include "reference/ref_elementwise.h"
#include "reference/ref_norm.h"

namespace encore {
namespace {

using ewk_test::both_paths;
using ewk_test::ctx;
using ewk_test::expect_close;
using ewk_test::Layout;
using ewk_test::make_input;
using ewk_test::poisoned;

const Layout kLayouts[] = {Layout::contiguous, Layout::strided, Layout::broadcast};
const Shape kRowShapes[] = {{3}, {2, 17}, {5, 67}, {3, 257}, {2, 769}, {45, 768}, {2, 3, 65}};

std::string trace(DType dt, const Shape& s, Layout l) {
  return std::string(dtype_name(dt)) + " " + s.str() + " " + ewk_test::layout_name(l);
}

TEST(LayerNorm, BothKindsEveryDtypeLayoutAndSize) {
  std::mt19937 rng(11);
  both_paths([&] {
    for (LayerNormKind kind : {LayerNormKind::standard, LayerNormKind::unbiased_std})
      for (DType dt : ewk_test::float_dtypes())
        for (const Shape& shape : kRowShapes)
          for (Layout layout : kLayouts)
            for (bool affine : {false, true}) {
              SCOPED_TRACE(trace(dt, shape, layout) + (kind == LayerNormKind::standard ? " standard" : " unbiased") +
                           (affine ? " affine" : ""));
              const std::int64_t c = shape[shape.rank() - 1];
              const LayerNormAttrs attrs{.eps = 1e-5f, .kind = kind};
              // Offset rows (mean 3) check the two-pass variance.
              const Tensor x = make_input(shape, dt, rng, layout, 2.0, 4.0);
              const Tensor g = affine ? ref::random_strided({c}, dt, rng, 0.5, 1.5) : Tensor();
              const Tensor b = affine ? ref::random_tensor({c}, dt, rng) : Tensor();
              const ref::RefTensor rg = affine ? ref::from_tensor(g) : ref::RefTensor();
              const ref::RefTensor rb = affine ? ref::from_tensor(b) : ref::RefTensor();
              const Tensor y = poisoned(shape, dt);
              cpu::layer_norm(x, g, b, attrs, y, ctx());
              expect_close(y, ref::layer_norm(ref::from_tensor(x), affine ? &rg : nullptr, affine ? &rb : nullptr, attrs),
                           dt, "layer_norm");
            }
  });
}

TEST(LayerNorm, SingleElementRowsAndBadGamma) {
  const Tensor x = Tensor::from_vector(std::vector<float>{5.0f, -2.0f}, {2, 1});
  const Tensor y = poisoned({2, 1}, DType::F32);
  cpu::layer_norm(x, Tensor(), Tensor(), LayerNormAttrs{}, y, ctx());
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{0.0f, 0.0f}));
  ewk_test::expect_error(
      [&] {
        cpu::layer_norm(Tensor::zeros({2, 4}, DType::F32), Tensor::zeros({5}, DType::F32), Tensor(), LayerNormAttrs{},
                        Tensor::zeros({2, 4}, DType::F32), ctx());
      },
      ErrorCode::invalid_argument, "gamma");
  ewk_test::expect_error(
      [&] {
        cpu::layer_norm(Tensor::zeros({2, 4}, DType::I32), Tensor(), Tensor(), LayerNormAttrs{},
                        Tensor::zeros({2, 4}, DType::F32), ctx());
      },
      ErrorCode::unsupported, "i32");
}

TEST(AddLayerNorm, WritesTheSumAndNormalisesIt) {
  std::mt19937 rng(12);
  both_paths([&] {
    for (DType dt : ewk_test::float_dtypes())
      for (const Shape& shape : {Shape{1, 3}, Shape{5, 67}, Shape{3, 769}, Shape{50, 768}})
        for (Layout layout : {Layout::contiguous, Layout::strided}) {
          SCOPED_TRACE(trace(dt, shape, layout));
          const std::int64_t c = shape[shape.rank() - 1];
          const LayerNormAttrs attrs{.eps = 1e-6f};
          const Tensor x = make_input(shape, dt, rng, layout);
          const Tensor r = make_input(shape, dt, rng, Layout::contiguous);
          const Tensor g = ref::random_tensor({c}, dt, rng, 0.5, 1.5), b = ref::random_tensor({c}, dt, rng);
          const Tensor sum = poisoned(shape, dt), y = poisoned(shape, dt);
          cpu::add_layer_norm(x, r, g, b, attrs, sum, y, ctx());
          expect_close(sum, ref::binary(ref::from_tensor(x), ref::from_tensor(r), BinaryOp::add), dt, "sum");
          // The normalisation sees the stored (rounded) sum, as the unfused pair would.
          const ref::RefTensor rg = ref::from_tensor(g), rb = ref::from_tensor(b);
          expect_close(y, ref::layer_norm(ref::from_tensor(sum), &rg, &rb, attrs), dt, "y");
        }
  });
}

TEST(RmsNorm, EveryDtypeLayoutAndSize) {
  std::mt19937 rng(13);
  both_paths([&] {
    for (DType dt : ewk_test::float_dtypes())
      for (const Shape& shape : kRowShapes)
        for (Layout layout : kLayouts)
          for (bool affine : {false, true}) {
            SCOPED_TRACE(trace(dt, shape, layout) + (affine ? " gamma" : ""));
            const std::int64_t c = shape[shape.rank() - 1];
            const RmsNormAttrs attrs{.eps = 1e-6f};
            const Tensor x = make_input(shape, dt, rng, layout);
            const Tensor g = affine ? ref::random_tensor({c}, dt, rng, 0.5, 1.5) : Tensor();
            const ref::RefTensor rg = affine ? ref::from_tensor(g) : ref::RefTensor();
            const Tensor y = poisoned(shape, dt);
            cpu::rms_norm(x, g, attrs, y, ctx());
            expect_close(y, ref::rms_norm(ref::from_tensor(x), affine ? &rg : nullptr, attrs), dt, "rms_norm");
          }
  });
}

TEST(GroupNorm, GroupsShapesDtypesAndLayouts) {
  std::mt19937 rng(14);
  struct Case {
    Shape shape;
    int groups;
  };
  const Case cases[] = {{{2, 6, 5, 7}, 1}, {{2, 6, 5, 7}, 2}, {{2, 6, 5, 7}, 3}, {{2, 6, 5, 7}, 6},
                        {{1, 32, 17}, 8},  {{3, 4}, 2},       {{2, 64, 33, 33}, 32}};
  both_paths([&] {
    for (DType dt : ewk_test::float_dtypes())
      for (const Case& c : cases)
        for (Layout layout : kLayouts)
          for (bool affine : {false, true}) {
            SCOPED_TRACE(trace(dt, c.shape, layout) + " groups " + std::to_string(c.groups));
            const GroupNormAttrs attrs{.groups = c.groups, .eps = 1e-5f};
            const Tensor x = make_input(c.shape, dt, rng, layout, -1.0, 3.0);
            const Tensor g = affine ? ref::random_tensor({c.shape[1]}, dt, rng, 0.5, 1.5) : Tensor();
            const Tensor b = affine ? ref::random_tensor({c.shape[1]}, dt, rng) : Tensor();
            const ref::RefTensor rg = affine ? ref::from_tensor(g) : ref::RefTensor();
            const ref::RefTensor rb = affine ? ref::from_tensor(b) : ref::RefTensor();
            const Tensor y = poisoned(c.shape, dt);
            cpu::group_norm(x, g, b, attrs, y, ctx());
            expect_close(y, ref::group_norm(ref::from_tensor(x), affine ? &rg : nullptr, affine ? &rb : nullptr, attrs),
                         dt, "group_norm");
          }
  });
  ewk_test::expect_error(
      [&] {
        cpu::group_norm(Tensor::zeros({1, 6, 4}, DType::F32), Tensor(), Tensor(), GroupNormAttrs{.groups = 4},
                        Tensor::zeros({1, 6, 4}, DType::F32), ctx());
      },
      ErrorCode::invalid_argument, "groups");
}

TEST(L2Normalize, AnyAxisAndEps) {
  std::mt19937 rng(15);
  both_paths([&] {
    for (DType dt : ewk_test::float_dtypes())
      for (int axis : {-1, 0, 1})
        for (float eps : {0.0f, 1e-12f})
          for (Layout layout : kLayouts) {
            const Shape shape{7, 33, 65};
            SCOPED_TRACE(trace(dt, shape, layout) + " axis " + std::to_string(axis));
            const L2NormAttrs attrs{.axis = axis, .eps = eps};
            const Tensor x = make_input(shape, dt, rng, layout);
            const Tensor y = poisoned(shape, dt);
            cpu::l2_normalize(x, attrs, y, ctx());
            expect_close(y, ref::l2_normalize(ref::from_tensor(x), attrs), dt, "l2_normalize");
          }
  });
  // A zero vector: eps = 0 divides 0 by 0 like Segmenter; eps > 0 gives zeros. The output starts
  // finite, so an unwritten element cannot pass for NaN.
  const Tensor z = Tensor::zeros({2, 4}, DType::F32);
  Tensor y = Tensor::empty({2, 4}, DType::F32);
  y.fill(7.0);
  cpu::l2_normalize(z, L2NormAttrs{.axis = -1, .eps = 0.0f}, y, ctx());
  for (std::int64_t i = 0; i < 8; ++i) EXPECT_TRUE(std::isnan(y.get(i))) << i;
  y.fill(7.0);
  cpu::l2_normalize(z, L2NormAttrs{.axis = -1, .eps = 1e-12f}, y, ctx());
  for (std::int64_t i = 0; i < 8; ++i) EXPECT_EQ(y.get(i), 0.0) << i;
}

TEST(Softmax, AnyAxisEveryDtypeAndLayout) {
  std::mt19937 rng(16);
  const Shape shapes[] = {{1}, {3, 17}, {4, 67, 5}, {2, 257}, {2, 3, 769}, {12 * 16, 197}};
  both_paths([&] {
    for (bool log : {false, true})
      for (DType dt : ewk_test::float_dtypes())
        for (const Shape& shape : shapes)
          for (int axis = -1; axis < shape.rank(); ++axis)
            for (Layout layout : kLayouts) {
              if (axis == -1 && shape.rank() > 1) continue;  // -1 is covered by rank - 1
              const int ax = axis == -1 ? shape.rank() - 1 : axis;
              SCOPED_TRACE(trace(dt, shape, layout) + " axis " + std::to_string(ax) + (log ? " log" : ""));
              const Tensor x = make_input(shape, dt, rng, layout, -10.0, 10.0);
              const Tensor y = poisoned(shape, dt);
              cpu::softmax(x, SoftmaxAttrs{.axis = ax}, log, y, ctx());
              expect_close(y, ref::softmax(ref::from_tensor(x), ax, log), dt, log ? "log_softmax" : "softmax");
            }
  });
}

TEST(Softmax, LowestRowIsUniformAndLargeValuesStayAccurate) {
  both_paths([&] {
    const float lowest = std::numeric_limits<float>::lowest();
    const Tensor x = Tensor::from_vector(std::vector<float>(37, lowest), {1, 37});
    const Tensor y = poisoned({1, 37}, DType::F32);
    cpu::softmax(x, SoftmaxAttrs{}, false, y, ctx());
    for (std::int64_t i = 0; i < 37; ++i) EXPECT_NEAR(y.get(i), 1.0 / 37, 1e-7);
    cpu::softmax(x, SoftmaxAttrs{}, true, y, ctx());
    for (std::int64_t i = 0; i < 37; ++i) EXPECT_NEAR(y.get(i), -std::log(37.0), 1e-6);
    // Masked entries at lowest next to real scores get exactly zero probability.
    const Tensor m = Tensor::from_vector(std::vector<float>{1.0f, lowest, 2.0f, lowest}, {4});
    const Tensor p = poisoned({4}, DType::F32);
    cpu::softmax(m, SoftmaxAttrs{}, false, p, ctx());
    EXPECT_EQ(p.get(1), 0.0);
    EXPECT_NEAR(p.get(2), 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
    // log_softmax of large logits: (x - max) first keeps the small results exact.
    const Tensor big = Tensor::from_vector(std::vector<float>{1000.0f, 1000.5f, 999.0f, 1001.0f}, {4});
    cpu::softmax(big, SoftmaxAttrs{}, true, p, ctx());
    expect_close(p, ref::softmax(ref::from_tensor(big), -1, true), DType::F32, "large log_softmax");
  });
}

// In place (y is x): log_softmax reads x again after the exponentials, which must not land on it.
TEST(Softmax, InPlace) {
  std::mt19937 rng(17);
  both_paths([&] {
    for (bool log : {false, true})
      for (const Shape& shape : {Shape{3, 50}, Shape{2, 5000}}) {
        SCOPED_TRACE(shape.str() + (log ? " log" : ""));
        const Tensor x = make_input(shape, DType::F32, rng, kLayouts[0], -10.0, 10.0);
        const ref::RefTensor want = ref::softmax(ref::from_tensor(x), -1, log);
        cpu::softmax(x, SoftmaxAttrs{}, log, x, ctx());
        expect_close(x, want, DType::F32, log ? "log_softmax" : "softmax");
      }
  });
}

// A row of -inf is NaN (torch), for softmax and log_softmax, rows short and longer than a vector,
// on both loops; the other row stays a proper distribution. The output starts finite, so an
// unwritten row cannot pass for NaN.
TEST(Softmax, AllNegativeInfinityRowIsNaNLikeTorch) {
  const float inf = std::numeric_limits<float>::infinity();
  both_paths([&] {
    for (const std::int64_t n : {3, 37})
      for (const bool log : {false, true}) {
        SCOPED_TRACE(std::to_string(n) + (log ? " log" : ""));
        std::vector<float> rows(static_cast<std::size_t>(2 * n), -inf);
        for (std::int64_t i = 0; i < n; ++i) rows[static_cast<std::size_t>(n + i)] = static_cast<float>(i % 5);
        const Tensor x = Tensor::from_vector(rows, {2, n});
        Tensor y = Tensor::empty({2, n}, DType::F32);
        y.fill(7.0);
        cpu::softmax(x, SoftmaxAttrs{}, log, y, ctx());
        double total = 0.0;
        for (std::int64_t i = 0; i < n; ++i) {
          EXPECT_TRUE(std::isnan(y.get(i))) << i;
          total += log ? std::exp(y.get(n + i)) : y.get(n + i);
        }
        EXPECT_NEAR(total, 1.0, 1e-5);
      }
  });
}

}  // namespace
}  // namespace encore
