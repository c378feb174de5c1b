// encore — the attributes of graph ops. Each op kind that has settings has one plain struct here;
// model code passes them to the builder with designated initialisers.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <vector>

#include "encore/core/dtype.h"
#include "encore/core/shape.h"

namespace encore {

/// Pointwise activations (also fusable into Linear/MatMul).
enum class Activation : std::uint8_t {
  none,
  gelu,       ///< exact: 0.5 x (1 + erf(x / sqrt 2)) (HF ViT, Segmenter, nn.GELU()).
  gelu_tanh,  ///< 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2 "gelu_new").
  relu,
  silu,       ///< x * sigmoid(x), a.k.a. swish.
  sigmoid,
  tanh,
};
const char* activation_name(Activation a) noexcept;

/// Elementwise binary ops with NumPy broadcasting.
enum class BinaryOp : std::uint8_t { add, sub, mul, div };

/// How a weight matrix of a Linear is stored.
enum class WeightLayout : std::uint8_t {
  out_in,  ///< [N, K]: torch nn.Linear; y = x W^T.
  in_out,  ///< [K, N]: GPT-2 Conv1D, Segmenter proj_patch; y = x W.
};

struct LinearAttrs {
  WeightLayout layout = WeightLayout::out_in;
  Activation activation = Activation::none;  ///< applied after the bias.
};

/// Batched matrix product: a [..., M, K] (or [..., K, M] when trans_a) times b [..., K, N]
/// (or [..., N, K] when trans_b), batch dimensions broadcast; out = alpha * a b.
struct MatMulAttrs {
  bool trans_a = false;
  bool trans_b = false;
  float alpha = 1.0f;
};

/// LayerNorm flavours found in the reference models.
enum class LayerNormKind : std::uint8_t {
  standard,        ///< (x - mean) / sqrt(var_biased + eps) * g + b  (torch nn.LayerNorm).
  unbiased_std,    ///< (x - mean) / (std_unbiased + eps) * g + b    (CASS-NAT's LayerNorm).
};

struct LayerNormAttrs {
  float eps = 1e-5f;
  LayerNormKind kind = LayerNormKind::standard;
};

struct RmsNormAttrs {
  float eps = 1e-6f;
};

/// GroupNorm over [B, C, *]: each of `groups` groups of C/groups channels is normalised over its
/// channels and all spatial positions (biased variance), then a per-channel affine.
struct GroupNormAttrs {
  int groups = 1;
  float eps = 1e-5f;
};

/// v / max(||v||_2, eps) along `axis` (eps = 0 reproduces Segmenter's plain division).
struct L2NormAttrs {
  int axis = -1;
  float eps = 0.0f;
};

struct SoftmaxAttrs {
  int axis = -1;
};

/// Gated linear units over `axis`, split into halves a (first) and b (second).
enum class GluKind : std::uint8_t {
  glu,     ///< a * sigmoid(b)
  swiglu,  ///< silu(a) * b
};
struct GluAttrs {
  GluKind kind = GluKind::glu;
  int axis = -1;
};

/// y = x * scale + shift.
struct ScaleAttrs {
  float scale = 1.0f;
  float shift = 0.0f;
};

/// How an attention mask input is interpreted.
enum class MaskKind : std::uint8_t {
  none,
  key_padding,  ///< bool/u8 [B, Tk]: true (nonzero) = attend, false = masked.
  additive,     ///< float, broadcastable to [B, Hq, Tq, Tk]; added to the scaled scores.
};

/// Value a masked score takes before the softmax.
enum class MaskFill : std::uint8_t {
  lowest,        ///< float32 lowest (HF/CASS-NAT): a fully masked row becomes uniform.
  neg_infinity,  ///< -inf: a fully masked row outputs zeros.
};

/// Scaled dot-product attention over token-major tensors (strided views allowed, e.g. slices of a
/// fused QKV projection): q [B, Tq, Hq*D], k [B, Tk, Hkv*D], v [B, Tk, Hkv*D] -> out
/// [B, Tq, Ho*D] with Ho = max(Hq, Hkv).
/// - Hq >= Hkv (MHA, GQA, MQA): query head h uses kv head h / (Hq / Hkv) (repeat-interleave).
/// - Hq < Hkv (reverse sparse-query attention, RxT): output head j uses query head j mod Hq and
///   kv head j (queries are tiled).
/// Hq and Hkv must divide one another. Softmax is in f32 whatever the input dtype.
struct AttentionAttrs {
  int num_heads = 1;         ///< Hq.
  int num_kv_heads = 0;      ///< Hkv; 0 means = num_heads.
  int head_dim = 0;          ///< D; 0 means inferred from q's last dim / num_heads.
  float scale = 0.0f;        ///< 0 means 1/sqrt(D).
  bool causal = false;       ///< query i sees keys j <= i + (Tk - Tq).
  MaskKind mask = MaskKind::none;
  MaskFill fill = MaskFill::lowest;
};

/// How decode attention spreads its work (see docs/ARCHITECTURE.md, decode).
enum class DecodeStrategy : std::uint8_t {
  automatic,  ///< pick per shape from measured crossovers
  plain,      ///< one worker per (sequence, kv head)
  split,      ///< fixed KV split per (sequence, kv head) + LSE merge (FlashDecoding)
  lean,       ///< stream-K: equal KV tiles over all workers, ranges cross heads (LeanAttention)
};

/// Attention of a few new query tokens per sequence over a paged KV cache:
/// q [B, Tq, Hq*D]; k_cache/v_cache [num_blocks, Hkv, block_size, D]; block_table i32
/// [B, max_blocks] (physical block of each logical block); lengths i32 [B] (valid tokens per
/// sequence, including the Tq new ones, already written). Query row t of sequence b sits at
/// position lengths[b] - Tq + t and sees keys at positions <= its own (causal). Hq % Hkv == 0.
struct DecodeAttentionAttrs {
  int num_heads = 1;        ///< Hq
  int num_kv_heads = 0;     ///< Hkv; 0 means = num_heads
  float scale = 0.0f;       ///< 0 means 1/sqrt(D)
  DecodeStrategy strategy = DecodeStrategy::automatic;
  int num_splits = 0;       ///< split strategy: KV chunks per (sequence, head); 0 = heuristic
};

/// Conformer relative-position self-attention (Transformer-XL style, CASS-NAT):
/// score(i, j) = ((q_i + u) . k_j + (q_i + v) . p[clamp(j - i, -K, K) + K]) * scale,
/// q/k/v [B, T, H*D], p [2K+1, H*D] (already projected), u/v biases [H, D].
struct RelPosAttentionAttrs {
  int num_heads = 1;
  int max_relative = 0;      ///< K.
  float scale = 0.0f;        ///< 0 means 1/sqrt(D).
  MaskKind mask = MaskKind::none;   ///< key_padding only; masked probabilities are zeroed.
};

/// Rotary position embedding applied to x [B, T, H*D] at positions offset + t.
enum class RopeLayout : std::uint8_t {
  half_split,   ///< rotate pairs (i, i + R/2) (GPT-NeoX / Llama "rotate_half").
  interleaved,  ///< rotate pairs (2i, 2i + 1) (GPT-J / RoFormer).
};
struct RopeAttrs {
  int num_heads = 1;
  int rotary_dim = 0;        ///< R <= D; 0 means D.
  float base = 10000.0f;
  RopeLayout layout = RopeLayout::half_split;
  std::int64_t position_offset = 0;
};

struct Conv2dAttrs {
  std::array<int, 2> stride{1, 1};
  std::array<int, 2> padding{0, 0};
  std::array<int, 2> dilation{1, 1};
  int groups = 1;
};

struct Conv1dAttrs {
  int stride = 1;
  int padding = 0;
  int dilation = 1;
  int groups = 1;  ///< = channels for depthwise.
};

enum class ResizeMode : std::uint8_t {
  nearest,   ///< PyTorch 'nearest' (floor of the scaled index).
  bilinear,  ///< align_corners = false, no antialias.
  bicubic,   ///< A = -0.75, align_corners = false, border clamp (PyTorch).
};
/// Resizes the last two dims of [N, C, H, W] to out_h x out_w.
struct ResizeAttrs {
  ResizeMode mode = ResizeMode::bilinear;
  std::int64_t out_h = 0;
  std::int64_t out_w = 0;
};

struct ReduceAttrs {
  std::vector<int> axes;     ///< empty = all axes.
  bool keepdims = false;
};

struct ArgMaxAttrs {
  int axis = -1;
  bool keepdims = false;     ///< ties resolve to the lowest index (torch.argmax).
};

/// Largest k along `axis`, sorted descending (ties: lower index first). Outputs values and i64 indices.
struct TopKAttrs {
  int k = 1;
  int axis = -1;
};

struct CumSumAttrs {
  int axis = -1;
};

/// out = x.index_select(axis, index): index is i32/i64 1-D; used for beam reordering.
struct GatherAttrs {
  int axis = 0;
};

/// out = x, then out.index_add_(axis, index, src) (MoE combine).
struct ScatterAddAttrs {
  int axis = 0;
};

struct ConcatAttrs {
  int axis = 0;
};

struct SliceAttrs {
  int axis = 0;
  std::int64_t start = 0;
  std::int64_t end = std::numeric_limits<std::int64_t>::max();
  std::int64_t step = 1;
};

/// Constant padding: pads[2*i], pads[2*i+1] = before/after of dim i (dims not listed: 0).
struct PadAttrs {
  std::vector<std::int64_t> pads;
  float value = 0.0f;
};

struct PermuteAttrs {
  std::vector<int> order;
};

struct ReshapeAttrs {
  Shape shape;  ///< one extent may be -1.
};

struct CastAttrs {
  DType to = DType::F32;
};

}  // namespace encore
