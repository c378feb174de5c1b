#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "encore/core/tensor.h"
#include "encore/core/threads.h"

using namespace encore;

TEST(TensorCopy, FloatConversionsRoundTrip) {
  std::vector<float> values{0.0f, -1.5f, 3.140625f, 65504.0f, 1e-3f, -2.0f};
  Tensor f = Tensor::from_vector(values, {2, 3});
  Tensor h = f.to(DType::F16);
  Tensor b = f.to(DType::BF16);
  Tensor back_h = h.to(DType::F32);
  Tensor back_b = b.to(DType::F32);
  for (std::int64_t i = 0; i < f.numel(); ++i) {
    const float v = values[static_cast<std::size_t>(i)];
    EXPECT_EQ(back_h.get(i), half_to_float(float_to_half(v)));
    EXPECT_EQ(back_b.get(i), bfloat16_to_float(float_to_bfloat16(v)));
  }
  EXPECT_EQ(back_h.get(2), 3.140625);  // exactly representable in f16
}

TEST(TensorCopy, IntegerConversionsSaturateAndTruncate) {
  Tensor f = Tensor::from_vector(std::vector<float>{-300.7f, -1.9f, 0.5f, 1.9f, 300.0f, NAN}, {6});
  Tensor i8 = f.to(DType::I8);
  EXPECT_EQ(i8.at<std::int8_t>({0}), -128);
  EXPECT_EQ(i8.at<std::int8_t>({1}), -1);
  EXPECT_EQ(i8.at<std::int8_t>({2}), 0);
  EXPECT_EQ(i8.at<std::int8_t>({3}), 1);
  EXPECT_EQ(i8.at<std::int8_t>({4}), 127);
  EXPECT_EQ(i8.at<std::int8_t>({5}), 0);
  Tensor u8 = f.to(DType::U8);
  EXPECT_EQ(u8.at<std::uint8_t>({0}), 0);
  EXPECT_EQ(u8.at<std::uint8_t>({4}), 255);
  // Large int64 values survive an i64 -> i64 -> i32 path exactly (no detour through double).
  const std::int64_t big = (1ll << 60) + 1;
  Tensor i64 = Tensor::from_vector(std::vector<std::int64_t>{big, -5}, {2});
  EXPECT_EQ(i64.clone().at<std::int64_t>({0}), big);
  Tensor i32 = i64.to(DType::I32);
  EXPECT_EQ(i32.at<std::int32_t>({0}), std::numeric_limits<std::int32_t>::max());
  EXPECT_EQ(i32.at<std::int32_t>({1}), -5);
  Tensor bl = Tensor::from_vector(std::vector<float>{0.0f, -0.0f, 2.0f}, {3}).to(DType::Bool);
  EXPECT_EQ(bl.get(0), 0.0);
  EXPECT_EQ(bl.get(1), 0.0);
  EXPECT_EQ(bl.get(2), 1.0);
}

TEST(TensorCopy, StridedCopyFromAndFill) {
  Tensor src = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor dst = Tensor::zeros({3, 2}, DType::F32);
  dst.copy_from(src.transpose(0, 1));
  EXPECT_EQ(dst.to_float_vector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  Tensor col = dst.slice(1, 1, 2);
  col.fill(-7);
  EXPECT_EQ(dst.to_float_vector(), (std::vector<float>{1, -7, 2, -7, 3, -7}));
  // Copy into a strided destination with a dtype change.
  Tensor half_dst = Tensor::zeros({3, 4}, DType::F16);
  half_dst.slice(1, 0, 4, 2).copy_from(dst);
  EXPECT_EQ(half_dst.to(DType::F32).to_float_vector(),
            (std::vector<float>{1, 0, -7, 0, 2, 0, -7, 0, 3, 0, -7, 0}));
  EXPECT_THROW(dst.copy_from(src), Error);  // [2,3] into [3,2]
}

// Views of one buffer that overlap: the source is read whole before anything is written, as if
// it had been cloned (a transpose in place, shifts both ways).
TEST(TensorCopy, OverlappingViewsReadTheSourceFirst) {
  const std::vector<float> nine{1, 2, 3, 4, 5, 6, 7, 8, 9};
  Tensor square = Tensor::from_vector(nine, {3, 3});
  square.copy_from(square.transpose(0, 1));
  EXPECT_EQ(square.to_float_vector(), (std::vector<float>{1, 4, 7, 2, 5, 8, 3, 6, 9}));

  Tensor row = Tensor::from_vector(nine, {9});
  row.slice(0, 1, 9).copy_from(row.slice(0, 0, 8));  // contiguous, shifted right
  EXPECT_EQ(row.to_float_vector(), (std::vector<float>{1, 1, 2, 3, 4, 5, 6, 7, 8}));
  Tensor strided = Tensor::from_vector(nine, {9});
  strided.slice(0, 2, 9, 2).copy_from(strided.slice(0, 0, 7, 2));  // strided, shifted right
  EXPECT_EQ(strided.to_float_vector(), (std::vector<float>{1, 2, 1, 4, 3, 6, 5, 8, 7}));
  Tensor left = Tensor::from_vector(nine, {9});
  left.slice(0, 0, 7, 2).copy_from(left.slice(0, 2, 9, 2));  // strided, shifted left
  EXPECT_EQ(left.to_float_vector(), (std::vector<float>{3, 2, 5, 4, 7, 6, 9, 8, 9}));

  std::vector<float> buffer = nine;  // two tensors borrowed over one buffer: two storages, one memory
  Tensor a = Tensor::from_blob(buffer.data(), {3, 3}, DType::F32), b = Tensor::from_blob(buffer.data(), {3, 3}, DType::F32);
  a.copy_from(b.transpose(0, 1));
  EXPECT_EQ(a.to_float_vector(), (std::vector<float>{1, 4, 7, 2, 5, 8, 3, 6, 9}));

  Tensor self = Tensor::from_vector(nine, {3, 3});
  self.copy_from(self);  // the same view: unchanged
  EXPECT_EQ(self.to_float_vector(), nine);
}

TEST(TensorCopy, ToDeviceWithoutAUsableGpuIsAClearError) {
  // Without a CUDA backend the allocator lookup fails (unsupported); with one but no GPU the
  // backend reports the missing device (backend). Either way: an Error, never a crash.
  Tensor t = Tensor::zeros({2}, DType::F32);
  try {
    Tensor d = t.to(Device::cuda(0));
    EXPECT_EQ(d.device(), Device::cuda(0));  // a GPU is present: the copy worked
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == ErrorCode::unsupported || e.code() == ErrorCode::backend) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
}

// Thread settings are process-wide: a thread started after set_num_threads sees the count.
TEST(Threads, DefaultCountIsProcessWideAndBounded) {
  const int before = num_threads();
  set_num_threads(3);
  int seen = 0;
  std::thread([&] { seen = num_threads(); }).join();
  EXPECT_EQ(seen, 3);
  EXPECT_THROW(set_num_threads(0), Error);
  EXPECT_THROW(set_num_threads(max_thread_count() + 1), Error);
  set_num_threads(before);
}
