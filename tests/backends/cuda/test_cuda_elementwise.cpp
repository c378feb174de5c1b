// CUDA pointwise kernels (activation, binary, scale, glu, cast) against the CPU kernels on the same
// inputs: odd sizes, strided views, broadcasting, every float dtype, poisoned outputs.
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

Pair make(const Shape& s, DType dt, std::mt19937& rng, bool strided, double lo = -1.0, double hi = 1.0) {
  return strided ? random_strided_pair(s, dt, rng, lo, hi) : random_pair(s, dt, rng, lo, hi);
}

std::string tag(DType dt, bool strided) { return std::string(dtype_name(dt)) + (strided ? " strided" : ""); }

TEST(CudaElementwise, Activation) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(1);
  for (Activation act : {Activation::none, Activation::gelu, Activation::gelu_tanh, Activation::relu,
                         Activation::silu, Activation::sigmoid, Activation::tanh})
    for (DType dt : kFloats)
      for (bool strided : {false, true}) {
        const Pair x = make({37, 3, 129}, dt, rng, strided, -6.0, 6.0);
        Tensor want = Tensor::empty(x.host.shape(), dt);
        cpu::activation(x.host, act, want, kCpu);
        Tensor y = poisoned(x.host.shape(), dt);
        cuda::activation(x.device, act, y, context());
        EXPECT_TRUE(close_to(y, want, tolerance(dt))) << activation_name(act) << " " << tag(dt, strided);
      }
}

TEST(CudaElementwise, ActivationOtherOutputDtype) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(2);
  const Pair x = make({5, 333}, DType::BF16, rng, true, -3.0, 3.0);
  Tensor want = Tensor::empty(x.host.shape(), DType::F32);
  cpu::activation(x.host, Activation::gelu, want, kCpu);
  Tensor y = poisoned(x.host.shape(), DType::F32);
  cuda::activation(x.device, Activation::gelu, y, context());
  EXPECT_TRUE(close_to(y, want, 1e-5));
}

TEST(CudaElementwise, BinaryBroadcasting) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(3);
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 1, 65}, {7, 1}}, {{2, 5, 33}, {2, 5, 33}}, {{1}, {4, 9}}, {{6, 1, 1, 3}, {1, 4, 5, 1}}, {{1031}, {}}};
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div})
    for (const auto& [sa, sb] : shapes)
      for (DType dt : kFloats)
        for (bool strided : {false, true}) {
          const Pair a = make(sa, dt, rng, strided && sa.rank() >= 2);
          const Pair b = make(sb, dt, rng, false, 0.5, 2.0);  // away from 0 for div
          Shape out;
          const int r = std::max(sa.rank(), sb.rank());
          for (int d = 0; d < r; ++d) {
            const int da = d - (r - sa.rank()), db = d - (r - sb.rank());
            out.push_back(std::max(da < 0 ? 1 : sa[da], db < 0 ? 1 : sb[db]));
          }
          Tensor want = Tensor::empty(out, dt);
          cpu::binary(a.host, b.host, op, want, kCpu);
          Tensor y = poisoned(out, dt);
          cuda::binary(a.device, b.device, op, y, context());
          EXPECT_TRUE(close_to(y, want, tolerance(dt)))
              << "op " << static_cast<int>(op) << " " << sa.str() << " x " << sb.str() << " " << tag(dt, strided);
        }
}

TEST(CudaElementwise, BinaryMixedDtypesAndInPlace) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(4);
  const Pair a = make({17, 40}, DType::BF16, rng, false);
  const Pair b = make({40}, DType::F32, rng, false);
  Tensor want = Tensor::empty({17, 40}, DType::F16);
  cpu::binary(a.host, b.host, BinaryOp::add, want, kCpu);
  Tensor y = poisoned({17, 40}, DType::F16);
  cuda::binary(a.device, b.device, BinaryOp::add, y, context());
  EXPECT_TRUE(close_to(y, want, 1e-2));
  // In place: y aliases a (the residual add).
  const Pair c = make({17, 40}, DType::F32, rng, false);
  Tensor want2 = Tensor::empty({17, 40}, DType::F32);
  cpu::binary(c.host, b.host, BinaryOp::mul, want2, kCpu);
  cuda::binary(c.device, b.device, BinaryOp::mul, c.device, context());
  EXPECT_TRUE(close_to(c.device, want2, 1e-6));
}

TEST(CudaElementwise, BinaryIntegers) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(5);
  for (DType dt : {DType::I32, DType::I64})
    for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul}) {
      const Pair a = make({9, 31}, dt, rng, true, -1000.0, 1000.0);
      const Pair b = make({31}, dt, rng, false, -1000.0, 1000.0);
      Tensor want = Tensor::empty({9, 31}, dt);
      cpu::binary(a.host, b.host, op, want, kCpu);
      Tensor y = poisoned({9, 31}, dt);
      cuda::binary(a.device, b.device, op, y, context());
      EXPECT_TRUE(close_to(y, want, 0.0)) << dtype_name(dt) << " op " << static_cast<int>(op);
    }
  // Division of integers is refused, like on the CPU.
  const Pair a = make({4}, DType::I32, rng, false);
  Tensor y = poisoned({4}, DType::I32);
  EXPECT_THROW(cuda::binary(a.device, a.device, BinaryOp::div, y, context()), Error);
}

TEST(CudaElementwise, BinaryShapeErrors) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(6);
  const Pair a = make({3, 4}, DType::F32, rng, false), b = make({5}, DType::F32, rng, false);
  Tensor y = poisoned({3, 4}, DType::F32);
  try {
    cuda::binary(a.device, b.device, BinaryOp::add, y, context());
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("do not broadcast"), std::string::npos) << e.what();
  }
  // Host tensors are refused with a clear message.
  Tensor host_y = Tensor::empty({3, 4}, DType::F32);
  EXPECT_THROW(cuda::activation(a.host, Activation::relu, host_y, context()), Error);
}

TEST(CudaElementwise, Scale) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(7);
  for (DType dt : kFloats)
    for (bool strided : {false, true}) {
      const Pair x = make({11, 7, 19}, dt, rng, strided);
      const ScaleAttrs attrs{.scale = 0.125f, .shift = -3.0f};
      Tensor want = Tensor::empty(x.host.shape(), dt);
      cpu::scale(x.host, attrs, want, kCpu);
      Tensor y = poisoned(x.host.shape(), dt);
      cuda::scale(x.device, attrs, y, context());
      EXPECT_TRUE(close_to(y, want, tolerance(dt))) << tag(dt, strided);
    }
}

TEST(CudaElementwise, Glu) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(8);
  for (GluKind kind : {GluKind::glu, GluKind::swiglu})
    for (int axis : {-1, 0, 1})
      for (DType dt : kFloats)
        for (bool strided : {false, true}) {
          const Pair x = make({6, 10, 86}, dt, rng, strided, -4.0, 4.0);
          Shape out = x.host.shape();
          const int a = axis < 0 ? axis + 3 : axis;
          out[a] /= 2;
          const GluAttrs attrs{.kind = kind, .axis = axis};
          Tensor want = Tensor::empty(out, dt);
          cpu::glu(x.host, attrs, want, kCpu);
          Tensor y = poisoned(out, dt);
          cuda::glu(x.device, attrs, y, context());
          EXPECT_TRUE(close_to(y, want, tolerance(dt)))
              << "kind " << static_cast<int>(kind) << " axis " << axis << " " << tag(dt, strided);
        }
}

TEST(CudaElementwise, CastEveryPair) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(9);
  const DType all[] = {DType::F32, DType::F16, DType::BF16, DType::I8, DType::U8, DType::I32, DType::I64, DType::Bool};
  for (DType from : all)
    for (DType to : all)
      for (bool strided : {false, true}) {
        // Values beyond the i8/u8 ranges (saturation), fractions (truncation), zeros (bool).
        Tensor h;
        if (from == DType::Bool) {
          h = Tensor::empty({13, 21}, DType::Bool);
          cpu::cast(ref::random_tensor({13, 21}, DType::U8, rng, 0.0, 2.0), h, kCpu);
        } else {
          h = ref::random_tensor({13, 21}, from, rng, -400.0, 400.0);
        }
        if (strided) h = h.transpose(0, 1).slice(0, 1, 20);
        const Pair x{h, upload_view(h)};
        Tensor want = Tensor::empty(x.host.shape(), to);
        cpu::cast(x.host, want, kCpu);
        Tensor y = poisoned(x.host.shape(), to);
        cuda::cast(x.device, y, context());
        EXPECT_TRUE(close_to(y, want, 0.0)) << dtype_name(from) << " -> " << dtype_name(to) << (strided ? " strided" : "");
      }
}

TEST(CudaElementwise, CastSpecialValues) {
  ENCORE_REQUIRE_GPU();
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = Tensor::from_vector<float>({std::nanf(""), inf, -inf, 3e9f, -3e9f, 1e20f, -0.0f, 2.5f, -2.5f,
                                               255.9f, 256.0f, -129.0f},
                                              {12});
  for (DType to : {DType::I8, DType::U8, DType::I32, DType::I64, DType::Bool, DType::F16, DType::BF16}) {
    Tensor want = Tensor::empty({12}, to);
    cpu::cast(x, want, kCpu);
    Tensor y = poisoned({12}, to);
    cuda::cast(upload(x), y, context());
    const Tensor got = download(y);
    for (std::int64_t i = 0; i < 12; ++i) {
      const double g = got.get(i), w = want.get(i);
      EXPECT_TRUE(g == w || (std::isnan(g) && std::isnan(w))) << "f32 -> " << dtype_name(to) << " element " << i
                                                              << ": " << g << " vs " << w;
    }
  }
}

}  // namespace
