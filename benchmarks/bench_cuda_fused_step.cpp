// One GPT-2-small decode step (ViT-GPT2's decoder, random weights, f16) on the H200: the fused
// decoder step (one persistent kernel, backends/cuda/fused_decoder_step.h) against the recorded
// step graph it replaces (ENCORE_CUDA_FUSED_STEP=0), wall clock per step as generation sees it
// (token upload, the step, the download of the greedy choices or of the log-probs).
//
// Floor: a step reads every decoder weight and the LM head once (~250 MB in f16); the counter
// `weights_GBps` is that over the measured time. After the runs, one profiled fused step prints
// where its time goes: per phase kind (summed over layers) the slowest CTA's work between barriers
// and the barrier itself (last arrival to first departure).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>

#include "backends/cuda/fused_decoder_step.h"
#include "encore/core/build_info.h"
#include "models/vit_gpt2_internal.h"
#include "models/vit_gpt2_session.h"

namespace {

using namespace encore;
using namespace encore::vitgpt2;

constexpr int kMaxLength = 64;  // the cache is emptied every kMaxLength - 1 steps (untimed)

Tensor random(const Shape& shape, float scale, std::mt19937& rng) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::normal_distribution<float> dist(0.0f, scale);
  float* p = t.data_ptr<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t.to(DType::F16).to(Device::cuda(0));
}

Tensor constant(const Shape& shape, float value) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::fill_n(t.data_ptr<float>(), t.numel(), value);
  return t.to(DType::F16).to(Device::cuda(0));
}

struct Model {
  VitGpt2Config config;  // ViT-B/16 + GPT-2 small
  Weights weights;
  Tensor states;         // [1, 197, 768] encoder states
  Model() {
    std::mt19937 rng(1234);
    const std::int64_t d = config.dec_hidden, f = config.dec_intermediate;
    Weights& w = weights;
    w.wte = random({config.vocab_size, d}, 0.02f, rng);
    w.wpe = random({config.max_positions, d}, 0.01f, rng);
    w.ln_f_w = constant({d}, 1.0f);
    w.ln_f_b = constant({d}, 0.0f);
    for (std::int64_t l = 0; l < config.dec_layers; ++l) {
      DecoderLayer x;
      x.ln1_w = x.lnx_w = x.ln2_w = constant({d}, 1.0f);
      x.ln1_b = x.lnx_b = x.ln2_b = constant({d}, 0.0f);
      x.attn_w = random({d, 3 * d}, 0.02f, rng), x.attn_b = random({3 * d}, 0.02f, rng);
      x.proj_w = random({d, d}, 0.02f, rng), x.proj_b = random({d}, 0.02f, rng);
      x.xq_w = random({d, d}, 0.02f, rng), x.xq_b = random({d}, 0.02f, rng);
      x.xkv_w = random({d, 2 * d}, 0.02f, rng), x.xkv_b = random({2 * d}, 0.02f, rng);
      x.xproj_w = random({d, d}, 0.02f, rng), x.xproj_b = random({d}, 0.02f, rng);
      x.fc_w = random({d, f}, 0.02f, rng), x.fc_b = random({f}, 0.02f, rng);
      x.fc2_w = random({f, d}, 0.02f, rng), x.fc2_b = random({d}, 0.02f, rng);
      w.decoder.push_back(x);
    }
    states = random({1, config.num_patches() + 1, config.enc_hidden}, 1.0f, rng);
  }
  static Model& get() {
    static Model m;
    return m;
  }
};

struct Started {
  std::unique_ptr<Session> session;
  Tensor states;
};

Started make_session(bool fused, int images, int beams) {
  Model& m = Model::get();
  if (!fused) setenv("ENCORE_CUDA_FUSED_STEP", "0", 1);
  Tensor states = m.states;
  if (images > 1) {  // the same image repeated
    Tensor many = Tensor::empty({images, m.states.dim(1), m.states.dim(2)}, DType::F16);
    const Tensor host = m.states.to(Device::cpu());
    for (int i = 0; i < images; ++i) many.slice(0, i, i + 1).copy_from(host);
    states = many.to(Device::cuda(0));
  }
  auto s = std::make_unique<Session>(m.config, m.weights, DType::F16,
                                     PlanOptions{.device = Device::cuda(0), .cuda_graph = true}, states, beams,
                                     kMaxLength);
  unsetenv("ENCORE_CUDA_FUSED_STEP");
  return {std::move(s), states};
}

// Bytes every step must read: the decoder's projections, the LM head, the cross keys/values.
double step_bytes(int images) {
  const VitGpt2Config& c = Model::get().config;
  const double d = static_cast<double>(c.dec_hidden), f = static_cast<double>(c.dec_intermediate);
  const double per_layer = d * 3 * d + 3 * d * d + 2 * d * f;
  return 2.0 * (c.dec_layers * per_layer + c.vocab_size * d +
                c.dec_layers * images * (c.num_patches() + 1) * 2 * d);
}

void BM_DecodeStep(benchmark::State& state) {
  if (build_info().cuda_devices.empty()) {
    state.SkipWithError("no CUDA GPU");
    return;
  }
  const bool fused = state.range(0) == 1;
  const int images = static_cast<int>(state.range(1)), beams = static_cast<int>(state.range(2)), rows = images * beams;
  const Started started = make_session(fused, images, beams);
  Session* s = started.session.get();
  if (fused != s->fused_step()) {
    state.SkipWithError("the fused step does not take this shape");
    return;
  }
  const std::vector<std::int32_t> tokens(static_cast<std::size_t>(rows), 50256);
  int steps = 0;
  for (auto _ : state) {
    if (++steps == kMaxLength) {
      state.PauseTiming();
      s->restart(started.states);
      steps = 1;
      state.ResumeTiming();
    }
    if (fused && beams == 1)
      benchmark::DoNotOptimize(s->step_greedy(tokens, 50256));
    else
      benchmark::DoNotOptimize(s->step(tokens));
  }
  state.counters["weights_GBps"] =
      benchmark::Counter(step_bytes(images) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(fused ? "fused" : "graph");
}
BENCHMARK(BM_DecodeStep)
    ->ArgNames({"fused", "images", "beams"})
    ->Args({1, 1, 1})->Args({0, 1, 1})
    ->Args({1, 1, 4})->Args({0, 1, 4})
    ->Args({1, 8, 1})->Args({0, 8, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Where a fused step's time goes, from one profiled step at batch 1.
void print_profile() {
  if (build_info().cuda_devices.empty()) return;
  const Started started = make_session(true, 1, 1);
  Session* s = started.session.get();
  cuda::FusedDecoderStep* f = s->fused();
  if (f == nullptr) return;
  const std::vector<std::int32_t> tokens{50256};
  for (int i = 0; i < 4; ++i) s->step_greedy(tokens, 50256);  // warm
  f->set_profiling(true);
  s->step_greedy(tokens, 50256);
  const std::vector<std::uint64_t> t = f->profile();
  const int nb = f->barriers(), g = f->ctas();
  static const char* const kinds[] = {"LN1+QKV", "self-attention", "proj+residual", "LN+cross-Q",
                                "cross-attention", "x-proj+residual", "LN2+fc+GELU", "fc2+residual"};
  // Per phase kind, summed over layers, for the median CTA (its own cycle counter, converted at the
  // device's boost clock): inputs loaded (previous departure to loads done), LayerNorm, projection
  // (weights waited for + GEMV + epilogue), tail (up to its arrival), its wait for weights; then the
  // slowest CTA's whole phase and the barrier (last arrival to first departure, global timer: it
  // ticks in 1.024 us steps, so only the sum over layers means something).
  int khz = 0;
  cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0);
  const double us_per_clk = khz > 0 ? 1e3 / khz : 0.0;
  constexpr int kv = 8;  // fused::kTraceValues
  enum { kArriveNs, kLeaveNs, kLeaveClk, kArriveClk, kWaitedClk, kLoadedClk, kNormedClk, kProjectedClk };
  struct Row {
    double inputs = 0, norm = 0, project = 0, tail = 0, waited = 0, slowest = 0, barrier = 0;
  };
  std::map<std::string, Row> sum;
  auto at = [&](int c, int k, int v) { return static_cast<double>(t[(static_cast<std::size_t>(c) * nb + k) * kv + v]); };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  double start = 1e300, end = 0;
  for (int k = 0; k < nb; ++k) {
    double last_arrive = 0, first_leave = 1e300;
    std::vector<double> inputs, norm, project, tail, waited, work;
    for (int c = 0; c < g; ++c) {
      last_arrive = std::max(last_arrive, at(c, k, kArriveNs));
      first_leave = std::min(first_leave, at(c, k, kLeaveNs));
      start = std::min(start, at(c, k, kArriveNs));
      end = std::max(end, at(c, k, kLeaveNs));
      waited.push_back(at(c, k, kWaitedClk));
      if (k == 0) continue;
      const double prev = at(c, k - 1, kLeaveClk), arrive = at(c, k, kArriveClk);
      const double loaded = at(c, k, kLoadedClk), normed = at(c, k, kNormedClk), projected = at(c, k, kProjectedClk);
      work.push_back(arrive - prev);
      if (loaded > prev) inputs.push_back(loaded - prev);
      if (normed > prev) norm.push_back(normed - loaded);
      if (projected > prev) {
        project.push_back(projected - (normed > prev ? normed : loaded > prev ? loaded : prev));
        tail.push_back(arrive - projected);
      }
    }
    Row& row = sum[k == 0 ? "embed" : k == nb - 1 ? "LN-f+LM head" : kinds[(k - 1) % 8]];
    row.inputs += median(inputs) * us_per_clk, row.norm += median(norm) * us_per_clk;
    row.project += median(project) * us_per_clk, row.tail += median(tail) * us_per_clk;
    row.waited += median(waited) * us_per_clk;
    if (!work.empty()) row.slowest += *std::max_element(work.begin(), work.end()) * us_per_clk;
    row.barrier += (first_leave - last_arrive) * 1e-3;
  }
  std::printf("\nfused step profile (batch 1, %d CTAs, %d barriers; first arrival to last departure %.1f us; "
              "cycles at %.0f MHz)\n",
              g, nb, (end - start) * 1e-3, khz * 1e-3);
  std::printf("%-18s %8s %8s %8s %8s %8s %9s %8s\n", "phase (us)", "inputs", "LN", "project", "tail", "w-wait",
              "slowest", "barrier");
  for (const auto& [kind, v] : sum)
    std::printf("%-18s %8.2f %8.2f %8.2f %8.2f %8.2f %9.1f %8.1f\n", kind.c_str(), v.inputs, v.norm, v.project, v.tail,
                v.waited, v.slowest, v.barrier);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_profile();
  return 0;
}
