// Running planned graphs: fusions change nothing numerically, inputs are validated, cancellation
// stops between nodes, outputs are views of the arena.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <chrono>
#include <thread>
#include <random>

#include "encore/graph/plan.h"
#include "reference/ref_tensor.h"

using namespace encore;

namespace {

struct Block {
  Tensor ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

Block random_block(std::mt19937& rng, int d, int ff) {
  auto r = [&](const Shape& s, double scale = 0.2) { return ref::random_tensor(s, DType::F32, rng, -scale, scale); };
  return Block{r({d}, 1.0), r({d}), r({3 * d, d}), r({3 * d}), r({d, d}), r({d}), r({d}, 1.0), r({d}), r({ff, d}),
               r({ff}), r({d, ff}), r({d})};
}

// One pre-LN ViT block, written the way model code writes it.
Value vit_block(Graph& g, Value x, const Block& w, int heads) {
  const std::int64_t d = g.shape(x).dim(-1);
  auto h = g.layer_norm(x, g.constant(w.ln1_w), g.constant(w.ln1_b), {.eps = 1e-12f});
  auto qkv = g.linear(h, g.constant(w.qkv_w), g.constant(w.qkv_b));
  auto q = g.slice(qkv, -1, 0, d), k = g.slice(qkv, -1, d, 2 * d), v = g.slice(qkv, -1, 2 * d, 3 * d);
  auto a = g.add(x, g.linear(g.attention(q, k, v, {}, {.num_heads = heads}), g.constant(w.proj_w), g.constant(w.proj_b)));
  auto m = g.layer_norm(a, g.constant(w.ln2_w), g.constant(w.ln2_b), {.eps = 1e-12f});
  auto f = g.gelu(g.linear(m, g.constant(w.fc1_w), g.constant(w.fc1_b)));
  return g.add(a, g.linear(f, g.constant(w.fc2_w), g.constant(w.fc2_b)));
}

}  // namespace

TEST(GraphExec, FusedEqualsUnfusedOnTransformerBlocks) {
  std::mt19937 rng(7);
  const Block b1 = random_block(rng, 32, 67), b2 = random_block(rng, 32, 67);
  Graph g;
  auto x = g.input("x", DType::F32, {2, 9, 32});
  g.output("y", vit_block(g, vit_block(g, x, b1, 4), b2, 4));
  Plan fused(g, {.fuse = true}), plain(g, {.fuse = false});
  int fused_kinds = 0;
  for (const Node& n : fused.optimised_graph().nodes())
    fused_kinds += n.kind == OpKind::add_layer_norm ||
                   (n.kind == OpKind::linear && std::get<LinearAttrs>(n.attrs).activation == Activation::gelu);
  EXPECT_GE(fused_kinds, 4);  // two GELU linears and two add+LN per pair of blocks
  EXPECT_LT(fused.optimised_graph().nodes().size(), plain.optimised_graph().nodes().size());
  const Tensor input = ref::random_tensor({2, 9, 32}, DType::F32, rng);
  const auto a = ref::from_tensor(fused.run({{"x", input}}).at("y"));
  const auto b = ref::from_tensor(plain.run({{"x", input}}).at("y"));
  EXPECT_LT(ref::relative_error(a, b), 1e-6);
  EXPECT_LE(fused.peak_bytes(), plain.peak_bytes());
}

TEST(GraphExec, DeadNodesAreRemoved) {
  Graph g;
  auto x = g.input("x", DType::F32, {4});
  (void)g.gelu(g.scale(x, 3.0f));  // never reaches an output
  g.output("y", g.scale(x, 2.0f));
  Plan plan(g);
  EXPECT_EQ(plan.optimised_graph().nodes().size(), 1u);
  const Tensor in = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {4});
  EXPECT_EQ(plan.run({{"x", in}}).at("y").to_float_vector(), (std::vector<float>{2, 4, 6, 8}));
}

TEST(GraphExec, InputsAreValidated) {
  Graph g;
  auto x = g.input("x", DType::F32, {2, 3});
  g.output("y", g.scale(x, 2.0f));
  Plan plan(g);
  auto expect_msg = [&](const std::map<std::string, Tensor>& in, const std::string& sub) {
    try {
      plan.run(in);
      ADD_FAILURE() << "expected an error containing " << sub;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(sub), std::string::npos) << e.what();
    }
  };
  expect_msg({}, "graph input 'x' (f32 [2, 3]) was not given");
  expect_msg({{"x", Tensor::zeros({3, 2}, DType::F32)}}, "must be f32 [2, 3]");
  expect_msg({{"x", Tensor::zeros({2, 3}, DType::BF16)}}, "must be f32 [2, 3]");
  expect_msg({{"x", Tensor::zeros({2, 3}, DType::F32)}, {"z", Tensor::zeros({1}, DType::F32)}}, "'z' is not an input");
  // A non-contiguous input is accepted (copied).
  const Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2}).transpose(0, 1);
  EXPECT_EQ(plan.run({{"x", t}}).at("y").to_float_vector(), (std::vector<float>{2, 6, 10, 4, 8, 12}));
}

TEST(GraphExec, CancellationStopsBetweenNodes) {
  Graph g;
  auto x = g.input("x", DType::F32, {2});
  g.output("y", g.scale(g.scale(x, 2.0f), 2.0f));
  Plan plan(g);
  std::atomic<bool> cancel{true};
  try {
    plan.run({{"x", Tensor::zeros({2}, DType::F32)}}, {.cancel = &cancel});
    FAIL() << "expected cancellation";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::cancelled);
  }
  cancel = false;
  EXPECT_NO_THROW(plan.run({{"x", Tensor::zeros({2}, DType::F32)}}, {.cancel = &cancel}));
}

TEST(GraphExec, ViewsOfInputsAndConstantsRunWithoutCopies) {
  Graph g;
  auto x = g.input("x", DType::F32, {2, 4});
  const Tensor w = Tensor::from_vector(std::vector<float>{10, 20, 30, 40, 50, 60, 70, 80}, {2, 4});
  auto wt = g.constant(w);
  g.output("y", g.add(g.slice(x, 1, 1, 3), g.slice(g.transpose(g.reshape(wt, {4, 2}), 0, 1), 1, 0, 2)));
  Plan plan(g);
  const Tensor in = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
  // w viewed as [4,2] then transposed: [[10,30,50,70],[20,40,60,80]]; first two columns.
  EXPECT_EQ(plan.run({{"x", in}}).at("y").to_float_vector(), (std::vector<float>{12, 33, 26, 47}));
}

TEST(GraphExec, CudaGraphOptionIsIgnoredOnTheCpu) {
  Graph g;
  auto x = g.input("x", DType::F32, {3});
  g.output("y", g.scale(x, 2.0f));
  Plan plan(g, {.cuda_graph = true});
  for (float v : {1.0f, 2.0f, 3.0f}) {
    const Tensor in = Tensor::from_vector(std::vector<float>{v, v + 1, v + 2}, {3});
    EXPECT_EQ(plan.run({{"x", in}}).at("y").to_float_vector(), (std::vector<float>{2 * v, 2 * v + 2, 2 * v + 4}));
  }
  EXPECT_FALSE(plan.replays_cuda_graph());
  EXPECT_TRUE(plan.accepts_host_inputs());  // a CPU plan's inputs are host tensors anyway
}

TEST(GraphExec, ProfileListsEveryExecutedNode) {
  Graph g;
  auto x = g.input("x", DType::F32, {2, 3});
  g.output("y", g.gelu(g.scale(g.transpose(x, 0, 1), 2.0f)));
  Plan plan(g, {.fuse = false});
  std::vector<NodeProfile> profile{NodeProfile{}};  // stale entries are cleared
  plan.run({{"x", Tensor::zeros({2, 3}, DType::F32)}}, {.profile = &profile});
  ASSERT_EQ(profile.size(), 2u);  // the transpose is a view: no kernel, no entry
  EXPECT_EQ(profile[0].kind, OpKind::scale);
  EXPECT_EQ(profile[1].kind, OpKind::activation);
  for (const NodeProfile& n : profile) EXPECT_GE(n.microseconds, 0.0);
}

// A profiled run that stops early (cancelled) leaves no mark behind: the next profiled run's first
// entry times its own first node, not the gap since the stopped run.
TEST(GraphExec, ProfileAfterACancelledProfiledRunIsItsOwn) {
  Graph g;
  auto x = g.input("x", DType::F32, {2, 3});
  g.output("y", g.gelu(g.scale(x, 2.0f)));
  Plan plan(g, {.fuse = false});
  const std::map<std::string, Tensor> in{{"x", Tensor::zeros({2, 3}, DType::F32)}};
  std::vector<NodeProfile> profile;
  std::atomic<bool> cancel{true};
  EXPECT_THROW(plan.run(in, {.cancel = &cancel, .profile = &profile}), Error);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a stale mark would put this in entry 0
  plan.run(in, {.profile = &profile});
  ASSERT_EQ(profile.size(), 2u);
  EXPECT_LT(profile[0].microseconds, 300e3) << "the first node was timed from the cancelled run's mark";
}

// An add may write into its first operand when that operand dies there, but not while the other
// operand is a view of the same buffer (a transpose of it, a broadcast column of it): those bytes
// are still being read.
TEST(GraphExec, InPlaceNeverOverwritesAnOperandStillRead) {
  std::mt19937 rng(21);
  const Tensor in = ref::random_tensor({64, 64}, DType::F32, rng, -1.0, 1.0);
  const std::vector<float> v = in.to_float_vector();
  Graph g;
  auto x0 = g.input("x", DType::F32, {64, 64});
  auto x = g.scale(x0, 1.0f);  // an intermediate in the arena, last used by the add below
  g.output("sym", g.add(x, g.transpose(x, 0, 1)));
  auto y = g.scale(x0, 2.0f);
  g.output("col", g.sub(y, g.slice(y, 1, 0, 1)));  // y[i, j] - y[i, 0]
  for (bool poison : {false, true}) {
    Plan plan(g);
    const auto out = plan.run({{"x", in}}, {.poison_arena = poison});
    const std::vector<float> sym = out.at("sym").to_float_vector(), col = out.at("col").to_float_vector();
    for (int i = 0; i < 64; ++i)
      for (int j = 0; j < 64; ++j) {
        ASSERT_EQ(sym[i * 64 + j], v[i * 64 + j] + v[j * 64 + i]) << i << "," << j;
        ASSERT_EQ(col[i * 64 + j], 2.0f * v[i * 64 + j] - 2.0f * v[i * 64]) << i << "," << j;
      }
  }
}

// The outputs of a run view the plan's arena; fed back as the next run's input they must still be
// read as they were, not as the next run's intermediates overwrite them.
TEST(GraphExec, AnOutputFedBackAsInputIsReadIntact) {
  std::mt19937 rng(22);
  const Tensor x0 = ref::random_tensor({32, 32}, DType::F32, rng, -1.0, 1.0);
  Graph g;
  auto x = g.input("x", DType::F32, {32, 32});
  g.output("y", g.scale(g.contiguous(g.transpose(x, 0, 1)), 1.0f, 0.5f));
  for (bool poison : {false, true}) {
    Plan plan(g);
    const Tensor y1 = plan.run({{"x", x0}}, {.poison_arena = poison}).at("y");
    const std::vector<float> first = y1.to_float_vector();
    const std::vector<float> second = plan.run({{"x", y1}}, {.poison_arena = poison}).at("y").to_float_vector();
    for (int i = 0; i < 32; ++i)
      for (int j = 0; j < 32; ++j) ASSERT_EQ(second[i * 32 + j], first[j * 32 + i] + 0.5f) << i << "," << j;
  }
}

// A GEMM or convolution whose weight is not a constant (an input, or computed from one) keeps its
// address from run to run while its contents change: each run must read the weight it is given,
// not a packed copy cached from an earlier run (the CPU backend packs constant weights once). Both
// linear paths (a few rows: the weight-streaming kernel; many: oneDNN) and conv2d.
TEST(GraphExec, WeightsThatAreNotConstantsAreReadAfresh) {
  std::mt19937 rng(23);
  for (int rows : {1, 64}) {
    SCOPED_TRACE(rows);
    const Tensor x = ref::random_tensor({rows, 48}, DType::F32, rng, -1.0, 1.0);
    Graph g;
    auto xi = g.input("x", DType::F32, {rows, 48});
    auto wi = g.input("w", DType::F32, {40, 48});
    g.output("direct", g.linear(xi, wi));
    g.output("computed", g.linear(xi, g.scale(wi, 2.0f)));
    Plan plan(g);
    for (int run = 0; run < 3; ++run) {
      const Tensor w = ref::random_tensor({40, 48}, DType::F32, rng, -1.0, 1.0);
      const auto out = plan.run({{"x", x}, {"w", w}});
      const std::vector<float> xv = x.to_float_vector(), wv = w.to_float_vector();
      const std::vector<float> direct = out.at("direct").to_float_vector(), computed = out.at("computed").to_float_vector();
      for (int r = 0; r < rows; ++r)
        for (int n = 0; n < 40; ++n) {
          double want = 0;
          for (int k = 0; k < 48; ++k) want += double(xv[r * 48 + k]) * wv[n * 48 + k];
          ASSERT_NEAR(direct[r * 40 + n], want, 1e-4) << "run " << run << " row " << r << " col " << n;
          ASSERT_NEAR(computed[r * 40 + n], 2 * want, 2e-4) << "run " << run << " row " << r << " col " << n;
        }
    }
  }
  Graph g;
  auto xi = g.input("x", DType::F32, {1, 3, 8, 8});
  auto wi = g.input("w", DType::F32, {4, 3, 3, 3});
  g.output("y", g.conv2d(xi, wi, {}, {.padding = {1, 1}}));
  Plan plan(g);
  const Tensor x = ref::random_tensor({1, 3, 8, 8}, DType::F32, rng, -1.0, 1.0);
  const Tensor w1 = ref::random_tensor({4, 3, 3, 3}, DType::F32, rng, -1.0, 1.0);
  const std::vector<float> y1 = plan.run({{"x", x}, {"w", w1}}).at("y").to_float_vector();
  Tensor w2 = w1.clone();
  for (std::int64_t i = 0; i < w2.numel(); ++i) w2.data_ptr<float>()[i] *= -3.0f;
  const std::vector<float> y2 = plan.run({{"x", x}, {"w", w2}}).at("y").to_float_vector();
  for (std::size_t i = 0; i < y1.size(); ++i) ASSERT_NEAR(y2[i], -3.0f * y1[i], 1e-4 * (1 + std::abs(y1[i]))) << i;
}

// Fusing an activation into linear changes nothing, NaN included: relu keeps NaN (like torch.relu,
// and the standalone activation), where oneDNN's post-op and a max with the operands the other way
// round turned it into 0. Few rows (the weight-streaming kernel) and many (oneDNN), f32 and bf16.
TEST(GraphExec, FusedLinearReluKeepsNaN) {
  std::mt19937 rng(31);
  for (DType dt : {DType::F32, DType::BF16})
    for (int rows : {1, 64}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " rows " + std::to_string(rows));
      Graph g;
      auto x = g.input("x", DType::F32, {rows, 40});
      auto w = g.constant(ref::random_tensor({24, 40}, dt, rng, -1.0, 1.0));
      auto b = g.constant(ref::random_tensor({24}, DType::F32, rng, -1.0, 1.0));
      g.output("y", g.relu(g.linear(x, w, b)));
      Tensor in = ref::random_tensor({rows, 40}, DType::F32, rng, -1.0, 1.0);
      in.data_ptr<float>()[3] = std::numeric_limits<float>::quiet_NaN();  // row 0
      Plan fused(g, {.fuse = true}), plain(g, {.fuse = false});
      const std::vector<float> a = fused.run({{"x", in}}).at("y").to_float_vector();
      const std::vector<float> c = plain.run({{"x", in}}).at("y").to_float_vector();
      for (int n = 0; n < 24; ++n) {
        EXPECT_TRUE(std::isnan(a[static_cast<std::size_t>(n)])) << "fused, column " << n;
        EXPECT_TRUE(std::isnan(c[static_cast<std::size_t>(n)])) << "unfused, column " << n;
      }
      for (std::size_t i = 24; i < a.size(); ++i) ASSERT_EQ(a[i], c[i]) << i;
    }
}
