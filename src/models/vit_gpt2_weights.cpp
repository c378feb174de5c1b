// Weight names of a VisionEncoderDecoderModel checkpoint (transformers 4 and 5 spellings) mapped to
// encore's layout, checked against the config, converted once.
#include <initializer_list>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "encore/io/model_files.h"
#include "models/vit_gpt2_internal.h"

namespace encore::vitgpt2 {
namespace {

class Loader {
 public:
  Loader(io::ModelWeights files, DType dtype, Device device) : files_(std::move(files)), dtype_(dtype), device_(device) {}

  // The one of `names` present in the checkpoint (the spellings of one tensor), with its shape
  // checked. Two present is ambiguous: refused rather than one of them silently chosen.
  Tensor get(std::initializer_list<std::string> names, const Shape& shape) {
    const std::string* found = nullptr;
    for (const std::string& n : names) {
      if (!files_.contains(n)) continue;
      ENCORE_CHECK(found == nullptr, bad_model_file,
                   "checkpoint has both '{}' and '{}', two spellings of one tensor: which one is meant is unclear",
                   *found, n);
      found = &n;
    }
    if (found == nullptr) {
      std::string tried;
      for (const std::string& n : names) tried += (tried.empty() ? "'" : ", '") + n + "'";
      detail::fail(ErrorCode::bad_model_file, "checkpoint has no tensor {} (tried {})", *names.begin(), tried);
    }
    const std::string& n = *found;
    used_.insert(n);
    Tensor t = files_.tensor(n);
    ENCORE_CHECK(t.shape() == shape, bad_model_file, "tensor '{}' has shape {}, the config implies {}", n,
                 t.shape().str(), shape.str());
    ENCORE_CHECK(is_floating(t.dtype()), bad_model_file, "tensor '{}' is {}, expected a float dtype", n,
                 dtype_name(t.dtype()));
    return t;
  }
  // Converted to the model's dtype and device (no copy when they already match on the CPU).
  Tensor place(const Tensor& t) const {
    Tensor c = t.dtype() == dtype_ ? t : t.to(dtype_);
    return device_.is_cpu() ? c : c.to(device_);
  }
  Tensor load(std::initializer_list<std::string> names, const Shape& shape) { return place(get(names, shape)); }
  bool has(const std::string& name) const { return files_.contains(name); }

  // Tensors of the checkpoint the model did not read, but those a VisionEncoderDecoderModel
  // checkpoint holds without needing them (GPT-2's causal-mask buffers, the tied lm_head, the ViT
  // pooler): reported as a warning, as HF reports unused weights (e.g. more layers than the config).
  void warn_unused() const {
    std::vector<std::string> unused;
    for (const std::string& n : files_.names()) {
      const bool expected = n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias") ||
                            n.ends_with("crossattention.bias") || n.ends_with("crossattention.masked_bias") ||
                            n.starts_with("encoder.pooler.");
      if (!expected && !used_.contains(n)) unused.push_back(n);
    }
    if (unused.empty()) return;
    std::string list;
    for (std::size_t i = 0; i < unused.size() && i < 8; ++i) list += (i ? ", '" : "'") + unused[i] + "'";
    detail::log(LogLevel::warn, "VitGpt2: {} tensor(s) of the checkpoint are not used by the model ({}{})",
                unused.size(), list, unused.size() > 8 ? ", ..." : "");
  }

 private:
  std::set<std::string> used_;
  io::ModelWeights files_;
  DType dtype_;
  Device device_;
};

Tensor concat_rows(std::initializer_list<Tensor> parts) {
  Shape shape = parts.begin()->shape();
  shape[0] = 0;
  for (const Tensor& p : parts) shape[0] += p.dim(0);
  Tensor out = Tensor::empty(shape, DType::F32);
  std::int64_t row = 0;
  for (const Tensor& p : parts) {
    out.slice(0, row, row + p.dim(0)).copy_from(p.to(DType::F32));
    row += p.dim(0);
  }
  return out;
}

EncoderLayer load_encoder_layer(Loader& l, int i, const VitGpt2Config& c) {
  const std::int64_t d = c.enc_hidden, ff = c.enc_intermediate;
  // Both ViT spellings: transformers 4 (`encoder.encoder.layer.{i}.attention.attention.query`) and 5
  // (`encoder.layers.{i}.attention.q_proj`: its conversion mapping renames `encoder.layer.` to
  // `layers.`, as save_pretrained(save_original_format=False) writes).
  const std::string n = std::to_string(i) + ".";
  auto get2 = [&](const char* v4, const char* v5, const char* what, const Shape& s) {
    return l.get({"encoder.encoder.layer." + n + v4 + "." + what, "encoder.layers." + n + v5 + "." + what}, s);
  };
  EncoderLayer e;
  // Q, K and V become one [3D, D] projection: one GEMM instead of three.
  e.qkv_w = l.place(concat_rows({get2("attention.attention.query", "attention.q_proj", "weight", {d, d}),
                                 get2("attention.attention.key", "attention.k_proj", "weight", {d, d}),
                                 get2("attention.attention.value", "attention.v_proj", "weight", {d, d})}));
  e.qkv_b = l.place(concat_rows({get2("attention.attention.query", "attention.q_proj", "bias", {d}),
                                 get2("attention.attention.key", "attention.k_proj", "bias", {d}),
                                 get2("attention.attention.value", "attention.v_proj", "bias", {d})}));
  e.out_w = l.place(get2("attention.output.dense", "attention.o_proj", "weight", {d, d}));
  e.out_b = l.place(get2("attention.output.dense", "attention.o_proj", "bias", {d}));
  e.ln1_w = l.place(get2("layernorm_before", "layernorm_before", "weight", {d}));
  e.ln1_b = l.place(get2("layernorm_before", "layernorm_before", "bias", {d}));
  e.ln2_w = l.place(get2("layernorm_after", "layernorm_after", "weight", {d}));
  e.ln2_b = l.place(get2("layernorm_after", "layernorm_after", "bias", {d}));
  e.fc1_w = l.place(get2("intermediate.dense", "mlp.fc1", "weight", {ff, d}));
  e.fc1_b = l.place(get2("intermediate.dense", "mlp.fc1", "bias", {ff}));
  e.fc2_w = l.place(get2("output.dense", "mlp.fc2", "weight", {d, ff}));
  e.fc2_b = l.place(get2("output.dense", "mlp.fc2", "bias", {d}));
  return e;
}

DecoderLayer load_decoder_layer(Loader& l, int i, const VitGpt2Config& c) {
  const std::int64_t d = c.dec_hidden, ff = c.dec_intermediate;
  const std::string p = "decoder.transformer.h." + std::to_string(i) + ".";
  auto w = [&](const std::string& name, const Shape& s) { return l.load({p + name}, s); };
  DecoderLayer x;
  x.ln1_w = w("ln_1.weight", {d});
  x.ln1_b = w("ln_1.bias", {d});
  x.attn_w = w("attn.c_attn.weight", {d, 3 * d});
  x.attn_b = w("attn.c_attn.bias", {3 * d});
  x.proj_w = w("attn.c_proj.weight", {d, d});
  x.proj_b = w("attn.c_proj.bias", {d});
  x.lnx_w = w("ln_cross_attn.weight", {d});
  x.lnx_b = w("ln_cross_attn.bias", {d});
  x.xq_w = w("crossattention.q_attn.weight", {d, d});
  x.xq_b = w("crossattention.q_attn.bias", {d});
  x.xkv_w = w("crossattention.c_attn.weight", {d, 2 * d});
  x.xkv_b = w("crossattention.c_attn.bias", {2 * d});
  x.xproj_w = w("crossattention.c_proj.weight", {d, d});
  x.xproj_b = w("crossattention.c_proj.bias", {d});
  x.ln2_w = w("ln_2.weight", {d});
  x.ln2_b = w("ln_2.bias", {d});
  x.fc_w = w("mlp.c_fc.weight", {d, ff});
  x.fc_b = w("mlp.c_fc.bias", {ff});
  x.fc2_w = w("mlp.c_proj.weight", {ff, d});
  x.fc2_b = w("mlp.c_proj.bias", {d});
  return x;
}

}  // namespace

Weights load_weights(const std::filesystem::path& dir, const VitGpt2Config& c, DType dtype, Device device) {
  return load_weights(io::ModelWeights::open(dir), c, dtype, device);
}

Weights load_weights(io::ModelWeights files, const VitGpt2Config& c, DType dtype, Device device) {
  Loader l(std::move(files), dtype, device);
  const std::int64_t d = c.enc_hidden, p = c.patch_size;
  Weights w;
  w.patch_w = l.load({"encoder.embeddings.patch_embeddings.projection.weight"}, {d, c.num_channels, p, p});
  w.patch_b = l.load({"encoder.embeddings.patch_embeddings.projection.bias"}, {d});
  w.cls = l.load({"encoder.embeddings.cls_token"}, {1, 1, d});
  w.pos = l.load({"encoder.embeddings.position_embeddings"}, {1, c.num_patches() + 1, d});
  for (int i = 0; i < c.enc_layers; ++i) w.encoder.push_back(load_encoder_layer(l, i, c));
  w.enc_ln_w = l.load({"encoder.layernorm.weight"}, {d});
  w.enc_ln_b = l.load({"encoder.layernorm.bias"}, {d});
  // The LM head is tied to wte, as HF ties them: a checkpoint may hold either or both. Both but
  // different is an untied head, which HF then uses and encore does not implement: refused.
  const std::string wte_name = "decoder.transformer.wte.weight", head_name = "decoder.lm_head.weight";
  const Shape wte_shape{c.vocab_size, c.dec_hidden};
  if (!l.has(wte_name) && l.has(head_name)) {
    w.wte = l.load({head_name}, wte_shape);
  } else {
    const Tensor wte = l.get({wte_name}, wte_shape);
    if (l.has(head_name)) {
      const Tensor head = l.get({head_name}, wte_shape);
      const bool same = head.dtype() == wte.dtype() ? std::memcmp(head.contiguous().data(), wte.contiguous().data(),
                                                                   wte.nbytes()) == 0
                                                    : head.to(DType::F32).to_float_vector() ==
                                                          wte.to(DType::F32).to_float_vector();
      ENCORE_CHECK(same, unsupported,
                   "checkpoint's '{}' differs from '{}': an LM head not tied to the token embeddings is not supported "
                   "(Hugging Face would use it as it is)",
                   head_name, wte_name);
    }
    w.wte = l.place(wte);
  }
  w.wpe = l.load({"decoder.transformer.wpe.weight"}, {c.max_positions, c.dec_hidden});
  for (int i = 0; i < c.dec_layers; ++i) w.decoder.push_back(load_decoder_layer(l, i, c));
  w.ln_f_w = l.load({"decoder.transformer.ln_f.weight"}, {c.dec_hidden});
  w.ln_f_b = l.load({"decoder.transformer.ln_f.bias"}, {c.dec_hidden});
  l.warn_unused();
  return w;
}

}  // namespace encore::vitgpt2
