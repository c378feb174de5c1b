// What recording a plan as a CUDA graph saves (PlanOptions::cuda_graph): a decode-step-sized
// chain of small ops run node by node (one launch each, host dispatch in between) against one
// graph replay. Two chains:
// - `gpt2_step`: a GPT-2-small decode step at batch 1 (12 layers: layer norms, QKV/proj/MLP
//   linears, kv_cache_write + decode_attention over a 32-token paged cache, cross-attention over 197
//   encoder states, residual adds; ~200 kernels), f32 and f16;
// - `tiny_chain`: the same number of tiny ops (64-wide linear + GELU + add + layer norm), where the
//   launch and dispatch cost is all there is.
// Wall-clock time per run() including the stream synchronisation; µs/node = time / kernel nodes.
// Node-by-node cases also report us_<op>: a profiled run (RunOptions::profile: device time per
// node from CUDA events) summed per op kind, and us_all_nodes, their sum.
// Graph cases run with and without programmatic dependent launch (`pdl`, kernels/cuda/pdl.cuh) and
// with linear's decode-sized rows on cuBLASLt or on the GEMV kernels (`gemv`), which take part in
// PDL where cuBLASLt's kernels cannot.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>

#include "encore/core/tensor.h"
#include "encore/decode/kv_cache.h"
#include "encore/graph/plan.h"

#if defined(ENCORE_HAVE_CUDA)
#include "backends/cuda/cublas_gemm.h"
#include "backends/cuda/runtime.h"
#endif

namespace {

using namespace encore;

#if defined(ENCORE_HAVE_CUDA)

Tensor random_device(const Shape& shape, DType dt, std::mt19937& rng, float scale) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::normal_distribution<float> dist(0.0f, scale);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data_ptr<float>()[i] = dist(rng);
  return t.to(dt).to(Device::cuda(0));
}

Tensor ones(std::int64_t n, DType dt) {
  Tensor t = Tensor::empty({n}, DType::F32);
  t.fill(1.0);
  return t.to(dt).to(Device::cuda(0));
}

struct Chain {
  Graph graph;
  std::map<std::string, Tensor> inputs;
  std::unique_ptr<KvCache> cache;
};

Chain gpt2_step(DType dt, std::mt19937& rng) {
  const std::int64_t d = 768, layers = 12, enc_tokens = 197;
  const int heads = 12;
  const Device dev = Device::cuda(0);
  const LinearAttrs conv1d{.layout = WeightLayout::in_out};
  Chain c;
  c.cache = std::make_unique<KvCache>(KvCacheConfig{.num_layers = static_cast<int>(layers), .batch = 1,
                                                    .num_kv_heads = heads, .head_dim = 64, .max_length = 64,
                                                    .block_size = 16, .dtype = dt, .device = dev});
  c.cache->reserve(32);
  c.cache->advance(32);
  Graph& g = c.graph;
  auto w = [&](const Shape& s) { return g.constant(random_device(s, dt, rng, 0.02f)); };
  auto one = [&](std::int64_t n) { return g.constant(ones(n, dt)); };
  Value h = g.input("h", dt, {1, 1, d});
  Value table = g.constant(c.cache->block_table()), lengths = g.constant(c.cache->lengths());
  for (int l = 0; l < layers; ++l) {
    Value qkv = g.linear(g.layer_norm(h, one(d), w({d})), w({d, 3 * d}), w({3 * d}), conv1d);
    Value kc = g.constant(c.cache->keys(l)), vc = g.constant(c.cache->values(l));
    g.kv_cache_write(g.slice(qkv, -1, d, 2 * d), g.slice(qkv, -1, 2 * d, 3 * d), kc, vc, table, lengths);
    Value a = g.decode_attention(g.slice(qkv, -1, 0, d), kc, vc, table, lengths, {.num_heads = heads});
    h = g.add(h, g.linear(a, w({d, d}), w({d}), conv1d));
    Value q = g.linear(g.layer_norm(h, one(d), w({d})), w({d, d}), w({d}), conv1d);
    Value kv = w({1, enc_tokens, 2 * d});
    Value x = g.attention(q, g.slice(kv, -1, 0, d), g.slice(kv, -1, d, 2 * d), {}, {.num_heads = heads});
    h = g.add(h, g.linear(x, w({d, d}), w({d}), conv1d));
    Value m = g.linear(g.layer_norm(h, one(d), w({d})), w({d, 4 * d}), w({4 * d}), conv1d);
    h = g.add(h, g.linear(g.activation(m, Activation::gelu_tanh), w({4 * d, d}), w({d}), conv1d));
  }
  g.output("h", g.layer_norm(h, one(d), w({d})));
  c.inputs["h"] = random_device({1, 1, d}, dt, rng, 1.0f);
  return c;
}

Chain tiny_chain(DType dt, std::mt19937& rng) {
  const std::int64_t d = 64;
  Chain c;
  Graph& g = c.graph;
  auto w = [&](const Shape& s) { return g.constant(random_device(s, dt, rng, 0.1f)); };
  Value h = g.input("h", dt, {1, 1, d});
  for (int i = 0; i < 48; ++i) {
    Value m = g.activation(g.linear(h, w({d, d}), w({d}), {}), Activation::gelu);
    h = g.layer_norm(g.add(h, m), g.constant(ones(d, dt)), w({d}));
  }
  g.output("h", h);
  c.inputs["h"] = random_device({1, 1, d}, dt, rng, 1.0f);
  return c;
}

// Args: chain (0 gpt2_step, 1 tiny_chain), dtype (0 f32, 1 f16), cuda_graph (0/1), pdl (0/1), gemv (0/1).
void BM_PlanRun(benchmark::State& state) {
  if (cuda::CudaRuntime::device_count() == 0) {
    state.SkipWithError("no CUDA GPU present");
    return;
  }
  const DType dt = state.range(1) == 0 ? DType::F32 : DType::F16;
  const bool record = state.range(2) != 0, pdl = state.range(3) != 0, gemv = state.range(4) != 0;
  cuda::CudaRuntime& rt = cuda::CudaRuntime::get(Device::cuda(0));
  if (pdl && rt.sm() < 90) {
    state.SkipWithError("programmatic dependent launch needs sm_90");
    return;
  }
  const bool saved_pdl = rt.programmatic_launch();
  const cuda::GemvPolicy saved_gemv = cuda::gemv_policy();
  rt.set_programmatic_launch(pdl);
  cuda::set_gemv_policy(gemv ? cuda::GemvPolicy::always : cuda::GemvPolicy::never);
  std::mt19937 rng(3);
  Chain c = state.range(0) == 0 ? gpt2_step(dt, rng) : tiny_chain(dt, rng);
  // No fusion: keep the node count the ops above describe (fusion is measured elsewhere).
  Plan plan(c.graph, {.device = Device::cuda(0), .fuse = false, .cuda_graph = record});
  for (int i = 0; i < 3; ++i) plan.run(c.inputs);  // eager, record, replay
  rt.synchronize();
  for (auto _ : state) {
    plan.run(c.inputs);
    rt.synchronize();
  }
  if (!record) {  // where the time goes: a profiled run, summed per op kind (launch latency included)
    std::vector<NodeProfile> profile;
    RunOptions options;
    options.profile = &profile;
    plan.run(c.inputs, options);
    std::map<std::string, double> per_kind;
    for (const NodeProfile& n : profile) {
      per_kind[std::string("us_") + op_name(n.kind)] += n.microseconds;
      per_kind["us_all_nodes"] += n.microseconds;  // device time without the host's launch gaps
    }
    for (const auto& [name, us] : per_kind) state.counters[name] = us;
  }
  std::int64_t kernels = 0;
  for (const Node& n : plan.optimised_graph().nodes()) kernels += n.kind == OpKind::view ? 0 : 1;
  state.counters["nodes"] = static_cast<double>(kernels);
  state.counters["us_per_node"] = benchmark::Counter(static_cast<double>(kernels) * 1e-6,
                                                      benchmark::Counter::kIsIterationInvariantRate |
                                                          benchmark::Counter::kInvert);
  state.SetLabel(std::string(state.range(0) == 0 ? "gpt2_step " : "tiny_chain ") + dtype_name(dt) +
                 (record ? " cuda-graph" : " node-by-node") + (pdl ? " pdl" : "") + (gemv ? " gemv" : " cublaslt") +
                 (plan.replays_cuda_graph() ? "" : (record ? " (NOT RECORDED)" : "")));
  rt.set_programmatic_launch(saved_pdl);
  cuda::set_gemv_policy(saved_gemv);
}

#else

void BM_PlanRun(benchmark::State& state) { state.SkipWithError("built without the CUDA backend"); }

#endif

void Chains(benchmark::internal::Benchmark* b) {
  for (std::int64_t chain : {0, 1})
    for (std::int64_t dt : {0, 1}) {
      b->Args({chain, dt, 0, 0, 0});
      for (std::int64_t gemv : {0, 1})
        for (std::int64_t pdl : {0, 1}) b->Args({chain, dt, 1, pdl, gemv});
    }
  b->ArgNames({"chain", "f16", "graph", "pdl", "gemv"});
}

BENCHMARK(BM_PlanRun)->Apply(Chains)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
