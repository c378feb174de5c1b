#include <gtest/gtest.h>

#include <numeric>

#include "encore/core/tensor.h"

using namespace encore;

namespace {
// A [2, 3, 4] f32 tensor whose element (i, j, k) holds 100 i + 10 j + k.
Tensor make_iota() {
  Tensor t = Tensor::empty({2, 3, 4}, DType::F32);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) t.at<float>({i, j, k}) = static_cast<float>(100 * i + 10 * j + k);
  return t;
}

template <typename Fn>
void expect_error(Fn&& fn, ErrorCode code, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << substring << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(TensorViews, EmptyIsContiguousAndSized) {
  Tensor t = Tensor::empty({3, 5}, DType::BF16);
  EXPECT_TRUE(t.defined());
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides(), (Shape{5, 1}));
  EXPECT_EQ(t.nbytes(), 30u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % kDefaultAlignment, 0u);
  EXPECT_FALSE(Tensor().defined());
}

TEST(TensorViews, SliceSharesStorage) {
  Tensor t = make_iota();
  Tensor s = t.slice(2, 1, 4, 2);  // k = 1, 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(s.storage(), t.storage());
  EXPECT_EQ(s.at<float>({1, 2, 1}), 123.0f);
  s.at<float>({0, 0, 0}) = -1.0f;  // writes through to the base
  EXPECT_EQ(t.at<float>({0, 0, 1}), -1.0f);
  EXPECT_EQ(t.slice(1, -2, 100).shape(), (Shape{2, 2, 4}));  // Python-like clamping
  EXPECT_EQ(t.slice(1, 2, 1).numel(), 0);
  expect_error([&] { t.slice(1, 0, 2, 0); }, ErrorCode::invalid_argument, "step 0");
  expect_error([&] { t.slice(3, 0, 1); }, ErrorCode::invalid_argument, "out of range");
}

TEST(TensorViews, SelectRemovesDimension) {
  Tensor t = make_iota();
  Tensor s = t.select(1, -1);
  EXPECT_EQ(s.shape(), (Shape{2, 4}));
  EXPECT_EQ(s.at<float>({1, 3}), 123.0f);
  expect_error([&] { t.select(1, 3); }, ErrorCode::invalid_argument, "index 3");
}

TEST(TensorViews, PermuteTransposeAndContiguous) {
  Tensor t = make_iota();
  Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) ASSERT_EQ(p.at<float>({k, i, j}), 100 * i + 10 * j + k);
  Tensor c = p.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), t.storage());
  for (std::int64_t f = 0; f < c.numel(); ++f) ASSERT_EQ(c.get(f), p.get(f));
  Tensor tr = t.transpose(0, 2);
  EXPECT_EQ(tr.at<float>({3, 1, 0}), 13.0f);
  expect_error([&] { t.permute({0, 0, 1}); }, ErrorCode::invalid_argument, "repeats");
  expect_error([&] { t.permute({0, 1}); }, ErrorCode::invalid_argument, "2 entries");
}

TEST(TensorViews, ViewAndReshape) {
  Tensor t = make_iota();
  Tensor v = t.view({6, -1});
  EXPECT_EQ(v.shape(), (Shape{6, 4}));
  EXPECT_EQ(v.storage(), t.storage());
  EXPECT_EQ(v.at<float>({5, 3}), 123.0f);
  // A transposed tensor cannot be flattened without a copy; reshape copies, view refuses.
  Tensor tr = t.transpose(1, 2);
  expect_error([&] { tr.view({2, 12}); }, ErrorCode::invalid_argument, "without a copy");
  Tensor r = tr.reshape({2, 12});
  EXPECT_NE(r.storage(), t.storage());
  EXPECT_EQ(r.at<float>({0, 1}), 10.0f);
  // Splitting a dimension of a strided view is still a view.
  Tensor s = t.slice(0, 1, 2).view({3, 2, 2});
  EXPECT_EQ(s.storage(), t.storage());
  EXPECT_EQ(s.at<float>({2, 1, 1}), 123.0f);
  expect_error([&] { t.view({5, -1}); }, ErrorCode::invalid_argument, "cannot reshape");
  expect_error([&] { t.view({-1, -1}); }, ErrorCode::invalid_argument, "more than one -1");
  Tensor scalar = Tensor::empty({}, DType::F32);
  EXPECT_EQ(scalar.view({1, 1}).shape(), (Shape{1, 1}));
}

TEST(TensorViews, SqueezeUnsqueezeExpand) {
  Tensor t = make_iota().slice(1, 1, 2);  // [2, 1, 4]
  Tensor s = t.squeeze(1);
  EXPECT_EQ(s.shape(), (Shape{2, 4}));
  EXPECT_EQ(s.at<float>({1, 2}), 112.0f);
  Tensor u = s.unsqueeze(0);
  EXPECT_EQ(u.shape(), (Shape{1, 2, 4}));
  EXPECT_EQ(s.unsqueeze(-1).shape(), (Shape{2, 4, 1}));
  Tensor e = t.expand({3, 2, 5, 4});
  EXPECT_EQ(e.strides()[0], 0);
  EXPECT_EQ(e.strides()[2], 0);
  EXPECT_EQ(e.storage(), t.storage());
  EXPECT_EQ(e.at<float>({2, 1, 4, 3}), 113.0f);
  EXPECT_EQ(t.expand({-1, 7, -1}).shape(), (Shape{2, 7, 4}));
  Tensor ec = e.contiguous();
  EXPECT_EQ(ec.numel(), 120);
  EXPECT_EQ(ec.at<float>({1, 0, 3, 2}), 12.0f);
  expect_error([&] { t.squeeze(0); }, ErrorCode::invalid_argument, "extent is 2");
  expect_error([&] { t.expand({3, 4}); }, ErrorCode::invalid_argument, "fewer dimensions");
  expect_error([&] { t.expand({3, 1, 4}); }, ErrorCode::invalid_argument, "neither");
}

TEST(TensorViews, ElementAccessIsChecked) {
  Tensor t = make_iota();
  expect_error([&] { t.at<float>({2, 0, 0}); }, ErrorCode::invalid_argument, "out of bounds");
  expect_error([&] { t.at<float>({0, 0}); }, ErrorCode::invalid_argument, "2 entries");
  expect_error([&] { t.at<std::int32_t>({0, 0, 0}); }, ErrorCode::invalid_argument, "accessed as i32");
  expect_error([&] { t.data_ptr<Half>(); }, ErrorCode::invalid_argument, "accessed as f16");
  expect_error([&] { Tensor().data(); }, ErrorCode::invalid_argument, "undefined");
}

TEST(TensorViews, FromStorageChecksBoundsAndAlignment) {
  auto storage = Storage::allocate(64, Device::cpu());
  EXPECT_NO_THROW(Tensor::from_storage(storage, 0, {4, 4}, {4, 1}, DType::F32));
  expect_error([&] { Tensor::from_storage(storage, 4, {4, 4}, {4, 1}, DType::F32); }, ErrorCode::invalid_argument,
               "storage holds 64");
  expect_error([&] { Tensor::from_storage(storage, 2, {2}, {1}, DType::F32); }, ErrorCode::invalid_argument,
               "not aligned");
  expect_error([&] { Tensor::from_storage(storage, 0, {2, 2}, {1 << 30, 1}, DType::F32); },
               ErrorCode::invalid_argument, "storage holds");
  expect_error([&] { Tensor::from_storage(storage, 0, {2, 2}, {-1, 1}, DType::F32); }, ErrorCode::invalid_argument,
               "negative stride");
  expect_error([&] { Tensor::from_storage(storage, 0, {3, 3}, {INT64_MAX / 2, 1}, DType::F32); },
               ErrorCode::invalid_argument, "overflows");
  expect_error([&] { Tensor::empty({1ll << 62, 4}, DType::F32); }, ErrorCode::invalid_argument, "64-bit count");
  expect_error([&] { Tensor::empty({1ll << 61, 2}, DType::F32); }, ErrorCode::invalid_argument,
               "too large to address");
}

TEST(TensorViews, FromBlobBorrowsAndKeepsOwnerAlive) {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4, 5, 6});
  Tensor t = Tensor::from_blob(owner->data(), {2, 3}, DType::F32, owner);
  std::weak_ptr<std::vector<float>> weak = owner;
  owner.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(t.at<float>({1, 2}), 6.0f);
  EXPECT_FALSE(t.storage()->owns_memory());
  t = Tensor();
  EXPECT_TRUE(weak.expired());
}
