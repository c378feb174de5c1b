// Data-movement kernels: copy, concat, pad, gather, scatter_add, embedding.
#include <gtest/gtest.h>

#include <cmath>
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

/// Exact comparison with a reference (data movement must not change a bit of the values).
void expect_exact(const Tensor& out, const ref::RefTensor& want, const std::string& what) {
  ASSERT_EQ(out.shape(), want.shape) << what;
  const ref::RefTensor got = ref::from_tensor(out);
  std::int64_t bad = 0, first = -1;
  for (std::size_t i = 0; i < got.data.size(); ++i)
    if (got.data[i] != want.data[i] && !(std::isnan(got.data[i]) && std::isnan(want.data[i]))) {
      if (first < 0) first = static_cast<std::int64_t>(i);
      ++bad;
    }
  EXPECT_EQ(bad, 0) << what << ": first mismatch at " << first;
}

/// Random values of any dtype (integers in [-100, 100), bools 0/1).
Tensor random_any(const Shape& shape, DType dt, std::mt19937& rng, Layout layout = Layout::contiguous) {
  if (dt == DType::Bool) return make_input(shape, DType::F32, rng, layout, 0.0, 2.0).to(DType::I32).to(DType::Bool);
  if (dt == DType::U8) return make_input(shape, dt, rng, layout, 0.0, 200.0);
  return make_input(shape, dt, rng, layout, -100.0, 100.0);
}

TEST(Copy, AnyViewOfAnyDtype) {
  std::mt19937 rng(21);
  for (DType dt : ewk_test::all_dtypes()) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor base = random_any({6, 5, 67}, dt, rng);
    const std::vector<Tensor> views = {
        base,
        base.permute({2, 0, 1}),
        base.slice(2, 3, 60, 4),
        base.transpose(0, 1).slice(0, 1, 4),
        random_any({257}, dt, rng).unsqueeze(0).expand({9, 257}),
        random_any({300, 257}, dt, rng, Layout::strided),  // large: parallel path
        base.select(1, 2),
        Tensor(base.select(0, 1).select(0, 1).select(0, 7)),  // rank 0
    };
    for (const Tensor& x : views) {
      const Tensor y = poisoned(x.shape(), dt);
      cpu::copy(x, y, ctx());
      ewk_test::expect_equal(y, x.contiguous(), "copy " + x.shape().str());
    }
  }
}

TEST(Copy, IntoAStridedDestinationLeavesTheRestAlone) {
  std::mt19937 rng(22);
  const Tensor big = Tensor::zeros({4, 10}, DType::F32);
  const Tensor x = ref::random_tensor({4, 3}, DType::F32, rng);
  cpu::copy(x, big.slice(1, 5, 8), ctx());
  for (std::int64_t r = 0; r < 4; ++r)
    for (std::int64_t c = 0; c < 10; ++c)
      EXPECT_EQ(big.at<float>({r, c}), c >= 5 && c < 8 ? x.at<float>({r, c - 5}) : 0.0f);
  ewk_test::expect_error([&] { cpu::copy(x, Tensor::zeros({4, 3}, DType::BF16), ctx()); }, ErrorCode::invalid_argument,
                         "cast");
}

TEST(Concat, AnyAxisAnyDtype) {
  std::mt19937 rng(23);
  for (DType dt : ewk_test::all_dtypes())
    for (int axis : {0, 1, 2, -1}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " axis " + std::to_string(axis));
      const int ax = axis < 0 ? axis + 3 : axis;
      std::vector<Tensor> xs;
      std::vector<ref::RefTensor> rs;
      for (std::int64_t n : {3, 1, 17, 0, 5}) {
        Shape s{4, 6, 9};
        s[ax] = n;
        xs.push_back(random_any(s, dt, rng, n % 2 ? Layout::strided : Layout::contiguous));
        rs.push_back(ref::from_tensor(xs.back()));
      }
      const ref::RefTensor want = ref::concat(rs, axis);
      const Tensor y = poisoned(want.shape, dt);
      cpu::concat(xs, axis, y, ctx());
      expect_exact(y, want, "concat");
    }
  const std::vector<Tensor> bad = {Tensor::zeros({2, 3}, DType::F32), Tensor::zeros({3, 3}, DType::F32)};
  ewk_test::expect_error([&] { cpu::concat(bad, 1, Tensor::zeros({2, 6}, DType::F32), ctx()); },
                         ErrorCode::invalid_argument, "concat");
}

TEST(Pad, ConstantPaddingAndCropping) {
  std::mt19937 rng(24);
  const std::vector<std::vector<std::int64_t>> pad_sets = {
      {}, {1, 2}, {0, 0, 3, 0}, {2, 1, 0, 3, 1, 1}, {-1, 0, 2, -2}, {0, 0, 0, 0, 5, 7}};
  for (DType dt : ewk_test::all_dtypes())
    for (const auto& pads : pad_sets)
      for (Layout layout : {Layout::contiguous, Layout::strided}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " pads " + std::to_string(pads.size()));
        const Tensor x = random_any({4, 5, 7}, dt, rng, layout);
        const PadAttrs attrs{.pads = pads, .value = dt == DType::Bool ? 1.0f : dt == DType::U8 ? 3.0f : -3.0f};
        const ref::RefTensor want = ref::pad(ref::from_tensor(x), attrs);
        const Tensor y = poisoned(want.shape, dt);
        cpu::pad(x, attrs, y, ctx());
        expect_exact(y, want, "pad");
      }
  ewk_test::expect_error(
      [&] { cpu::pad(Tensor::zeros({2, 3}, DType::F32), PadAttrs{.pads = {1, 1}}, Tensor::zeros({2, 3}, DType::F32), ctx()); },
      ErrorCode::invalid_argument, "[4, 3]");
}

TEST(Gather, IndexSelectAlongEveryAxis) {
  std::mt19937 rng(25);
  for (DType dt : ewk_test::all_dtypes())
    for (int axis : {0, 1, 2, -1})
      for (DType it : {DType::I32, DType::I64}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " axis " + std::to_string(axis) + " " + dtype_name(it));
        const Tensor x = random_any({5, 6, 7}, dt, rng, Layout::strided);
        const int ax = axis < 0 ? axis + 3 : axis;
        const std::int64_t n = x.shape()[ax];
        const std::vector<std::int64_t> idx = {n - 1, 0, 2, 2, n - 1, 1, 0};
        const Tensor index = Tensor::from_vector(idx, {7}).to(it);
        const ref::RefTensor want = ref::gather(ref::from_tensor(x), idx, axis);
        const Tensor y = poisoned(want.shape, dt);
        cpu::gather(x, index, GatherAttrs{.axis = axis}, y, ctx());
        expect_exact(y, want, "gather");
      }
  // Beam reorder of a large cache: few slices, each split across threads.
  const Tensor cache = ref::random_tensor({4, 12, 40, 64}, DType::F32, rng);
  const std::vector<std::int64_t> beams = {2, 2, 0, 3};
  const Tensor y = poisoned(cache.shape(), DType::F32);
  cpu::gather(cache, Tensor::from_vector(beams, {4}), GatherAttrs{.axis = 0}, y, ctx());
  expect_exact(y, ref::gather(ref::from_tensor(cache), beams, 0), "beam reorder");
}

TEST(Gather, OutOfRangeIndexIsAnError) {
  const Tensor x = Tensor::zeros({3, 4}, DType::F32);
  const Tensor index = Tensor::from_vector(std::vector<std::int32_t>{0, 1, 4}, {3});
  ewk_test::expect_error([&] { cpu::gather(x, index, GatherAttrs{.axis = 1}, Tensor::zeros({3, 3}, DType::F32), ctx()); },
                         ErrorCode::invalid_argument, "index 4 at position 2");
  const Tensor neg = Tensor::from_vector(std::vector<std::int64_t>{-1}, {1});
  ewk_test::expect_error([&] { cpu::gather(x, neg, GatherAttrs{.axis = 0}, Tensor::zeros({1, 4}, DType::F32), ctx()); },
                         ErrorCode::invalid_argument, "index -1");
  const Tensor fidx = Tensor::zeros({1}, DType::F32);
  ewk_test::expect_error([&] { cpu::gather(x, fidx, GatherAttrs{.axis = 0}, Tensor::zeros({1, 4}, DType::F32), ctx()); },
                         ErrorCode::unsupported, "f32");
}

TEST(ScatterAdd, IndexAddWithDuplicates) {
  std::mt19937 rng(26);
  ewk_test::both_paths([&] {
    for (DType dt : ewk_test::float_dtypes())
      for (int axis : {0, 1, -1})
        for (Layout layout : {Layout::contiguous, Layout::strided}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + " axis " + std::to_string(axis) + " " +
                       ewk_test::layout_name(layout));
          const Tensor x = make_input({6, 5, 9}, dt, rng, layout);
          const int ax = axis < 0 ? axis + 3 : axis;
          const std::int64_t n = x.shape()[ax];
          const std::vector<std::int64_t> idx = {1, n - 1, 1, 0, 1, n - 2, 1, 3};
          Shape ss = x.shape();
          ss[ax] = static_cast<std::int64_t>(idx.size());
          const Tensor src = make_input(ss, dt, rng, layout);
          const ref::RefTensor want = ref::scatter_add(ref::from_tensor(x), idx, ref::from_tensor(src), axis);
          const Tensor y = poisoned(x.shape(), dt);
          cpu::scatter_add(x, Tensor::from_vector(idx, {8}), src, ScatterAddAttrs{.axis = axis}, y, ctx());
          expect_close(y, want, dt, "scatter_add");
        }
    // MoE combine size: [tokens, hidden] += expert outputs, parallel path.
    const Tensor x = ref::random_tensor({256, 512}, DType::F32, rng);
    std::vector<std::int64_t> idx;
    for (int i = 0; i < 384; ++i) idx.push_back((i * 37) % 256);
    const Tensor src = ref::random_tensor({384, 512}, DType::F32, rng);
    const Tensor y = poisoned(x.shape(), DType::F32);
    cpu::scatter_add(x, Tensor::from_vector(idx, {384}), src, ScatterAddAttrs{}, y, ctx());
    expect_close(y, ref::scatter_add(ref::from_tensor(x), idx, ref::from_tensor(src), 0), DType::F32, "large");
  });
  ewk_test::expect_error(
      [&] {
        cpu::scatter_add(Tensor::zeros({3, 2}, DType::F32), Tensor::from_vector(std::vector<std::int64_t>{3}, {1}),
                         Tensor::zeros({1, 2}, DType::F32), ScatterAddAttrs{}, Tensor::zeros({3, 2}, DType::F32), ctx());
      },
      ErrorCode::invalid_argument, "index 3 at position 0");
  ewk_test::expect_error(
      [&] {
        cpu::scatter_add(Tensor::zeros({3, 2}, DType::I32), Tensor::from_vector(std::vector<std::int64_t>{0}, {1}),
                         Tensor::zeros({1, 2}, DType::I32), ScatterAddAttrs{}, Tensor::zeros({3, 2}, DType::I32), ctx());
      },
      ErrorCode::unsupported, "i32");
}

TEST(Embedding, LooksUpRowsOfAnyDtype) {
  std::mt19937 rng(27);
  for (DType dt : ewk_test::all_dtypes())
    for (DType it : {DType::I32, DType::I64}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " ids " + dtype_name(it));
      const Tensor wide = random_any({50, 70}, dt, rng);
      for (const Tensor& table : {wide.slice(1, 0, 67), wide.slice(1, 3, 20, 2)}) {
        std::vector<std::int64_t> idv;
        for (int i = 0; i < 26; ++i) idv.push_back((i * 7 + 3) % 50);
        const Tensor ids_all = Tensor::from_vector(idv, {2, 13}).to(it);
        for (const Tensor& ids : {ids_all, ids_all.slice(1, 1, 13, 3), ids_all.select(0, 1).select(0, 4)}) {
          const ref::RefTensor want = ref::embedding(ref::from_tensor(table), ref::from_tensor(ids));
          const Tensor y = poisoned(want.shape, dt);
          cpu::embedding(table, ids, y, ctx());
          expect_exact(y, want, "embedding " + ids.shape().str());
        }
      }
    }
  // bf16 table read into an f32 output; large enough for the parallel path.
  const Tensor table = ref::random_tensor({1000, 768}, DType::BF16, rng);
  std::vector<std::int64_t> idv;
  for (int i = 0; i < 197; ++i) idv.push_back((i * 131) % 1000);
  const Tensor ids = Tensor::from_vector(idv, {1, 197});
  const Tensor y = poisoned({1, 197, 768}, DType::F32);
  cpu::embedding(table, ids, y, ctx());
  expect_exact(y, ref::embedding(ref::from_tensor(table), ref::from_tensor(ids)), "bf16 -> f32");
}

TEST(Embedding, OutOfRangeIdNamesIdPositionAndVocabulary) {
  const Tensor table = Tensor::zeros({10, 4}, DType::F32);
  const Tensor ids = Tensor::from_vector(std::vector<std::int64_t>{1, 2, 9, 50, 3, 4}, {2, 3});
  const Tensor y = poisoned({2, 3, 4}, DType::F32);
  ewk_test::expect_error([&] { cpu::embedding(table, ids, y, ctx()); }, ErrorCode::invalid_argument,
                         "id 50 at position 3 (index [1, 0]) is out of range for a vocabulary of 10");
  EXPECT_TRUE(std::isnan(y.get(0))) << "nothing is written before the ids are validated";
  const Tensor neg = Tensor::from_vector(std::vector<std::int32_t>{-1}, {1});
  ewk_test::expect_error([&] { cpu::embedding(table, neg, Tensor::zeros({1, 4}, DType::F32), ctx()); },
                         ErrorCode::invalid_argument, "id -1 at position 0");
  ewk_test::expect_error(
      [&] { cpu::embedding(table, Tensor::zeros({2}, DType::F32), Tensor::zeros({2, 4}, DType::F32), ctx()); },
      ErrorCode::unsupported, "f32");
  ewk_test::expect_error(
      [&] { cpu::embedding(table, ids.to(DType::I32), Tensor::zeros({2, 3, 5}, DType::F32), ctx()); },
      ErrorCode::invalid_argument, "[2, 3, 4]");
}

}  // namespace
}  // namespace encore
