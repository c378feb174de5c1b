// config.json / generation_config.json of a VisionEncoderDecoderModel (ViT + GPT-2).
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "models/vit_gpt2_internal.h"

namespace encore::vitgpt2 {
namespace {

using json = nlohmann::json;

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  ENCORE_CHECK(in.good(), io, "cannot open {}", path.string());
  try {
    json j = json::parse(in);
    ENCORE_CHECK(j.is_object(), bad_model_file, "{}: expected a JSON object", path.string());
    return j;
  } catch (const json::exception& e) {
    detail::fail(ErrorCode::bad_model_file, "{}: invalid JSON: {}", path.string(), e.what());
  }
}

// A field of `obj`, with `fallback` when absent or null; a present field of the wrong type is an error.
template <typename T>
T field(const json& obj, const char* key, T fallback, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    detail::fail(ErrorCode::bad_model_file, "{}: field '{}' has the wrong type ({})", where, key, it->dump());
  }
}

std::int32_t token_id(const json& obj, const char* key, std::int32_t fallback, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (it->is_array() && !it->empty()) return field<std::int32_t>(json{{key, it->front()}}, key, fallback, where);
  return field<std::int32_t>(obj, key, fallback, where);
}

void require_positive(std::int64_t v, const char* name, const std::string& where) {
  ENCORE_CHECK(v > 0 && v < (1ll << 31), bad_model_file, "{}: {} = {} must be a positive size", where, name, v);
}

}  // namespace

VitGpt2Config read_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  const json j = read_json(path);
  const std::string where = path.string();
  ENCORE_CHECK(j.contains("encoder") && j["encoder"].is_object() && j.contains("decoder") && j["decoder"].is_object(),
               bad_model_file, "{}: expected a vision-encoder-decoder config with 'encoder' and 'decoder' objects",
               where);
  const json& e = j["encoder"];
  const json& d = j["decoder"];
  const std::string enc_type = field<std::string>(e, "model_type", "vit", where);
  const std::string dec_type = field<std::string>(d, "model_type", "gpt2", where);
  ENCORE_CHECK(enc_type == "vit" && dec_type == "gpt2", unsupported,
               "{}: encore's VitGpt2 needs a 'vit' encoder and a 'gpt2' decoder, got '{}' and '{}'", where, enc_type,
               dec_type);
  VitGpt2Config c;
  c.image_size = field<std::int64_t>(e, "image_size", 224, where);
  c.patch_size = field<std::int64_t>(e, "patch_size", 16, where);
  c.num_channels = field<std::int64_t>(e, "num_channels", 3, where);
  c.enc_hidden = field<std::int64_t>(e, "hidden_size", 768, where);
  c.enc_layers = field<std::int64_t>(e, "num_hidden_layers", 12, where);
  c.enc_heads = field<std::int64_t>(e, "num_attention_heads", 12, where);
  c.enc_intermediate = field<std::int64_t>(e, "intermediate_size", 3072, where);
  c.enc_layer_norm_eps = field<float>(e, "layer_norm_eps", 1e-12f, where);
  c.enc_hidden_act = field<std::string>(e, "hidden_act", "gelu", where);
  c.dec_hidden = field<std::int64_t>(d, "n_embd", 768, where);
  c.dec_layers = field<std::int64_t>(d, "n_layer", 12, where);
  c.dec_heads = field<std::int64_t>(d, "n_head", 12, where);
  c.dec_intermediate = field<std::int64_t>(d, "n_inner", 4 * c.dec_hidden, where);
  c.vocab_size = field<std::int64_t>(d, "vocab_size", 50257, where);
  c.max_positions = field<std::int64_t>(d, "n_positions", 1024, where);
  c.dec_layer_norm_eps = field<float>(d, "layer_norm_epsilon", 1e-5f, where);
  c.dec_activation = field<std::string>(d, "activation_function", "gelu_new", where);

  for (auto [v, name] : {std::pair{c.image_size, "encoder.image_size"}, {c.patch_size, "encoder.patch_size"},
                         {c.enc_hidden, "encoder.hidden_size"}, {c.enc_layers, "encoder.num_hidden_layers"},
                         {c.enc_heads, "encoder.num_attention_heads"}, {c.enc_intermediate, "encoder.intermediate_size"},
                         {c.dec_hidden, "decoder.n_embd"}, {c.dec_layers, "decoder.n_layer"}, {c.dec_heads, "decoder.n_head"},
                         {c.dec_intermediate, "decoder.n_inner"}, {c.vocab_size, "decoder.vocab_size"},
                         {c.max_positions, "decoder.n_positions"}})
    require_positive(v, name, where);
  ENCORE_CHECK(c.num_channels == 3, unsupported, "{}: encoder.num_channels = {}, encore supports 3 (RGB)", where,
               c.num_channels);
  ENCORE_CHECK(c.image_size % c.patch_size == 0, bad_model_file, "{}: image_size {} is not a multiple of patch_size {}",
               where, c.image_size, c.patch_size);
  ENCORE_CHECK(c.enc_hidden % c.enc_heads == 0 && c.dec_hidden % c.dec_heads == 0, bad_model_file,
               "{}: hidden sizes {} / {} do not split into {} / {} heads", where, c.enc_hidden, c.dec_hidden, c.enc_heads,
               c.dec_heads);
  ENCORE_CHECK(c.enc_hidden == c.dec_hidden, unsupported,
               "{}: encoder hidden size {} differs from decoder n_embd {} (enc_to_dec_proj is not supported yet)", where,
               c.enc_hidden, c.dec_hidden);
  ENCORE_CHECK(c.enc_hidden_act == "gelu", unsupported, "{}: encoder hidden_act '{}' is not supported (expected gelu)",
               where, c.enc_hidden_act);
  ENCORE_CHECK(c.dec_activation == "gelu_new" || c.dec_activation == "gelu", unsupported,
               "{}: decoder activation_function '{}' is not supported (expected gelu_new or gelu)", where,
               c.dec_activation);
  ENCORE_CHECK(field<bool>(d, "add_cross_attention", true, where), bad_model_file,
               "{}: decoder.add_cross_attention is false: the decoder cannot attend to the image", where);

  // Special ids: top level first, then the decoder's own config (HF falls back the same way).
  c.eos_token_id = token_id(j, "eos_token_id", token_id(d, "eos_token_id", 50256, where), where);
  c.pad_token_id = token_id(j, "pad_token_id", token_id(d, "pad_token_id", c.eos_token_id, where), where);
  c.decoder_start_token_id = token_id(j, "decoder_start_token_id",
                                      token_id(d, "decoder_start_token_id", token_id(d, "bos_token_id", 50256, where), where),
                                      where);
  c.max_length = field<int>(j, "max_length", field<int>(d, "max_length", 20, where), where);
  c.num_beams = field<int>(j, "num_beams", 1, where);
  c.length_penalty = field<float>(j, "length_penalty", 1.0f, where);

  const auto gen_path = dir / "generation_config.json";
  if (std::filesystem::exists(gen_path)) {
    const json gj = read_json(gen_path);
    const std::string gw = gen_path.string();
    c.decoder_start_token_id = token_id(gj, "decoder_start_token_id", c.decoder_start_token_id, gw);
    c.eos_token_id = token_id(gj, "eos_token_id", c.eos_token_id, gw);
    c.pad_token_id = token_id(gj, "pad_token_id", c.pad_token_id, gw);
    c.max_length = field<int>(gj, "max_length", c.max_length, gw);
    c.num_beams = field<int>(gj, "num_beams", c.num_beams, gw);
    c.length_penalty = field<float>(gj, "length_penalty", c.length_penalty, gw);
    const auto es = gj.find("early_stopping");
    if (es != gj.end() && es->is_boolean()) c.early_stopping = es->get<bool>() ? 1 : 0;
    if (es != gj.end() && es->is_string() && es->get<std::string>() == "never") c.early_stopping = 2;
  }
  for (auto [v, name] : {std::pair{c.eos_token_id, "eos_token_id"}, {c.pad_token_id, "pad_token_id"},
                         {c.decoder_start_token_id, "decoder_start_token_id"}})
    ENCORE_CHECK(v >= 0 && v < c.vocab_size, bad_model_file, "{}: {} = {} is outside the vocabulary of {}", where, name,
                 v, c.vocab_size);
  return c;
}

}  // namespace encore::vitgpt2
