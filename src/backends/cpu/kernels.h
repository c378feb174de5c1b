// CPU kernels: one function per graph op. The CPU backend calls them from the executor; tests call
// them directly too.
//
// Contract shared by every kernel:
// - Inputs may be any strided view (slices, transposes, stride-0 broadcasts). Outputs are
//   preallocated by the caller with the shape and dtype the graph's shape rules give, contiguous,
//   and never alias an input unless the kernel's comment says in-place is allowed.
// - Floating inputs are f32 or bf16 (computed in f32, rounded once on store); where noted, f16 too.
//   Data-movement kernels take every dtype.
// - User-visible problems (an id out of range, an unsupported dtype) throw encore::Error naming the
//   op, the value and what was expected; shapes are already checked by the graph, but kernels check
//   the invariants they rely on (cheaply) and throw Error(invalid_argument) rather than read out of
//   bounds.
// - Parallelism: OpenMP, at most ctx.num_threads threads.
#pragma once

#include <span>

#include "encore/core/tensor.h"
#include "encore/graph/op_attrs.h"

namespace encore::cpu {

/// Per-call settings of the CPU backend.
struct CpuContext {
  int num_threads = 1;
  /// The GEMM/convolution weight operand is a constant, so its packed copy may be cached and
  /// reused (PackedWeights); false packs it per call. The graph runner sets it per node.
  bool constant_weights = true;
};

// ---- elementwise, activations (kernels/cpu/elementwise*.cpp) --------------------------------------
void activation(const Tensor& x, Activation act, const Tensor& y, const CpuContext& ctx);
/// y = a (op) b with NumPy broadcasting (y has the broadcast shape). y may alias a or b when it
/// has the same shape and layout (in-place residual adds).
void binary(const Tensor& a, const Tensor& b, BinaryOp op, const Tensor& y, const CpuContext& ctx);
void scale(const Tensor& x, const ScaleAttrs& attrs, const Tensor& y, const CpuContext& ctx);
void glu(const Tensor& x, const GluAttrs& attrs, const Tensor& y, const CpuContext& ctx);
/// Any dtype to any dtype (floats round to nearest even; float -> int truncates and saturates).
void cast(const Tensor& x, const Tensor& y, const CpuContext& ctx);

// ---- normalisation, softmax (kernels/cpu/norm*.cpp) ------------------------------------------------
/// gamma/beta: [C] or undefined (no affine).
void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const LayerNormAttrs& attrs,
                const Tensor& y, const CpuContext& ctx);
/// sum = x + residual; y = layer_norm(sum). Both outputs written (the fused residual block).
void add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                    const LayerNormAttrs& attrs, const Tensor& sum, const Tensor& y, const CpuContext& ctx);
void rms_norm(const Tensor& x, const Tensor& gamma, const RmsNormAttrs& attrs, const Tensor& y,
              const CpuContext& ctx);
void group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const GroupNormAttrs& attrs,
                const Tensor& y, const CpuContext& ctx);
void l2_normalize(const Tensor& x, const L2NormAttrs& attrs, const Tensor& y, const CpuContext& ctx);
/// Softmax (or log-softmax when `log`) along attrs.axis.
void softmax(const Tensor& x, const SoftmaxAttrs& attrs, bool log, const Tensor& y, const CpuContext& ctx);

// ---- data movement (kernels/cpu/data*.cpp) ----------------------------------------------------------
/// y[..., :] = table[ids[...], :]; ids i32/i64; an id outside [0, V) throws Error(invalid_argument).
void embedding(const Tensor& table, const Tensor& ids, const Tensor& y, const CpuContext& ctx);
void concat(std::span<const Tensor> xs, int axis, const Tensor& y, const CpuContext& ctx);
/// Copies any strided view into y (slices, permutes and expands become views, then this).
void copy(const Tensor& x, const Tensor& y, const CpuContext& ctx);
void pad(const Tensor& x, const PadAttrs& attrs, const Tensor& y, const CpuContext& ctx);
void gather(const Tensor& x, const Tensor& index, const GatherAttrs& attrs, const Tensor& y,
            const CpuContext& ctx);
void scatter_add(const Tensor& x, const Tensor& index, const Tensor& src, const ScatterAddAttrs& attrs,
                 const Tensor& y, const CpuContext& ctx);

// ---- reductions (kernels/cpu/reduce*.cpp) -----------------------------------------------------------
/// Sum (or mean when `mean`) over attrs.axes.
void reduce(const Tensor& x, const ReduceAttrs& attrs, bool mean, const Tensor& y, const CpuContext& ctx);
/// i64 indices; ties -> lowest index; NaN counts as the maximum (torch semantics).
void argmax(const Tensor& x, const ArgMaxAttrs& attrs, const Tensor& y, const CpuContext& ctx);
void topk(const Tensor& x, const TopKAttrs& attrs, const Tensor& values, const Tensor& indices,
          const CpuContext& ctx);
void cumsum(const Tensor& x, const CumSumAttrs& attrs, const Tensor& y, const CpuContext& ctx);

// ---- resampling (kernels/cpu/resize.cpp) -------------------------------------------------------------
void resize(const Tensor& x, const ResizeAttrs& attrs, const Tensor& y, const CpuContext& ctx);

// ---- GEMM and convolution on oneDNN (src/backends/cpu/onednn_*.cpp) -------------------------------
/// y = act(x W (+ bias)); x [..., K]; W per attrs.layout; bias [N] or undefined.
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearAttrs& attrs, const Tensor& y,
            const CpuContext& ctx);
void matmul(const Tensor& a, const Tensor& b, const MatMulAttrs& attrs, const Tensor& y, const CpuContext& ctx);
/// x [N, C, H, W], w [O, C/groups, kh, kw], bias [O] or undefined.
void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dAttrs& attrs, const Tensor& y,
            const CpuContext& ctx);
/// x [N, C, T], w [O, C/groups, k], bias [O] or undefined.
void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv1dAttrs& attrs, const Tensor& y,
            const CpuContext& ctx);

// ---- attention (kernels/cpu/attention*.cpp) --------------------------------------------------------
/// mask: undefined, or as attrs.mask says.
void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const AttentionAttrs& attrs,
               const Tensor& y, const CpuContext& ctx);
void rel_pos_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pos, const Tensor& bias_u,
                       const Tensor& bias_v, const Tensor& mask, const RelPosAttentionAttrs& attrs, const Tensor& y,
                       const CpuContext& ctx);
void rope(const Tensor& x, const RopeAttrs& attrs, const Tensor& y, const CpuContext& ctx);

/// Writes k_new/v_new [B, Tq, Hkv*D] into the paged caches at positions lengths[b]-Tq+t (the
/// graph's kv_cache_write). Dtypes of new entries and caches must match.
void kv_cache_write(const Tensor& k_new, const Tensor& v_new, const Tensor& k_cache, const Tensor& v_cache,
                    const Tensor& block_table, const Tensor& lengths, const CpuContext& ctx);


// ---- decode attention over a paged KV cache (kernels/cpu/decode_attention*.cpp) -----------------
/// See DecodeAttentionAttrs. Deterministic: the same inputs give bitwise the same output for a
/// given strategy and thread count, whatever the OpenMP schedule.
void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& lengths, const DecodeAttentionAttrs& attrs, const Tensor& y,
                      const CpuContext& ctx);

}  // namespace encore::cpu
