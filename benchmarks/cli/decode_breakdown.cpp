#include "decode_breakdown.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <functional>
#include <optional>

#include "encore/graph/graph.h"
#include "encore/graph/plan.h"
#include "system_probe.h"

namespace encore::bench {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Values only need to be finite and non-denormal: the time of these kernels does not depend on them.
Tensor filler(const Shape& shape, DType dtype, Device device, std::uint32_t seed) {
  Tensor t = Tensor::empty(shape, DType::F32);
  float* p = t.data_ptr<float>();
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;  // xorshift32
    p[i] = (static_cast<float>(x >> 8) / 16777216.0f - 0.5f) * 0.04f;
  }
  Tensor typed = dtype == DType::F32 ? t : t.to(dtype);
  return device.is_cpu() ? typed : typed.to(device);
}

// A planned graph of `per_step` independent nodes reading one input, with its constants kept alive.
struct PartBench {
  StepPart part;
  std::vector<Tensor> constants;  // the plan's constants view them
  std::optional<Plan> plan;
  Tensor input;
  Device device;
  std::vector<double> samples;

  void run_once(bool record) {
    const auto start = Clock::now();
    const auto out = plan->run({{"x", input}});
    // A GPU plan may still be running: copying one output to the host waits for the stream.
    if (device.is_cuda()) (void)out.at(fmt::format("y{}", part.per_step - 1)).to(Device::cpu());
    if (record) samples.push_back(ms_since(start));
  }
};

std::uint32_t seed_of(const std::string& name, int i) {
  return static_cast<std::uint32_t>(std::hash<std::string>{}(name) + static_cast<std::size_t>(i));
}

// `count` projections x[rows, in] -> [rows, out] with distinct weights ([in, out] like GPT-2's
// Conv1D, or the tied embedding [vocab, hidden] without bias for the LM head).
PartBench projection(const std::string& name, std::int64_t in, std::int64_t out, int count, bool lm_head,
                     Activation act, DType dtype, Device device, std::int64_t rows) {
  PartBench b;
  b.part = {name, fmt::format("[{}, {}]", in, out), count,
            static_cast<double>(in * out) * count * static_cast<double>(dtype_size(dtype)), 0};
  b.device = device;
  Graph g;
  Value x = g.input("x", dtype, {rows, 1, in});
  for (int i = 0; i < count; ++i) {
    if (lm_head) {
      b.constants.push_back(filler({out, in}, dtype, device, seed_of(name, i)));
      g.output(fmt::format("y{}", i), g.linear(x, g.constant(b.constants.back()), {}));
      continue;
    }
    b.constants.push_back(filler({in, out}, dtype, device, seed_of(name, i)));
    b.constants.push_back(filler({out}, dtype, device, seed_of(name, i) + 7));
    g.output(fmt::format("y{}", i), g.linear(x, g.constant(b.constants[b.constants.size() - 2]),
                                             g.constant(b.constants.back()),
                                             {.layout = WeightLayout::in_out, .activation = act}));
  }
  b.plan.emplace(g, PlanOptions{.device = device});
  b.input = filler({rows, 1, in}, dtype, device, 99);
  return b;
}

// The decode step's cross-attention as the model builds it: one query per row over that row's
// keys/values, sliced from a fused [rows, T_enc, 2D] tensor per layer (one copy per row, beams
// included, which is what the model holds).
PartBench cross_attention(const VitGpt2Config& c, DType dtype, Device device, std::int64_t rows) {
  const std::int64_t d = c.dec_hidden, tokens = 1 + c.num_patches();
  const int layers = static_cast<int>(c.dec_layers);
  PartBench b;
  b.part = {"cross attention", fmt::format("[{}, {}, {}]", rows, tokens, d), layers,
            static_cast<double>(rows * tokens * 2 * d) * layers * static_cast<double>(dtype_size(dtype)), 0};
  b.device = device;
  Graph g;
  Value q = g.input("x", dtype, {rows, 1, d});
  for (int i = 0; i < layers; ++i) {
    b.constants.push_back(filler({rows, tokens, 2 * d}, dtype, device, seed_of("cross kv", i)));
    Value kv = g.constant(b.constants.back());
    g.output(fmt::format("y{}", i), g.attention(q, g.slice(kv, -1, 0, d), g.slice(kv, -1, d, 2 * d), {},
                                                {.num_heads = static_cast<int>(c.dec_heads)}));
  }
  b.plan.emplace(g, PlanOptions{.device = device});
  b.input = filler({rows, 1, d}, dtype, device, 98);
  return b;
}

// A model-free session: every step returns a copy of the same scores, as the real step returns a
// fresh host tensor, and declares them log-probabilities as VitGpt2's step does (its graph ends in
// log_softmax). What generate() then costs is the search itself (min-length masking, top-k, beams).
class FixedLogitsSession final : public DecoderSession {
 public:
  FixedLogitsSession(int rows, int vocab) : rows_(rows), vocab_(vocab) {
    logits_ = filler({rows, vocab}, DType::F32, Device::cpu(), 1234);
    // Normalised per row, as a real log-prob step is (generation relies on it for the min-length
    // renormalisation shortcut).
    float* p = logits_.data_ptr<float>();
    for (int r = 0; r < rows; ++r, p += vocab) {
      double sum = 0;
      for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(p[i]));
      const auto lse = static_cast<float>(std::log(sum));
      for (int i = 0; i < vocab; ++i) p[i] -= lse;
    }
  }
  int rows() const override { return rows_; }
  int vocab_size() const override { return vocab_; }
  Tensor step(std::span<const std::int32_t>) override { return logits_.clone(); }
  bool step_returns_log_probs() const override { return true; }
  void reorder(std::span<const int>) override {}

 private:
  int rows_, vocab_;
  Tensor logits_;
};

StepPart time_search(int batch, int beams, int vocab, const GenerationOptions& generation, int iters) {
  GenerationOptions options = generation;
  options.on_token = nullptr;
  const int steps = options.max_length - 1;
  std::vector<double> samples;
  for (int i = 0; i < iters + 1; ++i) {
    FixedLogitsSession session(batch * beams, vocab);
    const auto start = Clock::now();
    (void)generate(session, batch, options);
    if (i > 0) samples.push_back(ms_since(start) / steps);
  }
  return {"search", fmt::format("[{}, {}] logits", batch * beams, vocab), 1, 0, percentile(samples, 0.5)};
}

}  // namespace

double measure_gemm_flops(Device device, DType dtype) {
  constexpr std::int64_t n = 2048;
  Graph g;
  const Tensor weight = filler({n, n}, dtype, device, 5);
  g.output("y", g.linear(g.input("x", dtype, {n, n}), g.constant(weight)));
  Plan plan(g, PlanOptions{.device = device});
  const Tensor x = filler({n, n}, dtype, device, 6);
  double best_ms = 1e30;
  for (int i = 0; i < 4; ++i) {  // the first run creates the primitive and packs the weight
    const auto start = Clock::now();
    const auto out = plan.run({{"x", x}});
    if (device.is_cuda()) (void)out.at("y").to(Device::cpu());
    if (i > 0) best_ms = std::min(best_ms, ms_since(start));
  }
  return 2.0 * n * n * n / (best_ms / 1e3);
}

DecodeBreakdown measure_decode_breakdown(const VitGpt2& model, const Tensor& pixels, DType dtype, int batch, int beams,
                                         const GenerationOptions& generation, int iters) {
  const VitGpt2Config& c = model.config();
  const Device device = model.device();
  DecodeBreakdown result;
  std::vector<double> encoder_ms;
  for (int i = 0; i < iters + 1; ++i) {  // the first run warms up
    const auto start = Clock::now();
    (void)model.encode(pixels);
    if (i > 0) encoder_ms.push_back(ms_since(start));
  }
  result.encoder_only_ms = percentile(encoder_ms, 0.5);

  const std::int64_t d = c.dec_hidden, ff = c.dec_intermediate, rows = std::int64_t{batch} * beams;
  const int layers = static_cast<int>(c.dec_layers);
  const Activation mlp_act = c.dec_activation == "gelu_new" ? Activation::gelu_tanh : Activation::gelu;
  std::vector<PartBench> benches;
  benches.push_back(projection("self qkv", d, 3 * d, layers, false, Activation::none, dtype, device, rows));
  benches.push_back(projection("self out", d, d, layers, false, Activation::none, dtype, device, rows));
  benches.push_back(projection("cross q", d, d, layers, false, Activation::none, dtype, device, rows));
  benches.push_back(projection("cross out", d, d, layers, false, Activation::none, dtype, device, rows));
  benches.push_back(projection("mlp fc+gelu", d, ff, layers, false, mlp_act, dtype, device, rows));
  benches.push_back(projection("mlp proj", ff, d, layers, false, Activation::none, dtype, device, rows));
  benches.push_back(projection("lm head", d, c.vocab_size, 1, true, Activation::none, dtype, device, rows));
  benches.push_back(cross_attention(c, dtype, device, rows));
  for (int i = 0; i < iters + 1; ++i)
    for (PartBench& b : benches) b.run_once(i > 0);
  for (PartBench& b : benches) {
    b.part.ms_per_step = percentile(b.samples, 0.5);
    result.parts.push_back(b.part);
  }
  result.parts.push_back(time_search(batch, beams, static_cast<int>(c.vocab_size), generation, iters));
  return result;
}

}  // namespace encore::bench
