// encore — the graph IR and its builder.
//
// Model code builds a graph per forward pass: every builder call checks its operands, infers the
// result's dtype and shape, and throws Error(invalid_argument) naming the op, the shapes and the
// rule broken. Constants are bound to weight tensors without copying them. A Plan (plan.h) then
// fuses, places every intermediate in one arena and runs the graph on a backend.
//
//   encore::Graph g;
//   auto x = g.input("x", encore::DType::F32, {1, 197, 768});
//   auto h = g.layer_norm(x, g.constant(ln_w), g.constant(ln_b), {.eps = 1e-12f});
//   g.output("y", g.linear(h, g.constant(w), g.constant(b), {.activation = encore::Activation::gelu}));
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "encore/core/tensor.h"
#include "encore/graph/op_attrs.h"

namespace encore {

/// Every op the graph knows. One entry + one shape rule here, one kernel per backend.
enum class OpKind : std::uint8_t {
  input, constant,
  linear, matmul, conv1d, conv2d,
  activation, binary, scale, glu, cast,
  layer_norm, add_layer_norm, rms_norm, group_norm, l2_normalize, softmax, log_softmax,
  embedding, concat, copy, pad, gather, scatter_add,
  reduce_sum, reduce_mean, argmax, topk, cumsum,
  resize,
  attention, rel_pos_attention, rope, decode_attention,
  kv_cache_write,  ///< side effect: writes new keys/values into cache storage (no outputs)
  view,  ///< reshape/slice/permute/expand/squeeze: no kernel, output aliases its input's buffer.
};
const char* op_name(OpKind kind) noexcept;
/// True for ops that write state outside their outputs (kept by dead-node removal, never reordered).
bool has_side_effects(OpKind kind) noexcept;

/// The view an OpKind::view node applies (composed of Tensor view operations).
struct ViewAttrs {
  enum class Kind : std::uint8_t { reshape, slice, permute, expand } kind = Kind::reshape;
  Shape shape;              ///< reshape / expand target.
  std::vector<int> order;   ///< permute.
  SliceAttrs slice;         ///< slice.
};

using OpAttrs = std::variant<std::monostate, LinearAttrs, MatMulAttrs, Conv1dAttrs, Conv2dAttrs, Activation, BinaryOp,
                             ScaleAttrs, GluAttrs, CastAttrs, LayerNormAttrs, RmsNormAttrs, GroupNormAttrs,
                             L2NormAttrs, SoftmaxAttrs, ConcatAttrs, PadAttrs, GatherAttrs, ScatterAddAttrs,
                             ReduceAttrs, ArgMaxAttrs, TopKAttrs, CumSumAttrs, ResizeAttrs, AttentionAttrs,
                             RelPosAttentionAttrs, RopeAttrs, DecodeAttentionAttrs, ViewAttrs>;

/// A handle to a value of a Graph (an input, a constant or an op result). Default: "absent"
/// (for optional operands such as a bias).
struct Value {
  int id = -1;
  explicit operator bool() const noexcept { return id >= 0; }
  friend bool operator==(Value, Value) = default;
};

/// What the graph knows about a value before anything runs.
struct ValueInfo {
  DType dtype = DType::F32;
  Shape shape;
  int producer = -1;      ///< node index (-1 for inputs and constants)
  int output_index = 0;   ///< which output of the producer
  std::string name;       ///< inputs, constants (optional) and outputs
  Tensor constant;        ///< bound weight for constants
  bool is_input = false;
};

/// One op application.
struct Node {
  OpKind kind = OpKind::input;
  OpAttrs attrs;
  std::vector<int> inputs;   ///< value ids; -1 for an absent optional operand
  std::vector<int> outputs;  ///< value ids
};

class Graph {
 public:
  // ---- values ------------------------------------------------------------------------------
  /// A runtime input; `shape` extents must be >= 0.
  Value input(std::string name, DType dtype, const Shape& shape);
  /// A tensor bound to the graph (not copied by it): a weight, or state such as a KV cache. A plan
  /// on the tensor's device reads it in place; a plan on another device copies it there once,
  /// when it is built, and does not see later changes (so it refuses caches, block tables and
  /// lengths that live elsewhere). Plans may keep derived copies of a constant used as a weight
  /// (packed layouts), so weights must stay unchanged while plans of this graph exist; state on
  /// the plan's device may change between runs.
  Value constant(const Tensor& tensor, std::string name = {});
  /// Marks `v` as a graph output under `name` (names are unique).
  void output(std::string name, Value v);

  // ---- GEMM / convolution ----------------------------------------------------------------------
  Value linear(Value x, Value w, Value bias = {}, const LinearAttrs& attrs = {});
  Value matmul(Value a, Value b, const MatMulAttrs& attrs = {});
  Value conv1d(Value x, Value w, Value bias = {}, const Conv1dAttrs& attrs = {});
  Value conv2d(Value x, Value w, Value bias = {}, const Conv2dAttrs& attrs = {});

  // ---- elementwise ----------------------------------------------------------------------------
  Value activation(Value x, Activation act);
  Value gelu(Value x) { return activation(x, Activation::gelu); }
  Value gelu_tanh(Value x) { return activation(x, Activation::gelu_tanh); }
  Value relu(Value x) { return activation(x, Activation::relu); }
  Value silu(Value x) { return activation(x, Activation::silu); }
  Value sigmoid(Value x) { return activation(x, Activation::sigmoid); }
  Value tanh(Value x) { return activation(x, Activation::tanh); }
  Value binary(Value a, Value b, BinaryOp op);
  Value add(Value a, Value b) { return binary(a, b, BinaryOp::add); }
  Value sub(Value a, Value b) { return binary(a, b, BinaryOp::sub); }
  Value mul(Value a, Value b) { return binary(a, b, BinaryOp::mul); }
  Value div(Value a, Value b) { return binary(a, b, BinaryOp::div); }
  Value scale(Value x, float scale, float shift = 0.0f);
  Value glu(Value x, const GluAttrs& attrs = {});
  Value cast(Value x, DType to);

  // ---- normalisation --------------------------------------------------------------------------
  Value layer_norm(Value x, Value gamma, Value beta, const LayerNormAttrs& attrs = {});
  Value rms_norm(Value x, Value gamma, const RmsNormAttrs& attrs = {});
  Value group_norm(Value x, Value gamma, Value beta, const GroupNormAttrs& attrs = {});
  Value l2_normalize(Value x, const L2NormAttrs& attrs = {});
  Value softmax(Value x, int axis = -1);
  Value log_softmax(Value x, int axis = -1);

  // ---- data movement --------------------------------------------------------------------------
  Value embedding(Value table, Value ids);
  Value concat(std::span<const Value> xs, int axis);
  Value pad(Value x, const PadAttrs& attrs);
  Value gather(Value x, Value index, int axis = 0);
  Value scatter_add(Value x, Value index, Value src, int axis = 0);
  /// Views: no copy at run time (the result aliases x's buffer). reshape() of a non-contiguous
  /// value inserts a copy.
  Value reshape(Value x, const Shape& shape);
  Value slice(Value x, int axis, std::int64_t start, std::int64_t end, std::int64_t step = 1);
  Value permute(Value x, std::vector<int> order);
  Value transpose(Value x, int a, int b);
  Value expand(Value x, const Shape& shape);
  /// A contiguous copy of x.
  Value contiguous(Value x);

  // ---- reductions -----------------------------------------------------------------------------
  Value reduce_sum(Value x, const ReduceAttrs& attrs = {});
  Value reduce_mean(Value x, const ReduceAttrs& attrs = {});
  Value argmax(Value x, const ArgMaxAttrs& attrs = {});
  /// Returns {values, indices (i64)}.
  std::pair<Value, Value> topk(Value x, const TopKAttrs& attrs);
  Value cumsum(Value x, int axis = -1);

  // ---- resampling, attention --------------------------------------------------------------------
  Value resize(Value x, const ResizeAttrs& attrs);
  Value attention(Value q, Value k, Value v, Value mask = {}, const AttentionAttrs& attrs = {});
  Value rel_pos_attention(Value q, Value k, Value v, Value pos, Value bias_u, Value bias_v, Value mask = {},
                          const RelPosAttentionAttrs& attrs = {});
  Value rope(Value x, const RopeAttrs& attrs);
  /// Attention of the newest Tq tokens over a paged KV cache (see DecodeAttentionAttrs); the
  /// cache tensors are usually constants bound to a decode::KvCache's storage.
  Value decode_attention(Value q, Value k_cache, Value v_cache, Value block_table, Value lengths,
                         const DecodeAttentionAttrs& attrs);
  /// Writes k_new/v_new [B, Tq, Hkv*D] into the paged caches at positions lengths[b]-Tq .. lengths[b]-1
  /// (lengths already count the new tokens). A side effect: it runs where it is built, before any
  /// later node (so build it before the decode_attention that reads the new entries), and is never
  /// removed as dead code. Two sequences whose tables map a written position to the same physical
  /// block slot race on the GPU (which value lands is unspecified; the CPU writes them in batch
  /// order): decode::KvCache never does this, as it copies a shared block before writing to it.
  void kv_cache_write(Value k_new, Value v_new, Value k_cache, Value v_cache, Value block_table, Value lengths);

  // ---- inspection -----------------------------------------------------------------------------
  const ValueInfo& info(Value v) const;
  const Shape& shape(Value v) const { return info(v).shape; }
  DType dtype(Value v) const { return info(v).dtype; }
  const std::vector<Node>& nodes() const noexcept { return nodes_; }
  const std::vector<ValueInfo>& values() const noexcept { return values_; }
  const std::vector<std::pair<std::string, int>>& outputs() const noexcept { return outputs_; }
  /// Value ids of the inputs in declaration order.
  const std::vector<int>& inputs() const noexcept { return inputs_; }
  /// True when the value's elements are laid out densely (views may not be).
  bool is_contiguous(Value v) const;
  /// Strides (elements) of the value relative to the buffer it lives in.
  const Shape& strides(Value v) const;
  /// The value's layout as a tensor: for constants (and views of them) the real tensor; for other
  /// values a placeholder over a fake buffer whose strides and byte offset the executor applies to
  /// the real buffer. Never read its data.
  const Tensor& layout(Value v) const;

  /// Internal: append a node whose outputs were already inferred (used by passes and builders).
  std::vector<Value> add_node(OpKind kind, OpAttrs attrs, std::vector<int> inputs,
                              std::vector<std::pair<DType, Shape>> outputs);

 private:
  friend class GraphRewriter;
  Value view_node(Value x, const ViewAttrs& view, const char* op);
  void check_value(Value v, const char* op, const char* operand) const;

  std::vector<ValueInfo> values_;
  std::vector<Node> nodes_;
  std::vector<int> inputs_;
  std::vector<std::pair<std::string, int>> outputs_;
  std::vector<Tensor> layouts_;  ///< per value: a phantom tensor carrying its view layout
};

}  // namespace encore
