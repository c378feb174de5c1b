#include "models/vit_gpt2_session.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "decode/generation_internal.h"
#include "encore/core/threads.h"

namespace encore::vitgpt2 {
namespace {

constexpr LinearAttrs kConv1D{.layout = WeightLayout::in_out};

KvCacheConfig cache_config(const VitGpt2Config& c, DType dtype, Device device, int rows, int max_length) {
  KvCacheConfig k;
  k.num_layers = static_cast<int>(c.dec_layers);
  k.batch = rows;
  k.num_kv_heads = static_cast<int>(c.dec_heads);
  k.head_dim = static_cast<int>(c.dec_hidden / c.dec_heads);
  k.max_length = max_length;
  k.block_size = 16;  // captions are short: small blocks keep beam copy-on-write cheap
  k.dtype = dtype;
  k.device = device;
  return k;
}

}  // namespace

Session::Session(const VitGpt2Config& config, const Weights& weights, DType dtype, const PlanOptions& plan_options,
                 const Tensor& encoder_states, int beams, int max_length)
    : config_(config),
      weights_(weights),
      dtype_(dtype),
      plan_options_(plan_options),
      encoder_shape_(encoder_states.shape()),
      beams_(beams),
      max_length_(max_length),
      rows_(static_cast<int>(encoder_states.dim(0)) * beams),
      cache_(cache_config(config, dtype, plan_options.device, rows_, max_length)),
      cross_plan_(build_cross_plan(encoder_states)) {
  compute_cross_kv(encoder_states);
  try_fused_step();
  if (!fused_step()) step_plan_.emplace(build_step_graph(), plan_options_);
}

bool Session::fused_step() const noexcept {
#ifdef ENCORE_HAVE_CUDA
  return fused_ != nullptr;
#else
  return false;
#endif
}

// The fused step reads the cache, the cross K/V and the weights where they are; it is chosen per
// session (ENCORE_CUDA_FUSED_STEP=0 keeps the graph, e.g. to compare the two).
void Session::try_fused_step() {
#ifdef ENCORE_HAVE_CUDA
  const char* env = std::getenv("ENCORE_CUDA_FUSED_STEP");
  if (!plan_options_.device.is_cuda() || (env != nullptr && std::strcmp(env, "0") == 0)) return;
  const Weights& w = weights_;
  cuda::FusedDecoderWeights fw{w.wte, w.wpe, w.ln_f_w, w.ln_f_b, {}, cache_.block_table(), cache_.lengths()};
  for (std::size_t i = 0; i < w.decoder.size(); ++i) {
    const DecoderLayer& l = w.decoder[i];
    const int layer = static_cast<int>(i);
    fw.layers.push_back({l.ln1_w, l.ln1_b, l.attn_w, l.attn_b, l.proj_w, l.proj_b, l.lnx_w, l.lnx_b, l.xq_w, l.xq_b,
                         l.xproj_w, l.xproj_b, l.ln2_w, l.ln2_b, l.fc_w, l.fc_b, l.fc2_w, l.fc2_b,
                         cache_.keys(layer), cache_.values(layer), cross_kv_[i]});
  }
  const cuda::FusedDecoderShape shape{.rows = rows_,
                                      .beams = beams_,
                                      .heads = static_cast<int>(config_.dec_heads),
                                      .layer_norm_eps = static_cast<float>(config_.dec_layer_norm_eps),
                                      .gelu_tanh = config_.dec_activation == "gelu_new"};
  try {
    // Inside the try: a CUDA error while asking the device is a reason for the graph, not a failure.
    const std::string why = cuda::FusedDecoderStep::unsupported_reason(shape, fw);
    if (!why.empty()) {
      detail::log(LogLevel::debug, "VitGpt2: decode steps run as a graph: {}", why);
      return;
    }
    std::shared_ptr<const cuda::FusedDecoderPack> pack;
    {
      std::lock_guard<std::mutex> lock(weights_.decoder_pack->mutex);
      pack = std::static_pointer_cast<const cuda::FusedDecoderPack>(weights_.decoder_pack->value);
      if (pack == nullptr) weights_.decoder_pack->value = pack = cuda::FusedDecoderStep::pack(fw);
    }
    fused_ = std::make_unique<cuda::FusedDecoderStep>(shape, std::move(fw), std::move(pack));
  } catch (const Error& e) {  // e.g. out of memory for the repacked weights: the graph still works
    detail::log(LogLevel::warn, "VitGpt2: the fused decode step is unavailable, steps run as a graph: {}", e.what());
    fused_.reset();
  }
#endif
}

bool Session::fits(const Shape& encoder_shape, int beams, int max_length) const {
  return encoder_shape == encoder_shape_ && beams == beams_ && max_length == max_length_;
}

void Session::restart(const Tensor& encoder_states) {
  ENCORE_CHECK(encoder_states.shape() == encoder_shape_, invalid_argument,
               "decode session: encoder states {} differ from the session's {}", encoder_states.shape().str(),
               encoder_shape_.str());
  cache_.clear();
  compute_cross_kv(encoder_states);
}

// Cross-attention keys/values depend only on the image: computed once per caption call and per
// image (not per beam: the step graph lets an image's beams share them).
Plan Session::build_cross_plan(const Tensor& encoder_states) const {
  Graph g;
  Value e = g.input("encoder_states", dtype_, encoder_states.shape());
  for (std::size_t l = 0; l < weights_.decoder.size(); ++l) {
    const DecoderLayer& w = weights_.decoder[l];
    g.output("kv" + std::to_string(l), g.linear(e, g.constant(w.xkv_w), g.constant(w.xkv_b), kConv1D));
  }
  return Plan(g, plan_options_);
}

// The outputs live in the plan's arena at fixed places, so every run rewrites them where the step
// graph reads them.
void Session::compute_cross_kv(const Tensor& encoder_states) {
  const auto out = cross_plan_.run({{"encoder_states", encoder_states}});
  for (std::size_t l = 0; l < weights_.decoder.size(); ++l) {
    const Tensor& kv = out.at("kv" + std::to_string(l));
    if (cross_kv_.size() <= l)
      cross_kv_.push_back(kv);
    else
      ENCORE_CHECK(cross_kv_[l].data() == kv.data(), backend, "decode session: cross K/V of layer {} moved", l);
  }
}

// One token per row: embeddings, then per layer self-attention over the paged cache (the new
// key/value is written first), cross-attention over the image, MLP; logits of the new position.
Graph Session::build_step_graph() const {
  const VitGpt2Config& c = config_;
  const std::int64_t d = c.dec_hidden;
  const int heads = static_cast<int>(c.dec_heads);
  const Activation act = c.dec_activation == "gelu_new" ? Activation::gelu_tanh : Activation::gelu;
  const LayerNormAttrs ln{.eps = c.dec_layer_norm_eps};
  const std::int64_t images = rows_ / beams_;
  Graph g;
  auto k = [&g](const Tensor& t) { return g.constant(t); };
  // One input for ids and positions: one host-to-device copy per step instead of two.
  Value tokens = g.input("tokens", DType::I32, {rows_, 2});
  Value ids = g.slice(tokens, -1, 0, 1), positions = g.slice(tokens, -1, 1, 2);
  Value table = k(cache_.block_table()), lengths = k(cache_.lengths());
  Value h = g.add(g.embedding(k(weights_.wte), ids), g.embedding(k(weights_.wpe), positions));
  for (std::size_t i = 0; i < weights_.decoder.size(); ++i) {
    const DecoderLayer& l = weights_.decoder[i];
    const int layer = static_cast<int>(i);
    Value qkv = g.linear(g.layer_norm(h, k(l.ln1_w), k(l.ln1_b), ln), k(l.attn_w), k(l.attn_b), kConv1D);
    Value kc = k(cache_.keys(layer)), vc = k(cache_.values(layer));
    g.kv_cache_write(g.slice(qkv, -1, d, 2 * d), g.slice(qkv, -1, 2 * d, 3 * d), kc, vc, table, lengths);
    Value a = g.decode_attention(g.slice(qkv, -1, 0, d), kc, vc, table, lengths, {.num_heads = heads});
    h = g.add(h, g.linear(a, k(l.proj_w), k(l.proj_b), kConv1D));
    // An image's beams are consecutive rows: as `beams` query tokens of one sequence they attend
    // to that image's keys/values together (cross-attention has no mask), [B, beams, d].
    Value q = g.linear(g.layer_norm(h, k(l.lnx_w), k(l.lnx_b), ln), k(l.xq_w), k(l.xq_b), kConv1D);
    Value kv = k(cross_kv_[i]);
    Value x = g.attention(g.reshape(q, {images, beams_, d}), g.slice(kv, -1, 0, d), g.slice(kv, -1, d, 2 * d), {},
                          {.num_heads = heads});
    x = g.reshape(x, {rows_, 1, d});
    h = g.add(h, g.linear(x, k(l.xproj_w), k(l.xproj_b), kConv1D));
    Value m = g.layer_norm(h, k(l.ln2_w), k(l.ln2_b), ln);
    h = g.add(h, g.linear(g.activation(g.linear(m, k(l.fc_w), k(l.fc_b), kConv1D), act), k(l.fc2_w), k(l.fc2_b), kConv1D));
  }
  Value logits = g.linear(g.layer_norm(h, k(weights_.ln_f_w), k(weights_.ln_f_b), ln), k(weights_.wte), {});
  // log_softmax where the logits are (f32): the generation loop then needs no pass over the
  // vocabulary per row and step (DecoderSession::step_returns_log_probs).
  g.output("log_probs", g.log_softmax(dtype_ == DType::F32 ? logits : g.cast(logits, DType::F32), -1));
  return g;
}

Tensor Session::begin_step(std::span<const std::int32_t> tokens) {
  ENCORE_CHECK(static_cast<int>(tokens.size()) == rows_, invalid_argument, "decode step: {} tokens for {} rows",
               tokens.size(), rows_);
  for (std::int32_t t : tokens)
    ENCORE_CHECK(t >= 0 && t < config_.vocab_size, invalid_argument, "decode step: token {} is outside the vocabulary of {}",
                 t, config_.vocab_size);
  for (int r = 0; r < rows_; ++r)  // checked before the cache changes
    ENCORE_CHECK(cache_.length(r) < config_.max_positions, invalid_argument,
                 "decode step: position {} is past the model's {} positions", cache_.length(r), config_.max_positions);
  cache_.reserve(1);
  cache_.advance(1);
  Tensor input = Tensor::empty({rows_, 2}, DType::I32);  // [row] = (token, position)
  for (int r = 0; r < rows_; ++r) {
    input.data_ptr<std::int32_t>()[2 * r] = tokens[static_cast<std::size_t>(r)];
    input.data_ptr<std::int32_t>()[2 * r + 1] = static_cast<std::int32_t>(cache_.length(r) - 1);
  }
  return input;
}

#ifdef ENCORE_HAVE_CUDA
bool Session::run_fused(const Tensor& input, std::int32_t eos_token_id, bool log_probs) {
  if (fused_ == nullptr) return false;
  try {
    fused_->run({input.data_ptr<std::int32_t>(), static_cast<std::size_t>(2 * rows_)}, eos_token_id, log_probs);
    return true;
  } catch (const Error& e) {
    // The grid could not be co-resident (MPS SM limit, green context): nothing ran, so this step
    // and the rest of the session run as the step graph over the same cache.
    if (e.code() != ErrorCode::unsupported) throw;
    detail::log(LogLevel::warn, "VitGpt2: the fused decode step cannot launch, steps run as a graph: {}", e.what());
    step_plan_.emplace(build_step_graph(), plan_options_);  // first: if this throws, the session is unchanged
    fused_.reset();
    {  // later sessions on this device will not try it (the refusal is remembered): drop the model's
       // repacked projections; sessions still holding them keep their own reference
      std::lock_guard<std::mutex> lock(weights_.decoder_pack->mutex);
      weights_.decoder_pack->value.reset();
    }
    return false;
  }
}
#endif

Tensor Session::graph_log_probs(const Tensor& input) {
  const Device dev = plan_options_.device;
  const auto out = step_plan_->run({{"tokens", step_plan_->accepts_host_inputs() ? input : input.to(dev)}});
  const Tensor log_probs = out.at("log_probs");
  return (dev.is_cpu() ? log_probs.contiguous() : log_probs.to(Device::cpu())).view({rows_, config_.vocab_size});
}

Tensor Session::step(std::span<const std::int32_t> tokens) {
  const Tensor input = begin_step(tokens);
#ifdef ENCORE_HAVE_CUDA
  if (run_fused(input, -1, true)) return fused_->log_probs().to(Device::cpu());
#endif
  const Tensor log_probs = graph_log_probs(input);
  return plan_options_.device.is_cpu() ? log_probs.clone() : log_probs;  // the plan reuses its output
}

std::vector<GreedyChoice> Session::step_greedy(std::span<const std::int32_t> tokens, std::int32_t eos_token_id) {
  ENCORE_CHECK(eos_token_id >= -1 && eos_token_id < config_.vocab_size, invalid_argument,
               "decode step: eos token {} is outside the vocabulary of {}", eos_token_id, config_.vocab_size);
  const Tensor input = begin_step(tokens);
#ifdef ENCORE_HAVE_CUDA
  if (run_fused(input, eos_token_id, false)) {
    std::vector<GreedyChoice> out;
    for (const cuda::FusedGreedyPick& p : fused_->picks())
      out.push_back(GreedyChoice{p.token, p.log_prob, p.token_without_eos, p.log_prob_without_eos});
    return out;
  }
#endif
  // The step graph: choices made on its log-probs (on the CPU in place, without a copy).
  const Tensor log_probs = graph_log_probs(input);
  const float* lp = log_probs.data_ptr<float>();
  const std::size_t vocab = static_cast<std::size_t>(config_.vocab_size);
  std::vector<GreedyChoice> out(static_cast<std::size_t>(rows_));
  const int threads = plan_options_.num_threads > 0 ? plan_options_.num_threads : num_threads();
#pragma omp parallel for num_threads(std::max(1, std::min(threads, rows_))) schedule(static)
  for (int r = 0; r < rows_; ++r)
    out[static_cast<std::size_t>(r)] = detail::greedy_choice({lp + r * vocab, vocab}, eos_token_id);
  return out;
}

void Session::reorder(std::span<const int> parent) { cache_.reorder(parent); }

}  // namespace encore::vitgpt2
