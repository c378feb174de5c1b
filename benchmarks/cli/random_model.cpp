// Writes random ViT-GPT2 checkpoints with the tensor names transformers' save_pretrained uses
// (VisionEncoderDecoderModel, the transformers 4 spellings that 5.x writes back), so VitGpt2::load
// reads them through exactly the same path as a real checkpoint.
#include "random_model.h"

#include <fmt/format.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "encore/core/error.h"
#include "encore/core/tensor.h"
#include "encore/io/safetensors.h"

namespace encore::bench {
namespace fs = std::filesystem;

RandomModelSpec random_model_spec(const std::string& name) {
  RandomModelSpec s;
  s.name = name;
  if (name == "base") return s;  // the defaults are ViT-B/16 + GPT-2 small
  if (name == "tiny") {
    s.image_size = 32, s.patch_size = 8, s.enc_hidden = 64, s.enc_layers = 2, s.enc_heads = 4, s.enc_intermediate = 128;
    s.dec_hidden = 64, s.dec_layers = 2, s.dec_heads = 4, s.dec_intermediate = 256, s.vocab_size = 1000;
    s.max_positions = 64, s.special_token_id = 999;
    return s;
  }
  throw Error(ErrorCode::invalid_argument,
              fmt::format("--random-model: unknown size '{}' (expected base or tiny)", name));
}

std::string random_model_dir_name(const RandomModelSpec& spec) { return "vit-gpt2-random-" + spec.name; }

namespace {

// Draws every tensor from one seeded generator, in the order they are added, so the same spec
// always gives the same bytes.
class TensorMaker {
 public:
  explicit TensorMaker(std::uint64_t seed) : rng_(seed) {}

  void normal(const std::string& name, const Shape& shape, float mean = 0.0f, float stddev = 0.02f) {
    Tensor t = Tensor::empty(shape, DType::F32);
    std::normal_distribution<float> dist(mean, stddev);
    float* p = t.data_ptr<float>();
    for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng_);
    tensors_.push_back({name, std::move(t)});
  }
  // A linear layer: weight (in the given shape) and bias of `out` features.
  void linear(const std::string& prefix, const Shape& weight_shape, std::int64_t out) {
    normal(prefix + ".weight", weight_shape);
    normal(prefix + ".bias", {out});
  }
  void layer_norm(const std::string& prefix, std::int64_t width) {
    normal(prefix + ".weight", {width}, 1.0f);
    normal(prefix + ".bias", {width});
  }
  const std::vector<io::NamedTensor>& tensors() const { return tensors_; }

 private:
  std::mt19937_64 rng_;
  std::vector<io::NamedTensor> tensors_;
};

void add_encoder(TensorMaker& m, const RandomModelSpec& s) {
  const std::int64_t d = s.enc_hidden, ff = s.enc_intermediate, p = s.patch_size;
  const std::int64_t tokens = 1 + (s.image_size / p) * (s.image_size / p);
  m.normal("encoder.embeddings.cls_token", {1, 1, d});
  m.normal("encoder.embeddings.position_embeddings", {1, tokens, d});
  m.linear("encoder.embeddings.patch_embeddings.projection", {d, 3, p, p}, d);
  for (std::int64_t i = 0; i < s.enc_layers; ++i) {
    const std::string l = fmt::format("encoder.encoder.layer.{}.", i);
    for (const char* proj : {"query", "key", "value"}) m.linear(l + "attention.attention." + proj, {d, d}, d);
    m.linear(l + "attention.output.dense", {d, d}, d);  // torch nn.Linear: [out, in]
    m.layer_norm(l + "layernorm_before", d);
    m.layer_norm(l + "layernorm_after", d);
    m.linear(l + "intermediate.dense", {ff, d}, ff);
    m.linear(l + "output.dense", {d, ff}, d);
  }
  m.layer_norm("encoder.layernorm", d);
}

void add_decoder(TensorMaker& m, const RandomModelSpec& s) {
  const std::int64_t d = s.dec_hidden, ff = s.dec_intermediate;
  m.normal("decoder.transformer.wte.weight", {s.vocab_size, d});  // also the (tied, unsaved) LM head
  m.normal("decoder.transformer.wpe.weight", {s.max_positions, d});
  for (std::int64_t i = 0; i < s.dec_layers; ++i) {
    const std::string l = fmt::format("decoder.transformer.h.{}.", i);
    m.layer_norm(l + "ln_1", d);
    m.linear(l + "attn.c_attn", {d, 3 * d}, 3 * d);  // GPT-2 Conv1D: [in, out]
    m.linear(l + "attn.c_proj", {d, d}, d);
    m.layer_norm(l + "ln_cross_attn", d);
    m.linear(l + "crossattention.q_attn", {d, d}, d);
    m.linear(l + "crossattention.c_attn", {d, 2 * d}, 2 * d);
    m.linear(l + "crossattention.c_proj", {d, d}, d);
    m.layer_norm(l + "ln_2", d);
    m.linear(l + "mlp.c_fc", {d, ff}, ff);
    m.linear(l + "mlp.c_proj", {ff, d}, d);
  }
  m.layer_norm("decoder.transformer.ln_f", d);
}

nlohmann::json config_json(const RandomModelSpec& s) {
  const std::int32_t special = s.special_token_id;
  nlohmann::json encoder = {{"model_type", "vit"},           {"hidden_size", s.enc_hidden},
                            {"num_hidden_layers", s.enc_layers}, {"num_attention_heads", s.enc_heads},
                            {"intermediate_size", s.enc_intermediate}, {"image_size", s.image_size},
                            {"patch_size", s.patch_size},    {"num_channels", 3},
                            {"hidden_act", "gelu"},          {"layer_norm_eps", 1e-12},
                            {"qkv_bias", true}};
  nlohmann::json decoder = {{"model_type", "gpt2"},        {"n_embd", s.dec_hidden},
                            {"n_layer", s.dec_layers},     {"n_head", s.dec_heads},
                            {"n_inner", s.dec_intermediate}, {"vocab_size", s.vocab_size},
                            {"n_positions", s.max_positions}, {"layer_norm_epsilon", 1e-5},
                            {"activation_function", "gelu_new"}, {"add_cross_attention", true},
                            {"is_decoder", true},          {"bos_token_id", special},
                            {"eos_token_id", special},     {"pad_token_id", special}};
  return {{"architectures", {"VisionEncoderDecoderModel"}},
          {"model_type", "vision-encoder-decoder"},
          {"is_encoder_decoder", true},
          {"decoder_start_token_id", special},
          {"bos_token_id", special},
          {"eos_token_id", special},
          {"pad_token_id", special},
          {"encoder", encoder},
          {"decoder", decoder},
          {"encore_random_model", {{"size", s.name}, {"seed", s.seed}, {"init", "N(0, 0.02); LayerNorm weight 1 + N(0, 0.02)"}}}};
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw Error(ErrorCode::io, fmt::format("cannot write {}", path.string()));
}

}  // namespace

bool ensure_random_model(const fs::path& dir, const RandomModelSpec& spec) {
  if (fs::exists(dir / "config.json") && fs::exists(dir / "model.safetensors")) return false;
  if (fs::exists(dir))
    throw Error(ErrorCode::io, fmt::format("{} exists but holds no complete model (config.json + model.safetensors); "
                                           "remove it or pass another --model-cache",
                                           dir.string()));
  const fs::path staging = dir.parent_path() / fmt::format(".{}.partial-{}", dir.filename().string(), ::getpid());
  std::error_code ec;
  fs::create_directories(staging, ec);
  if (ec) throw Error(ErrorCode::io, fmt::format("cannot create {}: {}", staging.string(), ec.message()));
  TensorMaker maker(spec.seed);
  add_encoder(maker, spec);
  add_decoder(maker, spec);
  io::save_safetensors(staging / "model.safetensors", maker.tensors(), {{"format", "pt"}});
  write_text(staging / "config.json", config_json(spec).dump(2) + "\n");
  fs::rename(staging, dir, ec);
  if (ec) throw Error(ErrorCode::io, fmt::format("cannot rename {} to {}: {}", staging.string(), dir.string(), ec.message()));
  return true;
}

}  // namespace encore::bench
