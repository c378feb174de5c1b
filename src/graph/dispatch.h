// One switch from OpKind to a backend's kernels. The kernel functions are found by argument-
// dependent lookup through the context type (encore::cpu::CpuContext, encore::cuda::CudaContext),
// so every backend shares this table and a new op is added here once.
#pragma once

#include <span>

#include "core/check.h"
#include "encore/graph/graph.h"

namespace encore::detail {
template <typename A>
const A& attr(const Node& node) {
  return std::get<A>(node.attrs);
}

template <typename Context>
void run_node(const Node& node, std::span<const Tensor> in, std::span<const Tensor> out, const Context& ctx) {
  using K = OpKind;
  switch (node.kind) {
    case K::linear: return linear(in[0], in[1], in[2], attr<LinearAttrs>(node), out[0], ctx);
    case K::matmul: return matmul(in[0], in[1], attr<MatMulAttrs>(node), out[0], ctx);
    case K::conv1d: return conv1d(in[0], in[1], in[2], attr<Conv1dAttrs>(node), out[0], ctx);
    case K::conv2d: return conv2d(in[0], in[1], in[2], attr<Conv2dAttrs>(node), out[0], ctx);
    case K::activation: return activation(in[0], std::get<Activation>(node.attrs), out[0], ctx);
    case K::binary: return binary(in[0], in[1], std::get<BinaryOp>(node.attrs), out[0], ctx);
    case K::scale: return scale(in[0], attr<ScaleAttrs>(node), out[0], ctx);
    case K::glu: return glu(in[0], attr<GluAttrs>(node), out[0], ctx);
    case K::cast: return cast(in[0], out[0], ctx);
    case K::layer_norm: return layer_norm(in[0], in[1], in[2], attr<LayerNormAttrs>(node), out[0], ctx);
    case K::add_layer_norm:
      return add_layer_norm(in[0], in[1], in[2], in[3], attr<LayerNormAttrs>(node), out[0], out[1], ctx);
    case K::rms_norm: return rms_norm(in[0], in[1], attr<RmsNormAttrs>(node), out[0], ctx);
    case K::group_norm: return group_norm(in[0], in[1], in[2], attr<GroupNormAttrs>(node), out[0], ctx);
    case K::l2_normalize: return l2_normalize(in[0], attr<L2NormAttrs>(node), out[0], ctx);
    case K::softmax: return softmax(in[0], attr<SoftmaxAttrs>(node), false, out[0], ctx);
    case K::log_softmax: return softmax(in[0], attr<SoftmaxAttrs>(node), true, out[0], ctx);
    case K::embedding: return embedding(in[0], in[1], out[0], ctx);
    case K::concat: return concat(in, attr<ConcatAttrs>(node).axis, out[0], ctx);
    case K::copy: return copy(in[0], out[0], ctx);
    case K::pad: return pad(in[0], attr<PadAttrs>(node), out[0], ctx);
    case K::gather: return gather(in[0], in[1], attr<GatherAttrs>(node), out[0], ctx);
    case K::scatter_add:
      return scatter_add(in[0], in[1], in[2], attr<ScatterAddAttrs>(node), out[0], ctx);
    case K::reduce_sum: return reduce(in[0], attr<ReduceAttrs>(node), false, out[0], ctx);
    case K::reduce_mean: return reduce(in[0], attr<ReduceAttrs>(node), true, out[0], ctx);
    case K::argmax: return argmax(in[0], attr<ArgMaxAttrs>(node), out[0], ctx);
    case K::topk: return topk(in[0], attr<TopKAttrs>(node), out[0], out[1], ctx);
    case K::cumsum: return cumsum(in[0], attr<CumSumAttrs>(node), out[0], ctx);
    case K::resize: return resize(in[0], attr<ResizeAttrs>(node), out[0], ctx);
    case K::attention:
      return attention(in[0], in[1], in[2], in[3], attr<AttentionAttrs>(node), out[0], ctx);
    case K::rel_pos_attention:
      return rel_pos_attention(in[0], in[1], in[2], in[3], in[4], in[5], in[6],
                                    attr<RelPosAttentionAttrs>(node), out[0], ctx);
    case K::rope: return rope(in[0], attr<RopeAttrs>(node), out[0], ctx);
    case K::decode_attention:
      return decode_attention(in[0], in[1], in[2], in[3], in[4], attr<DecodeAttentionAttrs>(node), out[0], ctx);
    case K::kv_cache_write: return kv_cache_write(in[0], in[1], in[2], in[3], in[4], in[5], ctx);
    case K::input:
    case K::constant:
    case K::view: return;  // no work: values are bound or aliased by the executor
  }
  fail(ErrorCode::unsupported, "op '{}' has no kernel on this backend", op_name(node.kind));
}

}  // namespace encore::detail
