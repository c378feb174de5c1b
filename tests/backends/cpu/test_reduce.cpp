// Reductions: sum/mean, argmax, topk, cumsum.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
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

const Layout kLayouts[] = {Layout::contiguous, Layout::strided, Layout::broadcast};

TEST(Reduce, SumAndMeanOverAnyAxes) {
  std::mt19937 rng(31);
  const std::vector<std::vector<int>> axes_sets = {{}, {0}, {1}, {2}, {0, 2}, {-1, -2}, {0, 1, 2}};
  for (bool mean : {false, true})
    for (DType dt : ewk_test::float_dtypes())
      for (const auto& axes : axes_sets)
        for (bool keepdims : {false, true})
          for (Layout layout : kLayouts) {
            SCOPED_TRACE(std::string(mean ? "mean " : "sum ") + dtype_name(dt) + " axes " + std::to_string(axes.size()) +
                         (axes.empty() ? "" : " first " + std::to_string(axes[0])) + (keepdims ? " keepdims " : " ") +
                         ewk_test::layout_name(layout));
            const Tensor x = make_input({4, 5, 67}, dt, rng, layout, 0.0, 2.0);
            const ReduceAttrs attrs{.axes = axes, .keepdims = keepdims};
            const ref::RefTensor want = ref::reduce(ref::from_tensor(x), attrs, mean);
            const Tensor y = poisoned(want.shape, dt);
            cpu::reduce(x, attrs, mean, y, ctx());
            expect_close(y, want, dt, "reduce");
          }
  // Large: token pooling over axis 1 and a full-row reduction, both on the parallel path.
  const Tensor big = ref::random_tensor({64, 197, 48}, DType::F32, rng);
  for (const std::vector<int>& axes : {std::vector<int>{1}, std::vector<int>{2}}) {
    const ReduceAttrs attrs{.axes = axes};
    const ref::RefTensor want = ref::reduce(ref::from_tensor(big), attrs, true);
    const Tensor y = poisoned(want.shape, DType::F32);
    cpu::reduce(big, attrs, true, y, ctx());
    expect_close(y, want, DType::F32, "large mean");
  }
}

TEST(Reduce, IntegerSumsAndErrors) {
  const Tensor x = Tensor::from_vector(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor y = Tensor::zeros({3}, DType::I64);
  cpu::reduce(x, ReduceAttrs{.axes = {0}}, false, y, ctx());
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{5, 7, 9}));
  const Tensor y32 = Tensor::zeros({2, 1}, DType::I32);
  cpu::reduce(x.to(DType::I32), ReduceAttrs{.axes = {1}, .keepdims = true}, false, y32, ctx());
  EXPECT_EQ(y32.to_float_vector(), (std::vector<float>{6, 15}));
  ewk_test::expect_error([&] { cpu::reduce(x, ReduceAttrs{.axes = {0}}, true, y, ctx()); }, ErrorCode::unsupported,
                         "i64");
  const Tensor f = Tensor::zeros({2, 3}, DType::F32);
  ewk_test::expect_error(
      [&] { cpu::reduce(f, ReduceAttrs{.axes = {1, -1}}, false, Tensor::zeros({2}, DType::F32), ctx()); },
      ErrorCode::invalid_argument, "twice");
  ewk_test::expect_error([&] { cpu::reduce(f, ReduceAttrs{.axes = {1}}, false, Tensor::zeros({3}, DType::F32), ctx()); },
                         ErrorCode::invalid_argument, "[2]");
}

TEST(ArgMax, MatchesReferenceAlongEveryAxis) {
  std::mt19937 rng(32);
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::I8})
    for (int axis : {0, 1, 2, -1})
      for (bool keepdims : {false, true})
        for (Layout layout : {Layout::contiguous, Layout::strided}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + " axis " + std::to_string(axis) + (keepdims ? " keepdims" : ""));
          // Wide integer range keeps ties rare but present for the small dtypes.
          const Tensor x = make_input({5, 17, 67}, dt, rng, layout, -100.0, 100.0);
          const ref::RefTensor want = ref::argmax(ref::from_tensor(x), axis, keepdims);
          const Tensor y = poisoned(want.shape, DType::I64);
          cpu::argmax(x, ArgMaxAttrs{.axis = axis, .keepdims = keepdims}, y, ctx());
          expect_close(y, want, DType::F32, "argmax", 0.0);
        }
  const Tensor vocab = ref::random_tensor({8, 50257}, DType::F32, rng);
  const Tensor y = poisoned({8}, DType::I64);
  cpu::argmax(vocab, ArgMaxAttrs{}, y, ctx());
  expect_close(y, ref::argmax(ref::from_tensor(vocab), -1, false), DType::F32, "vocab argmax", 0.0);
}

TEST(ArgMax, TiesTakeTheLowestIndexAndNaNIsTheMaximum) {
  const float nan = std::nanf("");
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 3, 3, 2,        //
                                                          7, 7, 7, 7,        //
                                                          1, nan, 5, nan,    //
                                                          -1, -1, -0.5f, -0.5f},
                                       {4, 4});
  const Tensor y = poisoned({4}, DType::I64);
  cpu::argmax(x, ArgMaxAttrs{}, y, ctx());
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{1, 0, 1, 2}));
  const Tensor y0 = poisoned({1, 4}, DType::I64);
  cpu::argmax(x, ArgMaxAttrs{.axis = 0, .keepdims = true}, y0, ctx());
  EXPECT_EQ(y0.to_float_vector(), (std::vector<float>{1, 2, 1, 2}));
  ewk_test::expect_error(
      [&] { cpu::argmax(Tensor::zeros({2, 0}, DType::F32), ArgMaxAttrs{}, Tensor::zeros({2}, DType::I64), ctx()); },
      ErrorCode::invalid_argument, "empty");
}

TEST(TopK, MatchesReference) {
  std::mt19937 rng(33);
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I64})
    for (int axis : {0, 1, -1})
      for (int k : {1, 3, 5})
        for (Layout layout : {Layout::contiguous, Layout::strided}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + " axis " + std::to_string(axis) + " k " + std::to_string(k));
          const Tensor x = make_input({6, 9, 67}, dt, rng, layout, -50.0, 50.0);
          const auto [want_v, want_i] = ref::topk(ref::from_tensor(x), k, axis);
          const Tensor v = poisoned(want_v.shape, dt), i = poisoned(want_i.shape, DType::I64);
          cpu::topk(x, TopKAttrs{.k = k, .axis = axis}, v, i, ctx());
          expect_close(v, want_v, DType::F32, "values", 0.0);
          expect_close(i, want_i, DType::F32, "indices", 0.0);
        }
  // Beam search size: top-8 of a vocabulary, rows on threads.
  const Tensor logits = ref::random_tensor({16, 32000}, DType::F32, rng);
  const auto [want_v, want_i] = ref::topk(ref::from_tensor(logits), 8, -1);
  const Tensor v = poisoned(want_v.shape, DType::F32), i = poisoned(want_i.shape, DType::I64);
  cpu::topk(logits, TopKAttrs{.k = 8}, v, i, ctx());
  expect_close(v, want_v, DType::F32, "values", 0.0);
  expect_close(i, want_i, DType::F32, "indices", 0.0);
}

TEST(TopK, TiesLowerIndexFirstNaNOnTopAndBadK) {
  const float nan = std::nanf("");
  const Tensor x = Tensor::from_vector(std::vector<float>{2, 5, 5, 1, 5, 3}, {6});
  const Tensor v = poisoned({4}, DType::F32), i = poisoned({4}, DType::I64);
  cpu::topk(x, TopKAttrs{.k = 4}, v, i, ctx());
  EXPECT_EQ(v.to_float_vector(), (std::vector<float>{5, 5, 5, 3}));
  EXPECT_EQ(i.to_float_vector(), (std::vector<float>{1, 2, 4, 5}));
  const Tensor xn = Tensor::from_vector(std::vector<float>{1, nan, 3}, {3});
  const Tensor vn = poisoned({2}, DType::F32), in = poisoned({2}, DType::I32);
  cpu::topk(xn, TopKAttrs{.k = 2}, vn, in, ctx());
  EXPECT_TRUE(std::isnan(vn.get(0)));
  EXPECT_EQ(vn.get(1), 3.0);
  EXPECT_EQ(in.to_float_vector(), (std::vector<float>{1, 2}));
  ewk_test::expect_error(
      [&] { cpu::topk(x, TopKAttrs{.k = 7}, Tensor::zeros({7}, DType::F32), Tensor::zeros({7}, DType::I64), ctx()); },
      ErrorCode::invalid_argument, "k = 7");
}

// int64 values beyond 2^53 differ although their doubles are equal: compared as integers.
TEST(ArgMaxTopK, LargeInt64ValuesCompareExactly) {
  const std::int64_t big = std::int64_t{1} << 53;
  const Tensor x = Tensor::from_vector(std::vector<std::int64_t>{big, big + 1, big - 1}, {3});
  const Tensor am = poisoned({}, DType::I64);
  cpu::argmax(x, ArgMaxAttrs{}, am, ctx());
  EXPECT_EQ(am.data_ptr<std::int64_t>()[0], 1);
  const Tensor v = poisoned({2}, DType::I64), i = poisoned({2}, DType::I64);
  cpu::topk(x, TopKAttrs{.k = 2}, v, i, ctx());
  EXPECT_EQ(v.data_ptr<std::int64_t>()[0], big + 1);
  EXPECT_EQ(v.data_ptr<std::int64_t>()[1], big);
  EXPECT_EQ(i.data_ptr<std::int64_t>()[0], 1);
  EXPECT_EQ(i.data_ptr<std::int64_t>()[1], 0);
}

TEST(CumSum, FloatsAlongEveryAxis) {
  std::mt19937 rng(34);
  for (DType dt : ewk_test::float_dtypes())
    for (int axis : {0, 1, 2, -1})
      for (Layout layout : kLayouts) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " axis " + std::to_string(axis) + " " + ewk_test::layout_name(layout));
        const Tensor x = make_input({5, 7, 67}, dt, rng, layout, 0.0, 1.0);
        const Tensor y = poisoned(x.shape(), dt);
        cpu::cumsum(x, CumSumAttrs{.axis = axis}, y, ctx());
        expect_close(y, ref::cumsum(ref::from_tensor(x), axis), dt, "cumsum");
      }
  const Tensor big = ref::random_tensor({300, 1000}, DType::F32, rng);
  const Tensor y = poisoned(big.shape(), DType::F32);
  cpu::cumsum(big, CumSumAttrs{}, y, ctx());
  expect_close(y, ref::cumsum(ref::from_tensor(big), -1), DType::F32, "large");
}

TEST(CumSum, IntegerAndBoolInputs) {
  // Position ids from an attention mask: mask.cumsum(-1).
  const Tensor mask = Tensor::from_vector(std::vector<float>{1, 1, 0, 1, 0, 1, 1, 1}, {2, 4}).to(DType::Bool);
  const Tensor y = poisoned({2, 4}, DType::I64);
  cpu::cumsum(mask, CumSumAttrs{}, y, ctx());
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{1, 2, 2, 3, 0, 1, 2, 3}));
  const Tensor xi = Tensor::from_vector(std::vector<std::int32_t>{5, -2, 7, 1, 1, 1}, {2, 3});
  const Tensor yi = poisoned({2, 3}, DType::I32);
  cpu::cumsum(xi, CumSumAttrs{.axis = 0}, yi, ctx());
  EXPECT_EQ(yi.to_float_vector(), (std::vector<float>{5, -2, 7, 6, -1, 8}));
  ewk_test::expect_error([&] { cpu::cumsum(xi, CumSumAttrs{}, Tensor::zeros({2, 3}, DType::F32), ctx()); },
                         ErrorCode::unsupported, "cumsum");
}

}  // namespace
}  // namespace encore
