// Plans recorded as CUDA graphs (PlanOptions::cuda_graph): replays equal node-by-node runs of the
// same graph for changing inputs, a decode step over a growing KV cache replays correctly as the
// lengths (read from device memory) grow, scratch blocks a recording addresses are not handed out
// again while the plan lives, cancellation still works before a replay, and programmatic dependent
// launch changes no bits.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cuda/cublas_gemm.h"
#include "cuda_test_util.h"
#include "encore/core/error.h"
#include "encore/decode/kv_cache.h"
#include "encore/graph/plan.h"

namespace encore {
namespace {

using cuda::test::download;

Tensor random_host(const Shape& shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::uniform_real_distribution<float> dist(-scale, scale);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data_ptr<float>()[i] = dist(rng);
  return t;
}

Tensor random_ids(const Shape& shape, int vocab, std::mt19937& rng) {
  Tensor t = Tensor::empty(shape, DType::I32);
  std::uniform_int_distribution<int> dist(0, vocab - 1);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data_ptr<std::int32_t>()[i] = dist(rng);
  return t;
}

void expect_bitwise_equal(const Tensor& a, const Tensor& b) {
  const Tensor x = download(a), y = download(b);
  ASSERT_EQ(x.shape(), y.shape());
  ASSERT_EQ(x.nbytes(), y.nbytes());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.nbytes()), 0);
}

// A decode-step-sized chain of small ops: embedding, linear + GELU, residual, layer norm, softmax.
Graph small_op_chain(int vocab, int width, int rows, std::mt19937& rng) {
  Graph g;
  const Device dev = cuda::test::runtime().device();
  auto k = [&](const Shape& s) { return g.constant(random_host(s, rng, 0.5f).to(dev)); };
  Value ids = g.input("ids", DType::I32, {rows, 1});
  Value x = g.input("x", DType::F32, {rows, 1, width});
  Value h = g.add(g.embedding(k({vocab, width}), ids), x);
  for (int i = 0; i < 3; ++i) {
    Value m = g.activation(g.linear(h, k({width, width}), k({width}), {}), Activation::gelu_tanh);
    h = g.layer_norm(g.add(h, m), k({width}), k({width}), {.eps = 1e-5f});
  }
  g.output("probs", g.softmax(h, -1));
  g.output("h", h);
  return g;
}

TEST(CudaGraphPlan, ReplaysEqualNodeByNodeRuns) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(11);
  const int vocab = 37, width = 48, rows = 3;
  const Graph g = small_op_chain(vocab, width, rows, rng);
  const Device dev = cuda::test::runtime().device();
  Plan eager(g, {.device = dev});
  Plan graphed(g, {.device = dev, .cuda_graph = true});
  for (int run = 0; run < 5; ++run) {
    const Tensor ids = random_ids({rows, 1}, vocab, rng), x = random_host({rows, 1, width}, rng);
    const auto want = eager.run({{"ids", ids.to(dev)}, {"x", x.to(dev)}});
    // Host inputs are accepted by a recording plan: they are copied into its own buffers.
    const auto got = graphed.run({{"ids", ids}, {"x", run % 2 == 0 ? x : x.to(dev)}});
    EXPECT_EQ(graphed.replays_cuda_graph(), run >= 1) << "run " << run;
    for (const char* name : {"probs", "h"}) {
      SCOPED_TRACE(name);
      expect_bitwise_equal(got.at(name), want.at(name));
    }
  }
  EXPECT_FALSE(eager.replays_cuda_graph());
}

// A profiled run of a replaying plan goes node by node: one device time per kernel node, and the
// same results.
TEST(CudaGraphPlan, ProfiledRunsTimeEveryNode) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(16);
  const Graph g = small_op_chain(11, 16, 2, rng);
  Plan plan(g, {.device = cuda::test::runtime().device(), .cuda_graph = true});
  const std::map<std::string, Tensor> in{{"ids", random_ids({2, 1}, 11, rng)}, {"x", random_host({2, 1, 16}, rng)}};
  plan.run(in);
  const Tensor want = download(plan.run(in).at("h"));
  ASSERT_TRUE(plan.replays_cuda_graph());
  std::vector<NodeProfile> profile;
  RunOptions options;
  options.profile = &profile;
  const Tensor got = download(plan.run(in, options).at("h"));
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.nbytes()), 0);
  std::size_t kernels = 0;
  for (const Node& n : plan.optimised_graph().nodes()) kernels += n.kind == OpKind::view ? 0 : 1;
  ASSERT_EQ(profile.size(), kernels);
  for (const NodeProfile& n : profile) {
    EXPECT_NE(n.kind, OpKind::view);
    EXPECT_GT(n.microseconds, 0.0);
  }
}

TEST(CudaGraphPlan, HostInputsNeedRecording) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(12);
  const Graph g = small_op_chain(11, 16, 2, rng);
  Plan eager(g, {.device = cuda::test::runtime().device()});
  EXPECT_FALSE(eager.accepts_host_inputs());
  EXPECT_TRUE(Plan(g, {.device = cuda::test::runtime().device(), .cuda_graph = true}).accepts_host_inputs());
  try {
    eager.run({{"ids", random_ids({2, 1}, 11, rng)}, {"x", random_host({2, 1, 16}, rng)}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("is on cpu, the plan runs on cuda:0"), std::string::npos) << e.what();
  }
}

// A strided view already on the GPU is gathered on the device (eager plans and recorded CUDA
// graphs alike) and gives what its contiguous copy gives. An output fed back as the next input is
// read intact.
TEST(CudaGraphPlan, DeviceInputViewsAreGatheredAndOutputsMayBeFedBack) {
  ENCORE_REQUIRE_GPU();
  const Device dev = cuda::test::runtime().device();
  std::mt19937 rng(15);
  Graph g;
  Value x = g.input("x", DType::F32, {16, 8});
  g.output("y", g.scale(g.contiguous(g.transpose(x, 0, 1)), 1.0f, 0.5f));  // [8, 16]: not square, so
  Graph sq;                                                                 // a square one for feeding back
  Value s = sq.input("x", DType::F32, {8, 8});
  sq.output("y", sq.scale(sq.contiguous(sq.transpose(s, 0, 1)), 1.0f, 0.5f));
  const Tensor wide_host = random_host({8, 16}, rng);
  const std::vector<float> wide = wide_host.to_float_vector();
  const Tensor view = wide_host.to(dev).transpose(0, 1);  // [16, 8], strides {1, 16}
  ASSERT_FALSE(view.is_contiguous());
  for (const bool record : {false, true}) {
    SCOPED_TRACE(record ? "CUDA graph" : "eager");
    Plan plan(g, {.device = dev, .cuda_graph = record});
    for (int run = 0; run < 3; ++run) {  // a recorded plan records on its second run, replays after
      const std::vector<float> y = plan.run({{"x", view}}).at("y").to(Device::cpu()).to_float_vector();
      ASSERT_EQ(y.size(), 128u);
      for (int i = 0; i < 8; ++i)  // y = x^T + 0.5 where x = wide^T, so y = wide + 0.5
        for (int j = 0; j < 16; ++j) ASSERT_EQ(y[i * 16 + j], wide[i * 16 + j] + 0.5f) << i << "," << j;
    }
  }
  Plan square(sq, {.device = dev});
  const Tensor x0 = random_host({8, 8}, rng);
  const Tensor y1 = square.run({{"x", x0.to(dev)}}).at("y");
  const std::vector<float> first = y1.to(Device::cpu()).to_float_vector();
  const std::vector<float> second = square.run({{"x", y1}}).at("y").to(Device::cpu()).to_float_vector();
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) ASSERT_EQ(second[i * 8 + j], first[j * 8 + i] + 0.5f) << i << "," << j;
}

// A recorded plan copies its inputs; an output that is an input is the plan's copy. Given back as
// a different input of the next run, it is read before the new inputs overwrite the copies.
TEST(CudaGraphPlan, AnInputOutputFedBackAsAnotherInputKeepsItsValue) {
  ENCORE_REQUIRE_GPU();
  const Device dev = cuda::test::runtime().device();
  Graph g;
  Value x = g.input("x", DType::F32, {4}), y = g.input("y", DType::F32, {4});
  g.output("x_out", x);
  g.output("sum", g.add(x, y));
  Plan plan(g, {.device = dev, .cuda_graph = true});
  auto vec = [](std::vector<float> v) { return Tensor::from_vector(v, {4}); };
  std::map<std::string, Tensor> out;
  for (int run = 0; run < 3; ++run)  // through recording to replay
    out = plan.run({{"x", vec({1, 2, 3, 4})}, {"y", vec({0, 0, 0, 0})}});
  const Tensor x_out = out.at("x_out");
  out = plan.run({{"x", vec({10, 20, 30, 40})}, {"y", x_out}});  // y = the previous x
  EXPECT_EQ(out.at("sum").to(Device::cpu()).to_float_vector(), (std::vector<float>{11, 22, 33, 44}));
}

// linear + relu keeps NaN on the GPU as on the CPU (GraphExec.FusedLinearReluKeepsNaN), fused or
// not, through the one-row GEMV and through cuBLASLt.
TEST(CudaGraphPlan, FusedLinearReluKeepsNaN) {
  ENCORE_REQUIRE_GPU();
  const Device dev = cuda::test::runtime().device();
  std::mt19937 rng(31);
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int rows : {1, 64}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " rows " + std::to_string(rows));
      Graph g;
      auto x = g.input("x", dt, {rows, 40});
      auto w = g.constant(random_host({24, 40}, rng).to(dt).to(dev));
      auto b = g.constant(random_host({24}, rng).to(dt).to(dev));
      g.output("y", g.relu(g.linear(x, w, b)));
      Tensor in = random_host({rows, 40}, rng);
      in.data_ptr<float>()[3] = std::numeric_limits<float>::quiet_NaN();  // row 0
      const Tensor in_dev = in.to(dt).to(dev);
      Plan fused(g, {.device = dev, .fuse = true}), plain(g, {.device = dev, .fuse = false});
      const std::vector<float> a = fused.run({{"x", in_dev}}).at("y").to(Device::cpu()).to_float_vector();
      const std::vector<float> c = plain.run({{"x", in_dev}}).at("y").to(Device::cpu()).to_float_vector();
      for (int n = 0; n < 24; ++n) {
        EXPECT_TRUE(std::isnan(a[static_cast<std::size_t>(n)])) << "fused, column " << n;
        EXPECT_TRUE(std::isnan(c[static_cast<std::size_t>(n)])) << "unfused, column " << n;
      }
      for (std::size_t i = 24; i < a.size(); ++i) {
        EXPECT_FALSE(std::isnan(a[i])) << i;
        EXPECT_GE(a[i], 0.0f) << i;
      }
    }
}

TEST(CudaGraphPlan, CancelledBeforeReplay) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(13);
  const Graph g = small_op_chain(11, 16, 2, rng);
  Plan plan(g, {.device = cuda::test::runtime().device(), .cuda_graph = true});
  const std::map<std::string, Tensor> in{{"ids", random_ids({2, 1}, 11, rng)}, {"x", random_host({2, 1, 16}, rng)}};
  plan.run(in);
  plan.run(in);
  ASSERT_TRUE(plan.replays_cuda_graph());
  std::atomic<bool> cancel{true};
  try {
    plan.run(in, {.cancel = &cancel});
    FAIL() << "expected Error(cancelled)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::cancelled);
  }
}

// A matmul over every second column (no dense matrix orientation) makes the GEMM densify the
// operand into a scratch block. The recording addresses that block; if it went back to the cache, the allocations below
// would take it and overwrite it with garbage before the replay.
TEST(CudaGraphPlan, ScratchOfARecordingIsNotReused) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(14);
  const Device dev = cuda::test::runtime().device();
  Graph g;
  Value a = g.input("a", DType::F32, {24, 80});
  Value w = g.constant(random_host({40, 32}, rng).to(dev));
  g.output("y", g.matmul(g.slice(a, 1, 0, 80, 2), w));
  Plan eager(g, {.device = dev});
  Plan graphed(g, {.device = dev, .cuda_graph = true});
  const Tensor a0 = random_host({24, 80}, rng);
  graphed.run({{"a", a0}});
  graphed.run({{"a", a0}});
  ASSERT_TRUE(graphed.replays_cuda_graph());
  // Allocations of the scratch's own size class (the dense copy of the [24, 40] f32 view, 3840
  // bytes): the only ones that could be handed the scratch block if the recording had freed it.
  std::vector<Tensor> garbage;
  for (int i = 0; i < 64; ++i) {
    garbage.push_back(Tensor::empty({24 * 40 + i}, DType::F32, dev));
    cuda::test::runtime().memset(garbage.back().data(), 0x7F, garbage.back().nbytes());
  }
  const Tensor a1 = random_host({24, 80}, rng);
  const auto got = graphed.run({{"a", a1}});
  const auto want = eager.run({{"a", a1.to(dev)}});
  expect_bitwise_equal(got.at("y"), want.at("y"));
}

// A block table or lengths tensor on the host, bound as a constant of a CUDA plan, would be copied
// once when the plan is built and never see the caller's updates: refused by name, as caches are.
TEST(CudaGraphPlan, DecodeBookkeepingOnAnotherDeviceIsRefused) {
  ENCORE_REQUIRE_GPU();
  const Device dev = cuda::test::runtime().device();
  KvCache cache({.num_layers = 1, .batch = 2, .num_kv_heads = 2, .head_dim = 16, .max_length = 32,
                 .block_size = 16, .dtype = DType::F32, .device = dev});
  for (const bool host_table : {true, false}) {
    Graph g;
    Value q = g.input("q", DType::F32, {2, 1, 32});
    Value kc = g.constant(cache.keys(0)), vc = g.constant(cache.values(0));
    Value table = g.constant(host_table ? cache.block_table().to(Device::cpu()) : cache.block_table());
    Value lengths = g.constant(host_table ? cache.lengths() : cache.lengths().to(Device::cpu()));
    g.output("y", g.decode_attention(q, kc, vc, table, lengths, {.num_heads = 2}));
    try {
      Plan plan(g, {.device = dev});
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("block table or lengths tensor of decode_attention"), std::string::npos)
          << e.what();
    }
  }
}

// One decoder-like step over a paged cache: write the new key/value, attend over the cache. The
// recorded step reads lengths and the block table from device memory, so replays keep working as
// the cache grows across blocks.
TEST(CudaGraphPlan, DecodeStepReplaysOverAGrowingCache) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(15);
  const Device dev = cuda::test::runtime().device();
  const int rows = 3, heads = 4, dim = 64, width = heads * dim;
  for (DType dt : {DType::F32, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    KvCacheConfig cfg{.num_layers = 1, .batch = rows, .num_kv_heads = heads, .head_dim = dim, .max_length = 80,
                      .block_size = 16, .dtype = dt, .device = dev};
    KvCache eager_cache(cfg), graph_cache(cfg);
    const Tensor w_qkv = random_host({width, 3 * width}, rng, 0.1f).to(dt).to(dev);
    auto step_graph = [&](const KvCache& cache) {
      Graph g;
      Value x = g.input("x", dt, {rows, 1, width});
      Value qkv = g.linear(x, g.constant(w_qkv), {}, {.layout = WeightLayout::in_out});
      Value kc = g.constant(cache.keys(0)), vc = g.constant(cache.values(0));
      Value table = g.constant(cache.block_table()), lengths = g.constant(cache.lengths());
      g.kv_cache_write(g.slice(qkv, -1, width, 2 * width), g.slice(qkv, -1, 2 * width, 3 * width), kc, vc, table, lengths);
      g.output("y", g.decode_attention(g.slice(qkv, -1, 0, width), kc, vc, table, lengths, {.num_heads = heads}));
      return g;
    };
    Plan eager(step_graph(eager_cache), {.device = dev});
    Plan graphed(step_graph(graph_cache), {.device = dev, .cuda_graph = true});
    for (int t = 0; t < 40; ++t) {  // crosses two block boundaries
      const Tensor x = random_host({rows, 1, width}, rng).to(dt).to(dev);
      for (KvCache* c : {&eager_cache, &graph_cache}) {
        c->reserve(1);
        c->advance(1);
      }
      const auto want = eager.run({{"x", x}});
      const auto got = graphed.run({{"x", x}});
      expect_bitwise_equal(got.at("y"), want.at("y"));
      if (::testing::Test::HasFailure()) FAIL() << "step " << t;
    }
    EXPECT_TRUE(graphed.replays_cuda_graph());
  }
}

// Programmatic dependent launch (kernels/cuda/pdl.cuh) starts a kernel before its predecessor has
// finished; a kernel that touched memory before waiting would race with it, and the memory planner
// reuses buffers between them. A decoder-like chain (layer norms, GEMV linears with split-K
// partials, GELU, residual adds, kv_cache_write then decode_attention over a paged cache, cross
// attention, softmax) gives the same bits with PDL as without it, node by node and replayed, in f32
// and f16, as the cache grows across a block boundary.
TEST(CudaGraphPlan, ProgrammaticLaunchChangesNoBits) {
  ENCORE_REQUIRE_GPU();
  cuda::CudaRuntime& rt = cuda::test::runtime();
  struct Restore {
    cuda::CudaRuntime& rt;
    bool pdl = rt.programmatic_launch();
    cuda::GemvPolicy gemv = cuda::gemv_policy();
    ~Restore() {
      rt.set_programmatic_launch(pdl);
      cuda::set_gemv_policy(gemv);
    }
  } restore{rt};
  cuda::set_gemv_policy(cuda::GemvPolicy::always);
  rt.set_programmatic_launch(true);
  EXPECT_EQ(rt.programmatic_launch(), rt.sm() >= 90);  // on wherever the device has it

  std::mt19937 rng(17);
  const Device dev = rt.device();
  const int rows = 3, heads = 2, dim = 64, width = heads * dim, enc = 37;
  for (DType dt : {DType::F32, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    KvCache cache({.num_layers = 4, .batch = rows, .num_kv_heads = heads, .head_dim = dim, .max_length = 32,
                   .block_size = 16, .dtype = dt, .device = dev});
    Graph g;
    auto k = [&](const Shape& s, float scale) { return g.constant(random_host(s, rng, scale).to(dt).to(dev)); };
    const LinearAttrs conv1d{.layout = WeightLayout::in_out};
    Value h = g.input("x", dt, {rows, 1, width});
    Value table = g.constant(cache.block_table()), lengths = g.constant(cache.lengths());
    for (int l = 0; l < 4; ++l) {
      auto norm = [&](Value v) { return g.layer_norm(v, k({width}, 1.0f), k({width}, 0.1f), {.eps = 1e-5f}); };
      Value qkv = g.linear(norm(h), k({width, 3 * width}, 0.1f), k({3 * width}, 0.1f), conv1d);
      Value kc = g.constant(cache.keys(l)), vc = g.constant(cache.values(l));
      g.kv_cache_write(g.slice(qkv, -1, width, 2 * width), g.slice(qkv, -1, 2 * width, 3 * width), kc, vc, table,
                       lengths);
      Value a = g.decode_attention(g.slice(qkv, -1, 0, width), kc, vc, table, lengths, {.num_heads = heads});
      h = g.add(h, g.linear(a, k({width, width}, 0.1f), k({width}, 0.1f)));
      Value q = g.reshape(g.linear(norm(h), k({width, width}, 0.1f), {}), {1, rows, width});
      Value kv = k({1, enc, 2 * width}, 1.0f);
      Value x = g.attention(q, g.slice(kv, -1, 0, width), g.slice(kv, -1, width, 2 * width), {}, {.num_heads = heads});
      h = g.add(h, g.linear(g.reshape(x, {rows, 1, width}), k({width, width}, 0.1f), k({width}, 0.1f)));
      Value m = g.activation(g.linear(norm(h), k({2 * width, width}, 0.1f), k({2 * width}, 0.1f)), Activation::gelu_tanh);
      h = g.add(h, g.linear(m, k({2 * width, width}, 0.1f), {}, conv1d));
    }
    g.output("probs", g.softmax(h, -1));
    g.output("h", h);
    Plan eager(g, {.device = dev});
    Plan graphed(g, {.device = dev, .cuda_graph = true});
    for (int t = 0; t < 20; ++t) {  // every variant writes the same cache slot with the same values
      cache.reserve(1);
      cache.advance(1);
      const Tensor x = random_host({rows, 1, width}, rng).to(dt).to(dev);
      rt.set_programmatic_launch(false);
      const auto want = eager.run({{"x", x}});
      rt.set_programmatic_launch(true);
      const auto node_by_node = eager.run({{"x", x}});
      const auto replayed = graphed.run({{"x", x}});
      for (const char* name : {"probs", "h"}) {
        SCOPED_TRACE(name);
        expect_bitwise_equal(node_by_node.at(name), want.at(name));
        expect_bitwise_equal(replayed.at(name), want.at(name));
      }
      if (::testing::Test::HasFailure()) FAIL() << "step " << t;
    }
    EXPECT_TRUE(graphed.replays_cuda_graph());
  }
}

}  // namespace
}  // namespace encore
