// Shape/dtype inference and the errors model authors see.
#include <gtest/gtest.h>

#include <limits>

#include "encore/graph/graph.h"

using namespace encore;

namespace {
template <typename Fn>
void expect_error(Fn&& fn, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << substring << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos) << e.what();
  }
}
Tensor weight(const Shape& s, DType t = DType::F32) { return Tensor::zeros(s, t); }
}  // namespace

TEST(GraphBuilder, LinearInfersShapeForBothLayouts) {
  Graph g;
  auto x = g.input("x", DType::F32, {2, 5, 8});
  auto y = g.linear(x, g.constant(weight({16, 8})), g.constant(weight({16})));
  EXPECT_EQ(g.shape(y), (Shape{2, 5, 16}));
  auto z = g.linear(y, g.constant(weight({16, 3})), {}, {.layout = WeightLayout::in_out});
  EXPECT_EQ(g.shape(z), (Shape{2, 5, 3}));
  expect_error([&] { g.linear(x, g.constant(weight({16, 7}))); }, "x [2, 5, 8] has 8 input features");
  expect_error([&] { g.linear(x, g.constant(weight({16, 8})), g.constant(weight({15}))); }, "bias must have shape [16]");
  auto ids = g.input("ids", DType::I64, {2, 5});
  expect_error([&] { g.linear(ids, g.constant(weight({3, 5}))); }, "float tensor");
}

TEST(GraphBuilder, MatMulBroadcastsAndTransposes) {
  Graph g;
  auto a = g.input("a", DType::F32, {4, 1, 3, 5});
  auto b = g.input("b", DType::F32, {6, 7, 5});
  auto c = g.matmul(a, b, {.trans_b = true});
  EXPECT_EQ(g.shape(c), (Shape{4, 6, 3, 7}));
  expect_error([&] { g.matmul(a, b); }, "inner dimensions differ");
  auto bad = g.input("bad", DType::F32, {2, 3, 5, 7});
  expect_error([&] { g.matmul(a, bad); }, "do not broadcast");
}

TEST(GraphBuilder, AttentionHeadRulesAndMasks) {
  Graph g;
  auto q = g.input("q", DType::F32, {2, 3, 8 * 16});
  auto kv = g.input("kv", DType::F32, {2, 9, 2 * 16});
  auto y = g.attention(q, kv, kv, {}, {.num_heads = 8, .num_kv_heads = 2});
  EXPECT_EQ(g.shape(y), (Shape{2, 3, 128}));
  // Reverse sparse-query attention: output has the kv head count.
  auto q2 = g.input("q2", DType::F32, {2, 3, 2 * 16});
  auto kv8 = g.input("kv8", DType::F32, {2, 9, 8 * 16});
  EXPECT_EQ(g.shape(g.attention(q2, kv8, kv8, {}, {.num_heads = 2, .num_kv_heads = 8})), (Shape{2, 3, 128}));
  expect_error([&] { g.attention(q, kv, kv, {}, {.num_heads = 8, .num_kv_heads = 3}); }, "one must divide");
  auto mask = g.input("mask", DType::Bool, {2, 8});
  expect_error([&] { g.attention(q, kv, kv, mask, {.num_heads = 8, .num_kv_heads = 2, .mask = MaskKind::key_padding}); },
               "key padding mask must be [B, Tk] = [2, 9]");
  expect_error([&] { g.attention(q, kv, kv, {}, {.num_heads = 8, .num_kv_heads = 2, .mask = MaskKind::additive}); },
               "no mask was given");
}

TEST(GraphBuilder, ViewsTrackLayoutsAndCopyWhenNeeded) {
  Graph g;
  auto x = g.input("x", DType::F32, {2, 3, 4});
  auto t = g.transpose(x, 1, 2);
  EXPECT_EQ(g.shape(t), (Shape{2, 4, 3}));
  EXPECT_FALSE(g.is_contiguous(t));
  const std::size_t nodes_before = g.nodes().size();
  auto r = g.reshape(t, {8, 3});  // needs a copy first
  EXPECT_EQ(g.nodes().size(), nodes_before + 2);
  EXPECT_EQ(g.nodes()[nodes_before].kind, OpKind::copy);
  EXPECT_TRUE(g.is_contiguous(r));
  auto s = g.slice(x, 2, 1, 3);
  EXPECT_EQ(g.shape(s), (Shape{2, 3, 2}));
  EXPECT_EQ(g.strides(s), (Shape{12, 4, 1}));
  expect_error([&] { g.reshape(x, {5, 5}); }, "cannot reshape");
  expect_error([&] { g.permute(x, {0, 0, 1}); }, "permute");
}

TEST(GraphBuilder, ConvAndResizeShapes) {
  Graph g;
  auto img = g.input("img", DType::F32, {1, 3, 32, 48});
  auto patches = g.conv2d(img, g.constant(weight({8, 3, 8, 8})), {}, {.stride = {8, 8}});
  EXPECT_EQ(g.shape(patches), (Shape{1, 8, 4, 6}));
  auto fb = g.input("fbank", DType::F32, {1, 1, 101, 80});
  auto sub = g.conv2d(fb, g.constant(weight({4, 1, 3, 3})), {}, {.stride = {2, 2}, .padding = {1, 1}});
  EXPECT_EQ(g.shape(sub), (Shape{1, 4, 51, 40}));
  auto seq = g.input("seq", DType::F32, {2, 6, 10});
  EXPECT_EQ(g.shape(g.conv1d(seq, g.constant(weight({6, 1, 3})), {}, {.padding = 1, .groups = 6})), (Shape{2, 6, 10}));
  expect_error([&] { g.conv1d(seq, g.constant(weight({6, 2, 3})), {}, {.groups = 6}); }, "groups=6");
  EXPECT_EQ(g.shape(g.resize(img, {.mode = ResizeMode::bicubic, .out_h = 7, .out_w = 9})), (Shape{1, 3, 7, 9}));
}

TEST(GraphBuilder, ReductionsAndIndexOps) {
  Graph g;
  auto x = g.input("x", DType::F32, {2, 3, 4});
  EXPECT_EQ(g.shape(g.reduce_mean(x, {.axes = {0, -1}})), (Shape{3}));
  EXPECT_EQ(g.shape(g.reduce_sum(x, {.axes = {1}, .keepdims = true})), (Shape{2, 1, 4}));
  EXPECT_EQ(g.dtype(g.argmax(x, {.axis = -1})), DType::I64);
  auto [vals, idx] = g.topk(x, {.k = 2, .axis = 1});
  EXPECT_EQ(g.shape(vals), (Shape{2, 2, 4}));
  EXPECT_EQ(g.dtype(idx), DType::I64);
  expect_error([&] { g.topk(x, {.k = 5, .axis = 1}); }, "k=5");
  auto ids = g.input("ids", DType::I32, {7});
  EXPECT_EQ(g.shape(g.embedding(g.constant(weight({10, 6})), ids)), (Shape{7, 6}));
  EXPECT_EQ(g.shape(g.gather(x, ids, 1)), (Shape{2, 7, 4}));
  const Value parts[] = {x, x};
  EXPECT_EQ(g.shape(g.concat(parts, -1)), (Shape{2, 3, 8}));
  expect_error([&] { g.gather(x, x, 0); }, "indices must be i32 or i64");
  expect_error([&] { g.add(x, ids); }, "dtypes f32 and i32");
}

TEST(GraphBuilder, InputsAndOutputsAreNamedOnce) {
  Graph g;
  auto x = g.input("x", DType::F32, {2});
  expect_error([&] { g.input("x", DType::F32, {2}); }, "declared twice");
  g.output("y", x);
  expect_error([&] { g.output("y", x); }, "declared twice");
  expect_error([&] { g.add(x, Value{99}); }, "not a value of this graph");
}

// Attributes a caller chooses are checked in 64 bits (no signed overflow), and kv_cache_write
// refuses mixed dtypes (its kernel copies k and v rows with one element size).
TEST(GraphBuilder, HugeAttributesAndMixedCacheDtypesAreRefused) {
  Graph g;
  auto img = g.input("img", DType::F32, {1, 3, 8, 8});
  // 2 * padding past INT_MAX: a valid shape in 64 bits, so the check passes without wrapping.
  EXPECT_EQ(g.shape(g.conv2d(img, g.constant(weight({2, 3, 1, 1})), {}, {.stride = {1 << 30, 1}, .padding = {1 << 30, 0}})),
            (Shape{1, 2, 3, 8}));  // (8 + 2^31 - 1) / 2^30 + 1
  expect_error([&] { g.conv2d(img, g.constant(weight({2, 3, 3, 3})), {}, {.dilation = {1 << 30, 1}}); },
               "smaller than the dilated kernel");
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max();
  expect_error([&] { g.pad(img, {.pads = {huge, 1}}); }, "below 2^61");
  auto q = g.input("q", DType::F32, {1, 4, 8});
  expect_error([&] {
    g.rel_pos_attention(q, q, q, g.constant(weight({3, 8})), g.constant(weight({2, 4})), g.constant(weight({2, 4})), {},
                        {.num_heads = 2, .max_relative = std::numeric_limits<int>::max()});
  }, "pos must be [2K+1, H*D] = [4294967295, 8]");
  auto k = g.input("k", DType::F32, {1, 1, 8}), v = g.input("v", DType::BF16, {1, 1, 8});
  auto table = g.input("table", DType::I32, {1, 2}), lengths = g.input("lengths", DType::I32, {1});
  expect_error([&] {
    g.kv_cache_write(k, v, g.constant(weight({2, 2, 4, 4})), g.constant(weight({2, 2, 4, 4}, DType::BF16)), table,
                     lengths);
  }, "must share a dtype, got k f32, v bf16");
}

// Arguments that are references into the graph itself (g.shape(v), g.info(w).constant) stay valid
// while the graph grows, and a refused node leaves the graph as it was: later values and views
// still line up with their layouts.
TEST(GraphBuilder, ArgumentsFromTheGraphAndRefusedNodesLeaveItConsistent) {
  Graph g;
  Value first = g.input("first", DType::F32, {2, 3});
  std::vector<Value> inputs{first};
  for (int i = 0; i < 40; ++i)  // each declaration may reallocate the storage the shape came from
    inputs.push_back(g.input("x" + std::to_string(i), DType::F32, g.shape(inputs.back())));
  for (Value v : inputs) EXPECT_EQ(g.shape(v), (Shape{2, 3}));
  Value w = g.constant(weight({3, 5}));
  std::vector<Value> weights{w};
  for (int i = 0; i < 40; ++i) weights.push_back(g.constant(g.info(weights.back()).constant));
  for (Value c : weights) EXPECT_EQ(g.shape(c), (Shape{3, 5}));

  auto img = g.input("img", DType::F32, {1, 1, 4, 4});
  const std::size_t values = g.values().size(), nodes = g.nodes().size();
  expect_error([&] { g.resize(img, {.out_h = std::int64_t{1} << 32, .out_w = std::int64_t{1} << 32}); },
               "64-bit count");
  expect_error([&] { g.pad(g.input("wide", DType::F32, {8, 8}), {.pads = {std::int64_t{1} << 60, 0}}); },
               "64-bit count");
  expect_error([&] { g.pad(g.input("long", DType::F32, {8}), {.pads = {std::int64_t{1} << 60, 0}}); },
               "too large to address");  // 2^61 elements of 4 bytes
  EXPECT_EQ(g.nodes().size(), nodes);
  EXPECT_EQ(g.values().size(), values + 2);  // only the "wide" and "long" inputs
  Value y = g.gelu(img);
  Value t = g.transpose(y, 2, 3);
  EXPECT_EQ(g.shape(t), (Shape{1, 1, 4, 4}));
  EXPECT_EQ(g.strides(t), (Shape{16, 16, 1, 4}));
}

// Empty values: a slice at a non-zero start of a batch of 0 is a valid, empty view.
TEST(GraphBuilder, SlicesOfEmptyValues) {
  Graph g;
  Value x = g.input("x", DType::F32, {0, 9, 96});
  EXPECT_EQ(g.shape(g.slice(x, -1, 32, 64)), (Shape{0, 9, 32}));
  EXPECT_EQ(g.shape(g.slice(x, 1, 3, 9, 4)), (Shape{0, 2, 96}));
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max();
  Value y = g.input("y", DType::F32, {10});
  EXPECT_EQ(g.shape(g.slice(y, 0, 0, 10, huge)), (Shape{1}));  // one element: no stride overflow
  Value big = g.input("big", DType::I8, {std::int64_t{1} << 61});
  expect_error([&] { g.concat(std::vector<Value>{big, big, big, big}, 0); }, "past 2^63");
}
