// What the graph layer costs per forward: building and planning a GPT-2-small decode step
// (12 layers, self-attention over a cache of past keys/values, cross-attention over 197 encoder
// states, MLP), the graph model code builds once per generated token. Target: well under 1 ms.
#include <benchmark/benchmark.h>

#include <random>

#include "encore/graph/plan.h"

using namespace encore;

namespace {

struct LayerWeights {
  Tensor ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, lnx_w, lnx_b, q_w, q_b, kv_w, kv_b, xproj_w, xproj_b, ln2_w,
      ln2_b, fc_w, fc_b, fc2_w, fc2_b;
};

// Small weights of the right shapes; their values do not matter for build/plan cost.
LayerWeights layer(std::int64_t d) {
  auto t = [](const Shape& s) { return Tensor::zeros(s, DType::F32); };
  return {t({d}), t({d}), t({d, 3 * d}), t({3 * d}), t({d, d}), t({d}), t({d}), t({d}), t({d, d}), t({d}),
          t({d, 2 * d}), t({2 * d}), t({d, d}), t({d}), t({d}), t({d}), t({d, 4 * d}), t({4 * d}), t({4 * d, d}),
          t({d})};
}

Graph decode_step(const std::vector<LayerWeights>& layers, std::int64_t past) {
  const std::int64_t d = 768;
  const LinearAttrs conv1d{.layout = WeightLayout::in_out};
  Graph g;
  Value x = g.input("h", DType::F32, {1, 1, d});
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerWeights& w = layers[i];
    const std::string n = std::to_string(i);
    auto c = [&g](const Tensor& t) { return g.constant(t); };
    Value h = g.layer_norm(x, c(w.ln1_w), c(w.ln1_b));
    Value qkv = g.linear(h, c(w.attn_w), c(w.attn_b), conv1d);
    const Value ks[] = {g.input("past_k" + n, DType::F32, {1, past, d}), g.slice(qkv, -1, d, 2 * d)};
    const Value vs[] = {g.input("past_v" + n, DType::F32, {1, past, d}), g.slice(qkv, -1, 2 * d, 3 * d)};
    Value a = g.attention(g.slice(qkv, -1, 0, d), g.concat(ks, 1), g.concat(vs, 1), {}, {.num_heads = 12, .causal = true});
    x = g.add(x, g.linear(a, c(w.proj_w), c(w.proj_b), conv1d));
    Value hx = g.layer_norm(x, c(w.lnx_w), c(w.lnx_b));
    Value enc_kv = g.input("enc_kv" + n, DType::F32, {1, 197, 2 * d});
    Value xa = g.attention(g.linear(hx, c(w.q_w), c(w.q_b), conv1d), g.slice(enc_kv, -1, 0, d),
                           g.slice(enc_kv, -1, d, 2 * d), {}, {.num_heads = 12});
    x = g.add(x, g.linear(xa, c(w.xproj_w), c(w.xproj_b), conv1d));
    Value m = g.layer_norm(x, c(w.ln2_w), c(w.ln2_b));
    x = g.add(x, g.linear(g.gelu_tanh(g.linear(m, c(w.fc_w), c(w.fc_b), conv1d)), c(w.fc2_w), c(w.fc2_b), conv1d));
  }
  g.output("h_out", x);
  return g;
}

void BM_BuildGpt2DecodeStep(benchmark::State& state) {
  const std::vector<LayerWeights> layers(12, layer(768));
  for (auto _ : state) benchmark::DoNotOptimize(decode_step(layers, state.range(0)));
  state.counters["nodes"] = static_cast<double>(decode_step(layers, state.range(0)).nodes().size());
}
BENCHMARK(BM_BuildGpt2DecodeStep)->Arg(15)->Unit(benchmark::kMicrosecond);

void BM_BuildAndPlanGpt2DecodeStep(benchmark::State& state) {
  const std::vector<LayerWeights> layers(12, layer(768));
  std::size_t peak = 0;
  for (auto _ : state) {
    Graph g = decode_step(layers, state.range(0));
    Plan plan(g);
    peak = plan.peak_bytes();
    benchmark::DoNotOptimize(peak);
  }
  state.counters["peak_kB"] = static_cast<double>(peak) / 1024.0;
}
BENCHMARK(BM_BuildAndPlanGpt2DecodeStep)->Arg(15)->Unit(benchmark::kMicrosecond);

}  // namespace
