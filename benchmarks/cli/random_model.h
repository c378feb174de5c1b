// Random-weight ViT-GPT2 models for benchmarking: written once as a Hugging Face style directory
// (config.json + model.safetensors with transformers' tensor names) and reused afterwards.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace encore::bench {

/// Sizes of a random ViT encoder + GPT-2 decoder (with cross-attention).
struct RandomModelSpec {
  std::string name;  ///< "base" or "tiny"
  std::int64_t image_size = 224, patch_size = 16, enc_hidden = 768, enc_layers = 12, enc_heads = 12,
               enc_intermediate = 3072;
  std::int64_t dec_hidden = 768, dec_layers = 12, dec_heads = 12, dec_intermediate = 3072, vocab_size = 50257,
               max_positions = 1024;
  std::int32_t special_token_id = 50256;  ///< bos = eos = pad = decoder_start (GPT-2's <|endoftext|>)
  std::uint64_t seed = 20261129;
};

/// "base": ViT-B/16 (224, patch 16) + GPT-2 small. "tiny": small sizes for a smoke run. Throws
/// Error(invalid_argument) naming `name` and the accepted names otherwise.
RandomModelSpec random_model_spec(const std::string& name);

/// The directory name used in the model cache, e.g. "vit-b16-gpt2-random-base".
std::string random_model_dir_name(const RandomModelSpec& spec);

/// Makes sure `dir` holds the model: reuses it when config.json and model.safetensors are present,
/// otherwise writes them (into a temporary sibling, renamed at the end so that an interrupted run
/// never leaves a half-written model behind). Weights: N(0, 0.02), LayerNorm weights 1 + N(0, 0.02),
/// all from `spec.seed`. Returns true when the model was written, false when it was reused.
bool ensure_random_model(const std::filesystem::path& dir, const RandomModelSpec& spec);

}  // namespace encore::bench
