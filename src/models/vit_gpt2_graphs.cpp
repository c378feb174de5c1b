// The ViT encoder and the GPT-2 decoder (teacher-forced) as encore graphs, written the way the
// reference modules compute them (modeling_vit.py, modeling_gpt2.py).
#include "core/check.h"
#include "models/vit_gpt2_internal.h"

namespace encore::vitgpt2 {
namespace {
constexpr LinearAttrs kConv1D{.layout = WeightLayout::in_out};  // GPT-2 stores projections [in, out]
}

Value build_encoder(Graph& g, Value pixels, const Weights& w, const VitGpt2Config& c, DType dtype) {
  auto k = [&g](const Tensor& t) { return g.constant(t); };
  const std::int64_t batch = g.shape(pixels)[0], d = c.enc_hidden, n = c.num_patches();
  const int p = static_cast<int>(c.patch_size);
  Value x = dtype == g.dtype(pixels) ? pixels : g.cast(pixels, dtype);
  // Patch embedding = a stride-p convolution; tokens in row-major patch order.
  Value patches = g.transpose(g.reshape(g.conv2d(x, k(w.patch_w), k(w.patch_b), {.stride = {p, p}}), {batch, d, n}), 1, 2);
  const Value tokens[] = {g.expand(k(w.cls), {batch, 1, d}), patches};
  Value h = g.add(g.concat(tokens, 1), k(w.pos));
  const LayerNormAttrs ln{.eps = c.enc_layer_norm_eps};
  for (const EncoderLayer& l : w.encoder) {
    Value qkv = g.linear(g.layer_norm(h, k(l.ln1_w), k(l.ln1_b), ln), k(l.qkv_w), k(l.qkv_b));
    Value a = g.attention(g.slice(qkv, -1, 0, d), g.slice(qkv, -1, d, 2 * d), g.slice(qkv, -1, 2 * d, 3 * d), {},
                          {.num_heads = static_cast<int>(c.enc_heads)});
    h = g.add(h, g.linear(a, k(l.out_w), k(l.out_b)));
    Value m = g.layer_norm(h, k(l.ln2_w), k(l.ln2_b), ln);
    h = g.add(h, g.linear(g.gelu(g.linear(m, k(l.fc1_w), k(l.fc1_b))), k(l.fc2_w), k(l.fc2_b)));
  }
  return g.layer_norm(h, k(w.enc_ln_w), k(w.enc_ln_b), ln);
}

Value build_decoder_full(Graph& g, Value ids, Value positions, Value encoder_states, const Weights& w,
                         const VitGpt2Config& c) {
  auto k = [&g](const Tensor& t) { return g.constant(t); };
  const std::int64_t d = c.dec_hidden;
  const int heads = static_cast<int>(c.dec_heads);
  const Activation act = c.dec_activation == "gelu_new" ? Activation::gelu_tanh : Activation::gelu;
  const LayerNormAttrs ln{.eps = c.dec_layer_norm_eps};
  Value h = g.add(g.embedding(k(w.wte), ids), g.embedding(k(w.wpe), positions));
  for (const DecoderLayer& l : w.decoder) {
    Value qkv = g.linear(g.layer_norm(h, k(l.ln1_w), k(l.ln1_b), ln), k(l.attn_w), k(l.attn_b), kConv1D);
    Value a = g.attention(g.slice(qkv, -1, 0, d), g.slice(qkv, -1, d, 2 * d), g.slice(qkv, -1, 2 * d, 3 * d), {},
                          {.num_heads = heads, .causal = true});
    h = g.add(h, g.linear(a, k(l.proj_w), k(l.proj_b), kConv1D));
    Value q = g.linear(g.layer_norm(h, k(l.lnx_w), k(l.lnx_b), ln), k(l.xq_w), k(l.xq_b), kConv1D);
    Value kv = g.linear(encoder_states, k(l.xkv_w), k(l.xkv_b), kConv1D);
    Value x = g.attention(q, g.slice(kv, -1, 0, d), g.slice(kv, -1, d, 2 * d), {}, {.num_heads = heads});
    h = g.add(h, g.linear(x, k(l.xproj_w), k(l.xproj_b), kConv1D));
    Value m = g.layer_norm(h, k(l.ln2_w), k(l.ln2_b), ln);
    h = g.add(h, g.linear(g.activation(g.linear(m, k(l.fc_w), k(l.fc_b), kConv1D), act), k(l.fc2_w), k(l.fc2_b), kConv1D));
  }
  h = g.layer_norm(h, k(w.ln_f_w), k(w.ln_f_b), ln);
  return g.linear(h, k(w.wte), {});  // tied LM head: logits = h wteᵀ
}

}  // namespace encore::vitgpt2
