// CUDA data-movement, reduction and resampling kernels against the CPU kernels on the same inputs:
// copy, concat, pad, gather, scatter_add, embedding (with the out-of-range id error), reduce,
// argmax, topk, cumsum, resize. Strided views, every dtype the op takes, poisoned outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cuda/cuda_test_util.h"

using namespace encore;
using namespace encore::cuda::test;

namespace {

const cpu::CpuContext kCpu{2};
constexpr DType kFloats[] = {DType::F32, DType::F16, DType::BF16};
constexpr DType kAll[] = {DType::F32, DType::F16, DType::BF16, DType::I8, DType::U8, DType::I32, DType::I64};

Pair make(const Shape& s, DType dt, std::mt19937& rng, bool strided, double lo = -1.0, double hi = 1.0) {
  return strided ? random_strided_pair(s, dt, rng, lo, hi) : random_pair(s, dt, rng, lo, hi);
}

/// A 1-D index tensor (host, device).
Pair indices(const std::vector<std::int64_t>& v, DType dt) {
  Tensor h = Tensor::from_vector<std::int64_t>(v, {static_cast<std::int64_t>(v.size())});
  if (dt != DType::I64) h = h.to(dt);
  return {h, upload(h)};
}

/// Expects fn to throw Error(invalid_argument) whose message contains `needle`.
template <typename Fn>
void expect_invalid(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(CudaData, CopyAnyDtype) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(21);
  for (DType dt : kAll) {
    const Pair x = make({5, 7, 33}, dt, rng, true, -100.0, 100.0);
    for (const Tensor& v : {x.host, x.host.permute({2, 0, 1}), x.host.expand({2, 5, 7, 33}).slice(3, 1, 30, 2)}) {
      const Tensor dv = upload_view(v);
      Tensor want = Tensor::empty(v.shape(), dt);
      cpu::copy(v, want, kCpu);
      Tensor y = poisoned(v.shape(), dt);
      cuda::copy(dv, y, context());
      EXPECT_TRUE(close_to(y, want, 0.0)) << dtype_name(dt) << " " << v.shape().str();
    }
  }
}

TEST(CudaData, Concat) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(22);
  for (DType dt : {DType::F32, DType::BF16, DType::I64})
    for (int axis : {0, 1, -1}) {
      std::vector<Tensor> hs, ds;
      Shape out{4, 6, 9};
      const int a = axis < 0 ? 2 : axis;
      out[a] = 0;
      for (std::int64_t n : {3, 1, 5}) {
        Shape s{4, 6, 9};
        s[a] = n;
        const Pair p = make(s, dt, rng, n != 1, -50.0, 50.0);
        hs.push_back(p.host);
        ds.push_back(p.device);
        out[a] += n;
      }
      Tensor want = Tensor::empty(out, dt);
      cpu::concat(hs, axis, want, kCpu);
      Tensor y = poisoned(out, dt);
      cuda::concat(ds, axis, y, context());
      EXPECT_TRUE(close_to(y, want, 0.0)) << dtype_name(dt) << " axis " << axis;
    }
}

TEST(CudaData, Pad) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(23);
  const std::vector<std::vector<std::int64_t>> pads = {{1, 2}, {0, 0, 3, 1, 2, 0}, {-1, 2, 1, -2}, {0, 0, 0, 0, -2, -3}};
  for (DType dt : {DType::F32, DType::F16, DType::I32, DType::U8})
    for (const auto& pv : pads)
      for (bool strided : {false, true}) {
        const Pair x = make({5, 6, 7}, dt, rng, strided, -20.0, 20.0);
        const PadAttrs attrs{.pads = pv, .value = -7.5f};
        Shape out = x.host.shape();
        for (std::size_t i = 0; i < pv.size() / 2; ++i) out[static_cast<int>(i)] += pv[2 * i] + pv[2 * i + 1];
        Tensor want = Tensor::empty(out, dt);
        cpu::pad(x.host, attrs, want, kCpu);
        Tensor y = poisoned(out, dt);
        cuda::pad(x.device, attrs, y, context());
        EXPECT_TRUE(close_to(y, want, 0.0)) << dtype_name(dt) << " pads " << pv.size() << (strided ? " strided" : "");
      }
}

TEST(CudaData, Gather) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(24);
  for (DType dt : {DType::F32, DType::BF16, DType::I64})
    for (DType it : {DType::I32, DType::I64})
      for (int axis : {0, 1, 2}) {
        const Pair x = make({6, 5, 9}, dt, rng, true, -9.0, 9.0);
        const std::int64_t n = x.host.shape()[axis];
        const Pair idx = indices({n - 1, 0, 2, 2, n - 1, 1, 0}, it);
        Shape out = x.host.shape();
        out[axis] = 7;
        Tensor want = Tensor::empty(out, dt);
        cpu::gather(x.host, idx.host, {.axis = axis}, want, kCpu);
        Tensor y = poisoned(out, dt);
        cuda::gather(x.device, idx.device, {.axis = axis}, y, context());
        EXPECT_TRUE(close_to(y, want, 0.0)) << dtype_name(dt) << " index " << dtype_name(it) << " axis " << axis;
      }
  const Pair x = make({4, 3}, DType::F32, rng, false);
  const Pair bad = indices({1, 4, 0}, DType::I64);
  Tensor y = poisoned({3, 3}, DType::F32);
  expect_invalid([&] { cuda::gather(x.device, bad.device, {.axis = 0}, y, context()); }, "index 4 at position 1");
}

TEST(CudaData, ScatterAdd) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(25);
  for (DType dt : kFloats)
    for (int axis : {0, 1})
      for (bool strided : {false, true}) {
        const Pair x = make({6, 8, 5}, dt, rng, strided);
        const Pair idx = indices({1, 1, 5, 0, 1, 3, 3, 5, 0}, axis == 0 ? DType::I64 : DType::I32);
        Shape ss = x.host.shape();
        ss[axis] = 9;
        const Pair src = make(ss, dt, rng, strided);
        Tensor want = Tensor::empty(x.host.shape(), dt);
        cpu::scatter_add(x.host, idx.host, src.host, {.axis = axis}, want, kCpu);
        Tensor y = poisoned(x.host.shape(), dt);
        cuda::scatter_add(x.device, idx.device, src.device, {.axis = axis}, y, context());
        EXPECT_TRUE(close_to(y, want, tolerance(dt))) << dtype_name(dt) << " axis " << axis;
      }
  const Pair x = make({4, 3}, DType::F32, rng, false), src = make({2, 3}, DType::F32, rng, false);
  const Pair bad = indices({0, -1}, DType::I32);
  Tensor y = poisoned({4, 3}, DType::F32);
  expect_invalid([&] { cuda::scatter_add(x.device, bad.device, src.device, {.axis = 0}, y, context()); },
                 "index -1 at position 1");
}

TEST(CudaData, Embedding) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(26);
  for (DType table_dt : kFloats)
    for (DType out_dt : {table_dt, DType::F32})
      for (DType id_dt : {DType::I32, DType::I64}) {
        const Pair table = make({50, 33}, table_dt, rng, true);
        const Pair ids = make({3, 7}, id_dt, rng, false, 0.0, 50.0);
        Tensor want = Tensor::empty({3, 7, 33}, out_dt);
        cpu::embedding(table.host, ids.host, want, kCpu);
        Tensor y = poisoned({3, 7, 33}, out_dt);
        cuda::embedding(table.device, ids.device, y, context());
        EXPECT_TRUE(close_to(y, want, 0.0)) << dtype_name(table_dt) << " -> " << dtype_name(out_dt);
      }
  const Pair table = make({10, 4}, DType::F32, rng, false);
  const Pair ids = indices({3, 9, 10, 2}, DType::I64);
  Tensor y = poisoned({4, 4}, DType::F32);
  expect_invalid([&] { cuda::embedding(table.device, ids.device, y, context()); },
                 "id 10 at position 2");
  // The runtime stays usable after the error.
  const Pair good = indices({3, 9, 0, 2}, DType::I64);
  Tensor want = Tensor::empty({4, 4}, DType::F32);
  cpu::embedding(table.host, good.host, want, kCpu);
  cuda::embedding(table.device, good.device, y, context());
  EXPECT_TRUE(close_to(y, want, 0.0));
}

TEST(CudaData, Reduce) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(27);
  const std::vector<std::vector<int>> axes = {{}, {0}, {1}, {-1}, {0, 2}, {1, 2}};
  for (bool mean : {false, true})
    for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64})
      for (const auto& ax : axes)
        for (bool keep : {false, true})
          for (bool strided : {false, true}) {
            if (mean && !is_floating(dt)) continue;
            const Shape s{7, 300, 33};
            const Pair x = make(s, dt, rng, strided, -10.0, 10.0);
            const ReduceAttrs attrs{.axes = ax, .keepdims = keep};
            Shape out;
            for (int d = 0; d < 3; ++d) {
              bool red = ax.empty();
              for (int a : ax) red = red || (a < 0 ? a + 3 : a) == d;
              if (!red) out.push_back(s[d]);
              else if (keep) out.push_back(1);
            }
            Tensor want = Tensor::empty(out, dt);
            cpu::reduce(x.host, attrs, mean, want, kCpu);
            Tensor y = poisoned(out, dt);
            cuda::reduce(x.device, attrs, mean, y, context());
            EXPECT_TRUE(close_to(y, want, is_floating(dt) ? tolerance(dt) : 0.0))
                << (mean ? "mean " : "sum ") << dtype_name(dt) << " axes " << ax.size() << " keep " << keep
                << (strided ? " strided" : "");
          }
}

TEST(CudaData, ArgMax) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(28);
  for (DType dt : {DType::F32, DType::BF16, DType::I32, DType::U8})
    for (int axis : {0, 1, 2})
      for (bool keep : {false, true}) {
        // Few distinct values: many ties (the lowest index must win).
        const Pair x = make({40, 37, 30}, dt, rng, true, 0.0, 5.0);
        Shape out = x.host.shape();
        if (keep) out[axis] = 1;
        else out.erase(axis);
        Tensor want = Tensor::empty(out, DType::I64);
        cpu::argmax(x.host, {.axis = axis, .keepdims = keep}, want, kCpu);
        Tensor y = poisoned(out, DType::I64);
        cuda::argmax(x.device, {.axis = axis, .keepdims = keep}, y, context());
        EXPECT_TRUE(close_to(y, want, 0.0)) << dtype_name(dt) << " axis " << axis;
      }
  // NaN is the maximum and the first NaN wins; ties go to the lowest index.
  const float nan = std::nanf("");
  const Tensor x = Tensor::from_vector<float>({1, nan, 3, nan, 2, 7, 7, 7}, {2, 4});
  Tensor y = poisoned({2}, DType::I64);
  cuda::argmax(upload(x), {.axis = 1}, y, context());
  const Tensor got = download(y);
  EXPECT_EQ(got.at<std::int64_t>({0}), 1);
  EXPECT_EQ(got.at<std::int64_t>({1}), 1);
}

TEST(CudaData, TopK) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(29);
  for (DType dt : {DType::F32, DType::F16, DType::I32})
    for (int axis : {-1, 0})
      for (int k : {1, 3, 17})
        for (DType it : {DType::I64, DType::I32}) {
          const Pair x = make({20, 9, 61}, dt, rng, true, 0.0, 12.0);  // ties
          Shape out = x.host.shape();
          out[axis < 0 ? 2 : axis] = k;
          const TopKAttrs attrs{.k = k, .axis = axis};
          Tensor want_v = Tensor::empty(out, dt), want_i = Tensor::empty(out, it);
          cpu::topk(x.host, attrs, want_v, want_i, kCpu);
          Tensor v = poisoned(out, dt), i = poisoned(out, it);
          cuda::topk(x.device, attrs, v, i, context());
          EXPECT_TRUE(close_to(v, want_v, 0.0)) << dtype_name(dt) << " axis " << axis << " k " << k;
          EXPECT_TRUE(close_to(i, want_i, 0.0)) << dtype_name(dt) << " axis " << axis << " k " << k;
        }
  // A vocabulary-sized row (beam search) with NaN.
  Pair x = make({2, 50257}, DType::F32, rng, false, -5.0, 5.0);
  x.host.at<float>({1, 777}) = std::nanf("");
  x.device = upload(x.host);
  Tensor want_v = Tensor::empty({2, 8}, DType::F32), want_i = Tensor::empty({2, 8}, DType::I64);
  cpu::topk(x.host, {.k = 8}, want_v, want_i, kCpu);
  Tensor v = poisoned({2, 8}, DType::F32), i = poisoned({2, 8}, DType::I64);
  cuda::topk(x.device, {.k = 8}, v, i, context());
  EXPECT_TRUE(close_to(i, want_i, 0.0));
  EXPECT_TRUE(std::isnan(download(v).at<float>({1, 0})));
}

TEST(CudaData, CumSum) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(30);
  // [1100, 3, 40] along axis 0: 120 strided lines; [3, 1100, 40] along 1: 120; along 2: warp scans.
  for (const Shape& s : {Shape{1100, 3, 40}, Shape{3, 1100, 40}, Shape{2, 3, 1029}})
    for (int axis = 0; axis < 3; ++axis)
      for (DType dt : {DType::F32, DType::BF16, DType::I32, DType::I64})
        for (bool strided : {false, true}) {
          const DType out_dt = dt == DType::I32 ? DType::I64 : dt;
          const Pair x = make(s, dt, rng, strided, -10.0, 10.0);
          Tensor want = Tensor::empty(s, out_dt);
          cpu::cumsum(x.host, {.axis = axis}, want, kCpu);
          Tensor y = poisoned(s, out_dt);
          cuda::cumsum(x.device, {.axis = axis}, y, context());
          EXPECT_TRUE(close_to(y, want, is_floating(dt) ? tolerance(dt) : 0.0))
              << s.str() << " axis " << axis << " " << dtype_name(dt) << (strided ? " strided" : "");
        }
}

TEST(CudaData, Resize) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(31);
  const std::pair<std::int64_t, std::int64_t> sizes[] = {{14, 14}, {37, 23}, {5, 3}, {1, 1}, {64, 97}};
  for (ResizeMode mode : {ResizeMode::nearest, ResizeMode::bilinear, ResizeMode::bicubic})
    for (const auto& [oh, ow] : sizes)
      for (DType dt : kFloats)
        for (bool strided : {false, true}) {
          const Pair x = make({2, 3, 17, 29}, dt, rng, strided);
          const ResizeAttrs attrs{.mode = mode, .out_h = oh, .out_w = ow};
          Tensor want = Tensor::empty({2, 3, oh, ow}, dt);
          cpu::resize(x.host, attrs, want, kCpu);
          Tensor y = poisoned({2, 3, oh, ow}, dt);
          cuda::resize(x.device, attrs, y, context());
          EXPECT_TRUE(close_to(y, want, tolerance(dt)))
              << "mode " << static_cast<int>(mode) << " " << oh << "x" << ow << " " << dtype_name(dt);
        }
}

}  // namespace
