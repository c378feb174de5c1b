// ViT-GPT2 internals shared by the config parser, the weight loader, the graphs and the decode
// session.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "encore/graph/graph.h"
#include "encore/io/model_files.h"
#include "encore/models/vit_gpt2.h"

namespace encore::vitgpt2 {

/// Reads config.json (+ generation_config.json when present). Throws Error(io / bad_model_file /
/// unsupported) naming the file and field.
VitGpt2Config read_config(const std::filesystem::path& dir);
/// The same from the texts of config.json and, when given, generation_config.json; `where` and
/// `generation_where` name them in messages.
VitGpt2Config parse_config(std::string_view config_json, const std::optional<std::string>& generation_json,
                           const std::string& where, const std::string& generation_where);

struct EncoderLayer {
  Tensor ln1_w, ln1_b, qkv_w, qkv_b, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

struct DecoderLayer {
  Tensor ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b;                     // self-attention (Conv1D [in, out])
  Tensor lnx_w, lnx_b, xq_w, xq_b, xkv_w, xkv_b, xproj_w, xproj_b;         // cross-attention
  Tensor ln2_w, ln2_b, fc_w, fc_b, fc2_w, fc2_b;                           // MLP
};

/// Something derived from the weights once and shared by every session over them (the fused CUDA
/// step's repacked projections), made by the first session that needs it.
struct SharedDerived {
  std::mutex mutex;
  std::shared_ptr<const void> value;
};

struct Weights {
  Tensor patch_w, patch_b, cls, pos;
  std::vector<EncoderLayer> encoder;
  Tensor enc_ln_w, enc_ln_b;
  Tensor wte, wpe;
  std::vector<DecoderLayer> decoder;
  Tensor ln_f_w, ln_f_b;
  std::shared_ptr<SharedDerived> decoder_pack = std::make_shared<SharedDerived>();
};

/// Loads and checks every tensor (shapes against the config), fusing Q/K/V of the encoder into one
/// projection and converting to `dtype` on `device` once.
Weights load_weights(const std::filesystem::path& dir, const VitGpt2Config& config, DType dtype, Device device);
Weights load_weights(io::ModelWeights files, const VitGpt2Config& config, DType dtype, Device device);

/// Graph builders (model code): each returns the output value.
Value build_encoder(Graph& g, Value pixels, const Weights& w, const VitGpt2Config& c, DType dtype);
/// Decoder over whole sequences (teacher forcing): ids [B, T] -> logits [B, T, V].
Value build_decoder_full(Graph& g, Value ids, Value positions, Value encoder_states, const Weights& w,
                         const VitGpt2Config& c);

}  // namespace encore::vitgpt2
