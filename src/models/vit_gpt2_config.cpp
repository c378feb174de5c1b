// config.json / generation_config.json of a VisionEncoderDecoderModel (ViT + GPT-2).
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>
#include <system_error>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "io/safetensors_json.h"
#include "io/small_file.h"
#include "models/vit_gpt2_internal.h"

namespace encore::vitgpt2 {
namespace {

using json = nlohmann::json;

// Configs nest a few levels (the encoder/decoder sections, their id maps); the limit keeps a
// hostile file from exhausting the stack, in the parser or in anything that walks the value.
constexpr int kConfigMaxDepth = 32;

json parse_object(std::string_view text, const std::string& where) {
  json j = io::detail::parse_json(text, kConfigMaxDepth, {where, "the file"});
  ENCORE_CHECK(j.is_object(), bad_model_file, "{}: expected a JSON object", where);
  return j;
}

// A field's value for an error message: scalars as written (cut at 60 characters), arrays and
// objects by their size (a hostile file's value may be huge).
std::string brief(const json& v) {
  if (v.is_array() || v.is_object()) return fmt::format("{} of {} entries", v.type_name(), v.size());
  std::string text = v.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

// Config files are a few KB; the cap keeps /dev/zero or a huge file from exhausting memory.
constexpr std::uintmax_t kMaxConfigBytes = 16u << 20;

std::string read_text(const std::filesystem::path& path) {
  return io::detail::read_small_file(path, kMaxConfigBytes, "config file");
}

// A field of `obj`, with `fallback` when absent or null; a present field of the wrong type is an error.
template <typename T>
T field(const json& obj, const char* key, T fallback, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    detail::fail(ErrorCode::bad_model_file, "{}: field '{}' has the wrong type ({})", where, key, brief(*it));
  }
}

// An integer in [lo, hi]. A float (12.0, 1e300) or a value out of range is an error: nlohmann's
// get<int>() would truncate the one and cast the other out of range (undefined behaviour).
std::int64_t integer(const json& v, const char* key, std::int64_t lo, std::int64_t hi, const std::string& where) {
  ENCORE_CHECK(v.is_number_integer(), bad_model_file, "{}: field '{}' must be an integer, got {}", where, key, brief(v));
  // (JSON's non-negative integers are nlohmann's unsigned kind, which may exceed int64.)
  const bool in_range = v.is_number_unsigned()
                            ? v.get<std::uint64_t>() <= static_cast<std::uint64_t>(hi) && v.get<std::int64_t>() >= lo
                            : v.get<std::int64_t>() >= lo && v.get<std::int64_t>() <= hi;
  ENCORE_CHECK(in_range, bad_model_file, "{}: field '{}' = {} is outside [{}, {}]", where, key, brief(v), lo, hi);
  return v.get<std::int64_t>();
}

std::int64_t int_field(const json& obj, const char* key, std::int64_t fallback, std::int64_t lo, std::int64_t hi,
                       const std::string& where) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? fallback : integer(*it, key, lo, hi, where);
}

// A size of the model. The bounds keep every product of sizes the loader forms (e.g. vocab x
// hidden, patches x hidden) far inside int64, and the graphs' int32 shape fields valid.
std::int64_t size_field(const json& obj, const char* key, std::int64_t fallback, std::int64_t hi,
                        const std::string& where) {
  return int_field(obj, key, fallback, 1, hi, where);
}

// A finite float; `positive`: also > 0 (a norm's epsilon: 0 divides by zero on constant rows).
float float_field(const json& obj, const char* key, float fallback, bool positive, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  ENCORE_CHECK(it->is_number(), bad_model_file, "{}: field '{}' must be a number, got {}", where, key, brief(*it));
  const double d = it->get<double>();
  // Checked as the float it becomes: 1e-50 is positive as a double but 0 as a float.
  const bool in_range = std::isfinite(d) && std::abs(d) <= std::numeric_limits<float>::max();
  const float f = in_range ? static_cast<float>(d) : 0.0f;
  ENCORE_CHECK(in_range && (!positive || f >= std::numeric_limits<float>::min()), bad_model_file,
               "{}: field '{}' = {} must be a finite{} number within float range (|x| <= 3.4e38{})", where, key,
               brief(*it), positive ? ", positive" : "", positive ? ", >= 1.2e-38" : "");
  return f;
}

// A token id, or a list of them (Hugging Face stops on any id of an eos list): every entry must be
// an id, and a list of several different ids is refused, since generation takes one.
std::int32_t token_id(const json& obj, const char* key, std::int32_t fallback, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  const auto id = [&](const json& v) {
    return static_cast<std::int32_t>(
        integer(v, key, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max(), where));
  };
  if (!it->is_array()) return id(*it);
  ENCORE_CHECK(!it->empty(), bad_model_file, "{}: field '{}' is an empty list of token ids", where, key);
  const std::int32_t first = id(it->front());
  for (const json& v : *it)
    ENCORE_CHECK(id(v) == first, unsupported,
                 "{}: field '{}' lists several token ids ({}): encore generates with one", where, key, brief(*it));
  return first;
}

// A flag that changes the model's numerics: only `supported` is implemented.
void require_flag(const json& obj, const char* key, bool fallback, bool supported, const char* section,
                  const std::string& where) {
  const bool v = field<bool>(obj, key, fallback, where);
  ENCORE_CHECK(v == supported, unsupported, "{}: {}.{} = {} is not supported (encore implements {})", where, section,
               key, v, supported);
}

}  // namespace

VitGpt2Config read_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json", gen_path = dir / "generation_config.json";
  std::error_code ec;  // not the throwing overload: a directory we may not read is Error(io)
  const bool has_gen = std::filesystem::exists(gen_path, ec);
  if (ec) detail::fail(ErrorCode::io, "{}: cannot be checked: {}", gen_path.string(), ec.message());
  return parse_config(read_text(path), has_gen ? std::optional<std::string>(read_text(gen_path)) : std::nullopt,
                      path.string(), gen_path.string());
}

VitGpt2Config parse_config(std::string_view config_json, const std::optional<std::string>& generation_json,
                           const std::string& where, const std::string& generation_where) {
  const json j = parse_object(config_json, where);
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
  constexpr std::int64_t kMaxSide = 16384, kMaxWidth = 65536, kMaxLayers = 1024, kMaxInner = 1 << 20;
  constexpr std::int64_t kMaxVocab = std::numeric_limits<std::int32_t>::max(), kMaxPositions = 1 << 24;
  VitGpt2Config c;
  c.image_size = size_field(e, "image_size", 224, kMaxSide, where);
  c.patch_size = size_field(e, "patch_size", 16, kMaxSide, where);
  c.num_channels = size_field(e, "num_channels", 3, kMaxWidth, where);
  c.enc_hidden = size_field(e, "hidden_size", 768, kMaxWidth, where);
  c.enc_layers = size_field(e, "num_hidden_layers", 12, kMaxLayers, where);
  c.enc_heads = size_field(e, "num_attention_heads", 12, kMaxWidth, where);
  c.enc_intermediate = size_field(e, "intermediate_size", 3072, kMaxInner, where);
  c.enc_layer_norm_eps = float_field(e, "layer_norm_eps", 1e-12f, true, where);
  c.enc_hidden_act = field<std::string>(e, "hidden_act", "gelu", where);
  // GPT2Config's attribute_map: a dict may use the generic names (num_attention_heads, ...).
  const auto named = [&d](const char* key, const char* alias) { return d.contains(key) || !d.contains(alias) ? key : alias; };
  c.dec_hidden = size_field(d, named("n_embd", "hidden_size"), 768, kMaxWidth, where);
  c.dec_layers = size_field(d, named("n_layer", "num_hidden_layers"), 12, kMaxLayers, where);
  c.dec_heads = size_field(d, named("n_head", "num_attention_heads"), 12, kMaxWidth, where);
  c.dec_intermediate = size_field(d, "n_inner", 4 * c.dec_hidden, kMaxInner, where);
  c.vocab_size = size_field(d, "vocab_size", 50257, kMaxVocab, where);
  c.max_positions = size_field(d, named("n_positions", "max_position_embeddings"), 1024, kMaxPositions, where);
  c.dec_layer_norm_eps = float_field(d, "layer_norm_epsilon", 1e-5f, true, where);
  c.dec_activation = field<std::string>(d, "activation_function", "gelu_new", where);

  // Variants of the architecture that transformers implements and encore does not: refused by
  // name rather than computed wrongly (or failing later on a missing tensor).
  require_flag(e, "qkv_bias", true, true, "encoder", where);
  require_flag(d, "scale_attn_weights", true, true, "decoder", where);
  require_flag(d, "scale_attn_by_inverse_layer_idx", false, false, "decoder", where);
  require_flag(d, "tie_word_embeddings", true, true, "decoder", where);  // the LM head is wte
  ENCORE_CHECK(c.num_channels == 3, unsupported, "{}: encoder.num_channels = {}, encore supports 3 (RGB)", where,
               c.num_channels);
  ENCORE_CHECK(c.image_size % c.patch_size == 0, unsupported,
               "{}: image_size {} is not a multiple of patch_size {} (Hugging Face drops the remainder; encore does "
               "not implement that)",
               where, c.image_size, c.patch_size);
  ENCORE_CHECK(c.num_patches() < kMaxPositions, bad_model_file,
               "{}: image_size {} / patch_size {} gives {} patches, more than the {} encore accepts", where, c.image_size,
               c.patch_size, c.num_patches(), kMaxPositions - 1);
  ENCORE_CHECK(c.enc_hidden % c.enc_heads == 0 && c.dec_hidden % c.dec_heads == 0, bad_model_file,
               "{}: hidden sizes {} / {} do not split into {} / {} heads", where, c.enc_hidden, c.dec_hidden, c.enc_heads,
               c.dec_heads);
  ENCORE_CHECK(c.enc_hidden == c.dec_hidden, unsupported,
               "{}: encoder hidden size {} differs from decoder n_embd {} (enc_to_dec_proj is not supported yet)", where,
               c.enc_hidden, c.dec_hidden);
  ENCORE_CHECK(c.enc_hidden_act == "gelu", unsupported, "{}: encoder hidden_act '{}' is not supported (expected gelu)",
               where, c.enc_hidden_act);
  // gelu_pytorch_tanh and gelu_fast are gelu_new's tanh form (equal within rounding).
  if (c.dec_activation == "gelu_pytorch_tanh" || c.dec_activation == "gelu_fast") c.dec_activation = "gelu_new";
  ENCORE_CHECK(c.dec_activation == "gelu_new" || c.dec_activation == "gelu", unsupported,
               "{}: decoder activation_function '{}' is not supported (expected gelu_new, gelu_pytorch_tanh, gelu_fast "
               "or gelu)",
               where, c.dec_activation);
  ENCORE_CHECK(field<bool>(d, "add_cross_attention", true, where), bad_model_file,
               "{}: decoder.add_cross_attention is false: the decoder cannot attend to the image", where);

  constexpr std::int64_t kMaxInt = std::numeric_limits<int>::max();
  // Optional lengths: absent stays unset (HF's defaults differ from any value a file could hold).
  const auto optional_int = [](const json& obj, const char* name, std::optional<int>& v, std::int64_t lo,
                               const std::string& w) {
    if (obj.contains(name) && !obj.at(name).is_null())
      v = static_cast<int>(int_field(obj, name, 0, lo, std::numeric_limits<int>::max(), w));
  };
  // Sampling settings are read as they are; generate() checks them only when it samples, as HF
  // does (a config may well hold "temperature": 0.0 beside "do_sample": false).
  const auto generation = [&](const json& obj, const std::string& w) {
    optional_int(obj, "max_length", c.max_length, 1, w);
    optional_int(obj, "max_new_tokens", c.max_new_tokens, 1, w);
    optional_int(obj, "min_new_tokens", c.min_new_tokens, 0, w);
    c.num_return_sequences =
        static_cast<int>(int_field(obj, "num_return_sequences", c.num_return_sequences, 1, kMaxInt, w));
    c.num_beams = static_cast<int>(int_field(obj, "num_beams", c.num_beams, 1, kMaxInt, w));
    c.length_penalty = float_field(obj, "length_penalty", c.length_penalty, false, w);
    c.min_length = static_cast<int>(int_field(obj, "min_length", c.min_length, 0, kMaxInt, w));
    c.do_sample = field<bool>(obj, "do_sample", c.do_sample, w);
    c.top_k = static_cast<int>(int_field(obj, "top_k", c.top_k, std::numeric_limits<int>::min(), kMaxInt, w));
    c.temperature = float_field(obj, "temperature", c.temperature, false, w);
    (void)float_field(obj, "top_p", 1.0f, false, w);  // checks it; kept as the double it is, as in HF
    if (const auto it = obj.find("top_p"); it != obj.end() && it->is_number()) c.top_p = it->get<double>();
    // true / false / "never" (Python's 1 and 0 compare equal to True and False, so HF takes them too).
    const auto es = obj.find("early_stopping");
    if (es != obj.end() && !es->is_null()) {
      if (es->is_boolean()) c.early_stopping = es->get<bool>() ? 1 : 0;
      else if (es->is_number_integer() && (*es == 0 || *es == 1)) c.early_stopping = es->get<int>();
      else if (es->is_string() && es->get<std::string>() == "never") c.early_stopping = 2;
      else detail::fail(ErrorCode::bad_model_file, "{}: field 'early_stopping' = {} must be true, false or \"never\"",
                        w, brief(*es));
    }
  };
  // Like HF 5.17 (GenerationConfig.from_pretrained / from_model_config, _prepare_special_tokens):
  // with a generation_config.json, the settings and special ids come from it alone; without one,
  // from config.json's top level, each unset one from its decoder section. The start is
  // decoder_start_token_id, else bos_token_id (else none: caption() then needs one); no eos means
  // none (generation runs to its length); pad falls back to eos.
  std::string source = where;
  json gj;
  if (generation_json) {
    source = generation_where;
    gj = parse_object(*generation_json, source);
    generation(gj, source);
  } else {
    generation(d, where);  // the decoder's settings first, the top level's over them
    generation(j, where);
  }
  // Where a setting is read, first to last: the generation file alone, or the top level then the
  // decoder section (the same precedence as the settings above).
  const std::vector<const json*> sources = generation_json ? std::vector<const json*>{&gj} : std::vector<const json*>{&j, &d};
  const auto effective = [&](const char* key) -> const json* {
    for (const json* obj : sources) {
      const auto it = obj->find(key);
      if (it != obj->end() && !it->is_null()) return &*it;
    }
    return nullptr;
  };
  constexpr std::int32_t kAbsent = std::numeric_limits<std::int32_t>::min();
  const auto special_id = [&](const char* key) -> std::optional<std::int32_t> {
    for (const json* obj : sources)
      if (const std::int32_t v = token_id(*obj, key, kAbsent, source); v != kAbsent) return v;
    return std::nullopt;
  };
  // Logits processors HF applies from these files and encore does not implement: a value other
  // than the no-op is refused by name rather than silently ignored (different tokens than HF).
  // Sampling warpers count only when the model samples, as in HF.
  const auto is_noop = [](const json& v, double noop) {
    if (v.is_number()) return v.get<double>() == noop;
    if (v.is_array() || v.is_object()) return v.empty();
    if (v.is_boolean()) return !v.get<bool>();
    return false;
  };
  struct Processor {
    const char* key;
    double noop;     // the value that does nothing (numbers); lists and objects: empty
    bool sampling;   // a warper: only applied when sampling
  };
  constexpr Processor kProcessors[] = {
      {"no_repeat_ngram_size", 0, false},  {"encoder_no_repeat_ngram_size", 0, false},
      {"repetition_penalty", 1, false},    {"encoder_repetition_penalty", 1, false},
      {"bad_words_ids", 0, false},         {"force_words_ids", 0, false},
      {"constraints", 0, false},           {"forced_bos_token_id", -1e300, false},
      {"forced_eos_token_id", -1e300, false}, {"suppress_tokens", 0, false},
      {"begin_suppress_tokens", 0, false}, {"exponential_decay_length_penalty", -1e300, false},
      {"sequence_bias", 0, false},         {"num_beam_groups", 1, false},
      {"diversity_penalty", 0, false},     {"penalty_alpha", 0, false},
      {"guidance_scale", 1, false},        {"typical_p", 1, true},
      {"min_p", 0, true},                  {"epsilon_cutoff", 0, true},
      {"eta_cutoff", 0, true},
  };
  for (const Processor& p : kProcessors) {
    if (p.sampling && !c.do_sample) continue;
    const json* v = effective(p.key);
    ENCORE_CHECK(v == nullptr || is_noop(*v, p.noop), unsupported,
                 "{}: generation setting '{}' = {} is not supported by encore's generation (Hugging Face would apply "
                 "it; encore would silently produce different tokens)",
                 source, p.key, brief(*v));
  }

  const std::optional<std::int32_t> start = special_id("decoder_start_token_id"), bos = special_id("bos_token_id");
  c.decoder_start_token_id = start ? *start : bos ? *bos : -1;
  c.eos_token_id = special_id("eos_token_id").value_or(-1);
  c.pad_token_id = special_id("pad_token_id").value_or(c.eos_token_id);
  // HF refuses these at load (GenerationConfig.validate); here every default caption would fail.
  ENCORE_CHECK(c.num_return_sequences == 1 || c.num_beams > 1 || c.do_sample, bad_model_file,
               "{}: num_return_sequences = {} with greedy decoding (num_beams 1, do_sample false) returns one "
               "sequence; Hugging Face refuses this config too",
               source, c.num_return_sequences);
  ENCORE_CHECK(c.num_beams == 1 || c.num_return_sequences <= c.num_beams, bad_model_file,
               "{}: num_return_sequences = {} is more than num_beams = {}", source, c.num_return_sequences,
               c.num_beams);
  for (auto [v, name] : {std::pair{c.eos_token_id, "eos_token_id"}, {c.pad_token_id, "pad_token_id"},
                         {c.decoder_start_token_id, "decoder_start_token_id (or bos_token_id)"}})
    ENCORE_CHECK(v == -1 || (v >= 0 && v < c.vocab_size), bad_model_file,  // -1: the files name none
                 "{}: {} = {} is outside the vocabulary of {}", where, name, v, c.vocab_size);
  return c;
}

}  // namespace encore::vitgpt2
