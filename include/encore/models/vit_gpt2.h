// encore — ViT-GPT2 image captioning (Hugging Face VisionEncoderDecoderModel: a ViT encoder and a
// GPT-2 decoder with cross-attention), loaded directly from a `save_pretrained` directory.
//
//   auto model = encore::VitGpt2::load("vit-gpt2-dir", {.device = "cpu"});
//   auto pixels = encore::io::preprocess_vit_batch(std::vector{encore::io::load_image("cat.jpg")});
//   auto caps = model.caption(pixels, {.max_length = 16, .num_beams = 4});
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "encore/core/device.h"
#include "encore/core/tensor.h"
#include "encore/decode/generation.h"
#include "encore/io/safetensors.h"

namespace encore {

/// Sizes read from config.json (any ViT/GPT-2 sizes, not only base).
struct VitGpt2Config {
  // encoder (ViT)
  std::int64_t image_size = 224, patch_size = 16, num_channels = 3;
  std::int64_t enc_hidden = 768, enc_layers = 12, enc_heads = 12, enc_intermediate = 3072;
  float enc_layer_norm_eps = 1e-12f;
  std::string enc_hidden_act = "gelu";
  // decoder (GPT-2)
  std::int64_t dec_hidden = 768, dec_layers = 12, dec_heads = 12, dec_intermediate = 3072;
  std::int64_t vocab_size = 50257, max_positions = 1024;
  float dec_layer_norm_eps = 1e-5f;
  std::string dec_activation = "gelu_new";
  // generation defaults (config.json / generation_config.json), resolved as HF 5.17 does: start =
  // decoder_start_token_id, else bos_token_id; -1 where the files name none (no start: caption()
  // needs one given; no eos: generation runs to its length; no pad: eos).
  std::int32_t decoder_start_token_id = 50256, eos_token_id = 50256, pad_token_id = 50256;
  /// Unset when no file names it: HF 5.x then generates 20 new tokens (max_length 21 with the
  /// start token).
  std::optional<int> max_length;
  std::optional<int> max_new_tokens, min_new_tokens;  ///< override max_length / min_length when set
  int num_beams = 1, min_length = 0, num_return_sequences = 1;
  float length_penalty = 1.0f;
  int early_stopping = 0;
  bool do_sample = false;
  float temperature = 1.0f;
  double top_p = 1.0;  ///< a double, as GenerationOptions::top_p
  int top_k = 50;

  std::int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

/// A model held in memory instead of a directory (embedded in an application, fetched over a
/// network): the texts of config.json and, when there is one, generation_config.json, and the
/// weights as safetensors files (io::SafetensorsFile::from_bytes / from_buffer): one file, or the
/// shards of a sharded checkpoint in any order.
struct VitGpt2Files {
  std::string config_json;
  std::optional<std::string> generation_config_json;
  std::vector<io::SafetensorsFile> weights;
};

struct ModelOptions {
  std::string device = "cpu";   ///< "cpu", "cuda", "cuda:N"
  DType dtype = DType::F32;     ///< compute/weight dtype: f32 or bf16 on CPU; f32, f16, bf16 on CUDA
  int num_threads = 0;          ///< CPU threads; 0 = encore::num_threads()
};

/// Where captioning time went (milliseconds, wall clock).
struct CaptionTimings {
  double encode_ms = 0;  ///< encoder + cross-attention keys/values
  double decode_ms = 0;  ///< all decode steps and the search
};

/// One caption.
struct Caption {
  std::vector<std::int32_t> ids;  ///< start token included (as HF returns them)
  float score = 0.0f;             ///< beam: HF sequences_scores; greedy and sampling: sum of log-probs
  std::vector<float> token_scores;  ///< per generated token, as GenerationResult::token_scores
};

class VitGpt2 {
 public:
  /// Loads `dir` (config.json + model.safetensors or a sharded index; generation_config.json if
  /// present). Accepts transformers 4 and 5 tensor names. Throws Error(io) for a missing file (a
  /// pytorch_model.bin-only directory is pointed to tools/convert_to_safetensors.py),
  /// Error(bad_model_file) for a malformed config or a missing/mis-shaped tensor (naming it),
  /// Error(invalid_argument/unsupported) for a bad device or dtype. Two spellings of one tensor in
  /// one checkpoint are refused as ambiguous. On the CPU in the files' dtype the weights are views
  /// of the memory-mapped files: they must not be truncated or rewritten while the model lives.
  static VitGpt2 load(const std::filesystem::path& dir, const ModelOptions& options = {});
  /// The same from memory: the files are validated like a directory's (errors name them as
  /// "<memory>/config.json", "<memory>/generation_config.json" and each weights file's source).
  /// The weights are viewed, not copied, on the CPU in their own dtype.
  static VitGpt2 load(VitGpt2Files files, const ModelOptions& options = {});

  VitGpt2(VitGpt2&&) noexcept;
  VitGpt2& operator=(VitGpt2&&) noexcept;
  ~VitGpt2();

  const VitGpt2Config& config() const noexcept;
  Device device() const noexcept;

  /// Encoder: pixel_values f32 [B, 3, image_size, image_size] (any device) -> last_hidden_state
  /// [B, 1 + patches, enc_hidden] f32 on the CPU.
  Tensor encode(const Tensor& pixel_values) const;
  /// Teacher-forced decoder logits: ids i32/i64 [B, T] -> [B, T, vocab] f32 on the CPU.
  Tensor decoder_logits(const Tensor& encoder_states, const Tensor& ids) const;
  /// The model's generation defaults (config.json, then generation_config.json) as options: what
  /// HF `generate()` uses for settings it is not given. Start from these to caption as HF would,
  /// e.g. `auto o = model.generation_options(); o.max_length = 16;` (when the model's files set
  /// max_new_tokens or min_new_tokens, those override max_length / min_length, as in HF: set them
  /// to -1 too).
  GenerationOptions generation_options() const;
  /// Captions for a batch of preprocessed images [B, 3, H, W] (HF `generate` semantics): B *
  /// num_return_sequences of them, image by image (beam search: best first).
  /// Special ids left unset (std::nullopt) each take the model's, field by field, as HF does for
  /// ids it is not given; a set one is used as given (start 0; eos -1: no eos); other options are
  /// used as given (see generation_options()). Options are checked before any work.
  /// The planned encoder and decode session (KV cache, cross K/V, and on CUDA the recorded
  /// graphs) are kept for the next call with the same batch, rows per image (beams or samples) and
  /// resolved max_length (a few shapes; release_plans() frees them). Safe to call from several
  /// threads: each call works on plans of its own; on CUDA, calls on one device run one at a time
  /// (their plans record CUDA graphs on the device's one stream), so a token callback must not
  /// wait for another thread's call on that device.
  std::vector<Caption> caption(const Tensor& pixel_values, GenerationOptions options,
                               CaptionTimings* timings = nullptr) const;
  /// Frees the plans and decode sessions kept between calls (their arenas, caches, graphs). On
  /// CUDA their memory returns to encore's cache; encore::release_cached_memory(device) then
  /// gives it back to the system.
  void release_plans();

 private:
  struct Impl;
  explicit VitGpt2(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace encore
