// Pointwise kernels against the double references: activation, binary, scale, glu, cast.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backends/cpu/ewk_test_util.h"
#include "reference/ref_elementwise.h"

namespace encore {
namespace {

using ewk_test::both_paths;
using ewk_test::ctx;
using ewk_test::expect_close;
using ewk_test::Layout;
using ewk_test::make_input;
using ewk_test::poisoned;

const Activation kActs[] = {Activation::none, Activation::gelu,    Activation::gelu_tanh, Activation::relu,
                            Activation::silu, Activation::sigmoid, Activation::tanh};
const Layout kLayouts[] = {Layout::contiguous, Layout::strided, Layout::broadcast};
const Shape kShapes[] = {{1}, {3}, {17}, {5, 67}, {3, 257}, {2, 769}, {48, 769}};

TEST(Activation, MatchesReferenceForEveryDtypeLayoutAndSize) {
  std::mt19937 rng(1);
  both_paths([&] {
    for (Activation act : kActs)
      for (DType dt : ewk_test::float_dtypes())
        for (const Shape& shape : kShapes)
          for (Layout layout : kLayouts) {
            SCOPED_TRACE(std::string(activation_name(act)) + " " + dtype_name(dt) + " " + shape.str() + " " +
                         ewk_test::layout_name(layout));
            // f16 keeps [-3, 3]: further left the GELU tails fall into f16 subnormals.
            const double r = dt == DType::F16 ? 3.0 : 5.0;
            const Tensor x = make_input(shape, dt, rng, layout, -r, r);
            const Tensor y = poisoned(shape, dt);
            cpu::activation(x, act, y, ctx());
            expect_close(y, ref::activation(ref::from_tensor(x), act), dt, "activation");
          }
  });
}

TEST(Activation, ConvertsBetweenDtypes) {
  std::mt19937 rng(2);
  both_paths([&] {
    const Tensor x = ref::random_tensor({7, 65}, DType::BF16, rng, -3, 3);
    const Tensor y = poisoned({7, 65}, DType::F32);
    cpu::activation(x, Activation::gelu, y, ctx());
    expect_close(y, ref::activation(ref::from_tensor(x), Activation::gelu), DType::F32, "bf16 -> f32");
    const Tensor z = poisoned({7, 65}, DType::F16);
    cpu::activation(y, Activation::silu, z, ctx());
    expect_close(z, ref::activation(ref::from_tensor(y), Activation::silu), DType::F16, "f32 -> f16");
  });
}

// Every element, not just the norm: the vector erf/tanh/exp must hold 1e-5 relative over the whole
// f32 range, including the far tails where the result is tiny but still a normal float.
TEST(Activation, ElementwiseAccuracyOverTheWholeRange) {
  std::vector<float> xs;
  for (int i = -150000; i <= 150000; ++i) xs.push_back(static_cast<float>(i) * 1e-4f);  // [-15, 15]
  for (float v = 1e-30f; v < 1e30f; v *= 1.7f) {
    xs.push_back(v);
    xs.push_back(-v);
  }
  for (float v : {0.0f, -0.0f, 88.0f, -88.0f, 1e38f, -1e38f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::lowest(), std::numeric_limits<float>::denorm_min()})
    xs.push_back(v);
  const Tensor x = Tensor::from_vector(xs, {static_cast<std::int64_t>(xs.size())});
  both_paths([&] {
    for (Activation act : kActs) {
      SCOPED_TRACE(activation_name(act));
      const Tensor y = poisoned(x.shape(), DType::F32);
      cpu::activation(x, act, y, ctx());
      const float* out = y.data_ptr<float>();
      int reported = 0;
      for (std::size_t i = 0; i < xs.size(); ++i) {
        const double want = ref::activation_value(xs[i], act);
        const double got = out[i];
        const double min_normal = std::numeric_limits<float>::min();
        bool ok;
        if (std::fabs(want) >= 1e4 * min_normal) ok = std::fabs(got - want) <= 1e-5 * std::fabs(want);
        else if (std::fabs(want) > static_cast<double>(std::numeric_limits<float>::max())) ok = std::isinf(got);
        else ok = std::fabs(got - want) <= 1e4 * min_normal;  // subnormal results: absolute
        if (!ok && reported++ < 5) ADD_FAILURE() << "x = " << xs[i] << ": got " << got << ", want " << want;
      }
      EXPECT_EQ(reported, 0);
    }
  });
}

// NaN, +-inf and 0 through every activation, in the vector loop's first lanes and again in its
// masked tail (48 elements); the output is refilled with a finite sentinel before every call, so
// an activation that writes nothing cannot pass.
TEST(Activation, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  std::vector<float> in(48, 1.0f);
  const float specials[] = {nan, inf, -inf, 0.0f};
  for (int i = 0; i < 4; ++i) in[static_cast<std::size_t>(i)] = in[static_cast<std::size_t>(40 + i)] = specials[i];
  const Tensor x = Tensor::from_vector(in, {48});
  struct Want {
    Activation act;
    float at_inf, at_neg_inf, at_zero, at_one;  // -inf: NaN for x * f(x) forms (-inf * 0), as in torch
  };
  const Want wants[] = {{Activation::none, inf, -inf, 0.0f, 1.0f},
                        {Activation::relu, inf, 0.0f, 0.0f, 1.0f},
                        {Activation::sigmoid, 1.0f, 0.0f, 0.5f, 0.7310585786f},
                        {Activation::tanh, 1.0f, -1.0f, 0.0f, 0.7615941560f},
                        {Activation::gelu, inf, nan, 0.0f, 0.8413447461f},
                        {Activation::gelu_tanh, inf, nan, 0.0f, 0.8411919906f},
                        {Activation::silu, inf, nan, 0.0f, 0.7310585786f}};
  both_paths([&] {
    for (const Want& w : wants) {
      SCOPED_TRACE(activation_name(w.act));
      Tensor y = Tensor::empty({48}, DType::F32);
      y.fill(12345.0);
      cpu::activation(x, w.act, y, ctx());
      for (const int base : {0, 40}) {
        EXPECT_TRUE(std::isnan(y.get(base))) << "NaN at " << base;
        EXPECT_EQ(y.get(base + 1), w.at_inf) << "+inf at " << base + 1;
        if (std::isnan(w.at_neg_inf)) EXPECT_TRUE(std::isnan(y.get(base + 2))) << "-inf at " << base + 2;
        else EXPECT_EQ(y.get(base + 2), w.at_neg_inf) << "-inf at " << base + 2;
        EXPECT_EQ(y.get(base + 3), w.at_zero) << "0 at " << base + 3;
      }
      for (int i = 4; i < 40; ++i) EXPECT_NEAR(y.get(i), w.at_one, 2e-6) << i;
      for (int i = 44; i < 48; ++i) EXPECT_NEAR(y.get(i), w.at_one, 2e-6) << i;
    }
  });
}

TEST(Activation, RejectsNonFloatingAndMismatchedShapes) {
  const Tensor xi = Tensor::zeros({4}, DType::I32);
  ewk_test::expect_error([&] { cpu::activation(xi, Activation::relu, Tensor::zeros({4}, DType::F32), ctx()); },
                         ErrorCode::unsupported, "i32");
  ewk_test::expect_error(
      [&] { cpu::activation(Tensor::zeros({4}, DType::F32), Activation::relu, Tensor::zeros({5}, DType::F32), ctx()); },
      ErrorCode::invalid_argument, "[5]");
}

struct BinaryCase {
  Shape a, b;
};
const BinaryCase kBinaryCases[] = {
    {{1}, {1}},          {{17}, {17}},         {{5, 67}, {5, 67}},     {{5, 67}, {67}},     {{5, 67}, {5, 1}},
    {{1}, {3, 17}},      {{4, 1, 17}, {3, 1}}, {{2, 3, 257}, {2, 3, 257}}, {{3, 769}, {1, 769}}, {{40, 1025}, {1025}},
    {{40, 1025}, {40, 1025}}};
const BinaryOp kOps[] = {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div};
const char* op_name(BinaryOp op) {
  return op == BinaryOp::add ? "add" : op == BinaryOp::sub ? "sub" : op == BinaryOp::mul ? "mul" : "div";
}

TEST(Binary, BroadcastsLikeNumPyForEveryDtypeAndLayout) {
  std::mt19937 rng(3);
  both_paths([&] {
    for (BinaryOp op : kOps)
      for (DType dt : ewk_test::float_dtypes())
        for (const BinaryCase& c : kBinaryCases)
          for (Layout la : kLayouts) {
            SCOPED_TRACE(std::string(op_name(op)) + " " + dtype_name(dt) + " " + c.a.str() + " " + c.b.str() + " " +
                         ewk_test::layout_name(la));
            const Tensor a = make_input(c.a, dt, rng, la, -2, 2);
            const Tensor b = make_input(c.b, dt, rng, la == Layout::strided ? Layout::strided : Layout::contiguous, 0.5, 2);
            const ref::RefTensor want = ref::binary(ref::from_tensor(a), ref::from_tensor(b), op);
            const Tensor y = poisoned(want.shape, dt);
            cpu::binary(a, b, op, y, ctx());
            expect_close(y, want, dt, "binary");
          }
  });
}

TEST(Binary, MixedDtypes) {
  std::mt19937 rng(4);
  both_paths([&] {
    const Tensor a = ref::random_tensor({9, 33}, DType::F32, rng);
    const Tensor b = ref::random_tensor({33}, DType::BF16, rng);
    const Tensor y = poisoned({9, 33}, DType::F32);
    cpu::binary(a, b, BinaryOp::mul, y, ctx());
    expect_close(y, ref::binary(ref::from_tensor(a), ref::from_tensor(b), BinaryOp::mul), DType::F32, "f32*bf16");
  });
}

TEST(Binary, InPlaceResidualAdd) {
  std::mt19937 rng(5);
  both_paths([&] {
    for (DType dt : ewk_test::float_dtypes()) {
      for (const Shape& shape : {Shape{197, 768}, Shape{3, 17}}) {
        const Tensor a = ref::random_tensor(shape, dt, rng);
        const Tensor b = ref::random_tensor(shape, dt, rng);
        const ref::RefTensor want = ref::binary(ref::from_tensor(a), ref::from_tensor(b), BinaryOp::add);
        cpu::binary(a, b, BinaryOp::add, a, ctx());
        expect_close(a, want, dt, std::string("in-place a ") + dtype_name(dt));
        const ref::RefTensor want2 = ref::binary(ref::from_tensor(a), ref::from_tensor(b), BinaryOp::sub);
        cpu::binary(a, b, BinaryOp::sub, b, ctx());
        expect_close(b, want2, dt, std::string("in-place b ") + dtype_name(dt));
      }
    }
  });
}

TEST(Binary, IntegerAddSubMul) {
  const Tensor a = Tensor::from_vector(std::vector<std::int64_t>{1, -2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from_vector(std::vector<std::int64_t>{10, 20, 30}, {3});
  const Tensor y = Tensor::zeros({2, 3}, DType::I64);
  cpu::binary(a, b, BinaryOp::add, y, ctx());
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{11, 18, 33, 14, 25, 36}));
  cpu::binary(a, b, BinaryOp::mul, y, ctx());
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{10, -40, 90, 40, 100, 180}));
  const Tensor a32 = a.to(DType::I32), b32 = b.to(DType::I32), y32 = Tensor::zeros({2, 3}, DType::I32);
  cpu::binary(a32, b32, BinaryOp::sub, y32, ctx());
  EXPECT_EQ(y32.to_float_vector(), (std::vector<float>{-9, -22, -27, -6, -15, -24}));
  ewk_test::expect_error([&] { cpu::binary(a, b, BinaryOp::div, y, ctx()); }, ErrorCode::unsupported, "binary");
}

TEST(Binary, RejectsShapesThatDoNotBroadcast) {
  const Tensor a = Tensor::zeros({3, 4}, DType::F32), b = Tensor::zeros({5}, DType::F32);
  ewk_test::expect_error([&] { cpu::binary(a, b, BinaryOp::add, Tensor::zeros({3, 4}, DType::F32), ctx()); },
                         ErrorCode::invalid_argument, "broadcast");
  ewk_test::expect_error(
      [&] { cpu::binary(a, a, BinaryOp::add, Tensor::zeros({3, 5}, DType::F32), ctx()); }, ErrorCode::invalid_argument,
      "[3, 5]");
}

TEST(Scale, MatchesReference) {
  std::mt19937 rng(6);
  const ScaleAttrs attrs{.scale = 0.125f, .shift = -3.5f};
  both_paths([&] {
    for (DType dt : ewk_test::float_dtypes())
      for (const Shape& shape : kShapes)
        for (Layout layout : kLayouts) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape.str() + " " + ewk_test::layout_name(layout));
          const Tensor x = make_input(shape, dt, rng, layout, -10, 10);
          const Tensor y = poisoned(shape, dt);
          cpu::scale(x, attrs, y, ctx());
          expect_close(y, ref::scale(ref::from_tensor(x), attrs), dt, "scale");
        }
  });
}

TEST(Glu, BothKindsAlongEveryAxis) {
  std::mt19937 rng(7);
  both_paths([&] {
    for (GluKind kind : {GluKind::glu, GluKind::swiglu})
      for (DType dt : ewk_test::float_dtypes())
        for (int axis : {-1, 0, 1})
          for (Layout layout : kLayouts) {
            const Shape shape{6, 4, 34};
            SCOPED_TRACE(std::string(kind == GluKind::glu ? "glu " : "swiglu ") + dtype_name(dt) + " axis " +
                         std::to_string(axis) + " " + ewk_test::layout_name(layout));
            const GluAttrs attrs{.kind = kind, .axis = axis};
            const Tensor x = make_input(shape, dt, rng, layout, -4, 4);
            const ref::RefTensor want = ref::glu(ref::from_tensor(x), attrs);
            const Tensor y = poisoned(want.shape, dt);
            cpu::glu(x, attrs, y, ctx());
            expect_close(y, want, dt, "glu");
          }
    const Tensor big = ref::random_tensor({197, 2 * 1536}, DType::F32, rng);
    const GluAttrs attrs{.kind = GluKind::swiglu, .axis = -1};
    const Tensor y = poisoned({197, 1536}, DType::F32);
    cpu::glu(big, attrs, y, ctx());
    expect_close(y, ref::glu(ref::from_tensor(big), attrs), DType::F32, "large swiglu");
  });
  ewk_test::expect_error(
      [&] { cpu::glu(Tensor::zeros({3, 5}, DType::F32), GluAttrs{}, Tensor::zeros({3, 2}, DType::F32), ctx()); },
      ErrorCode::invalid_argument, "odd");
}

TEST(Cast, EveryDtypePairMatchesTensorTo) {
  std::mt19937 rng(8);
  std::vector<float> vals;
  std::uniform_real_distribution<float> dist(-300.0f, 300.0f);
  for (int i = 0; i < 300; ++i) vals.push_back(i % 3 == 0 ? std::round(dist(rng)) : dist(rng));
  for (float v : {0.0f, -0.0f, 0.5f, -0.5f, 127.9f, -128.9f, 255.5f, 1e10f, -1e10f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), std::nanf("")})
    vals.push_back(v);
  const Tensor base = Tensor::from_vector(vals, {static_cast<std::int64_t>(vals.size())});
  for (DType from : ewk_test::all_dtypes()) {
    // Sources: a contiguous tensor and a strided view (every other element) of the same values.
    const Tensor src = base.to(from);
    for (const Tensor& x : {src, src.slice(0, 1, src.numel(), 2)})
      for (DType to : ewk_test::all_dtypes()) {
        SCOPED_TRACE(std::string(dtype_name(from)) + " -> " + dtype_name(to));
        const Tensor y = ewk_test::poisoned(x.shape(), to);
        cpu::cast(x, y, ctx());
        ewk_test::expect_equal(y, x.to(to), "cast");
      }
  }
}

TEST(Cast, LargeVectorisedConversions) {
  std::mt19937 rng(9);
  const Tensor x = ref::random_tensor({70000}, DType::F32, rng, -1e4, 1e4);
  for (DType to : {DType::BF16, DType::F16}) {
    const Tensor y = poisoned(x.shape(), to);
    cpu::cast(x, y, ctx());
    ewk_test::expect_equal(y, x.to(to), std::string("f32 -> ") + dtype_name(to));
    const Tensor back = poisoned(x.shape(), DType::F32);
    cpu::cast(y, back, ctx());
    ewk_test::expect_equal(back, y.to(DType::F32), std::string(dtype_name(to)) + " -> f32");
  }
}

}  // namespace
}  // namespace encore
