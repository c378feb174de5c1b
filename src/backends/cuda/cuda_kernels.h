// CUDA kernels: the same op set and contract as src/backends/cpu/kernels.h, run on a stream.
//
// Contract (as on the CPU): inputs may be strided views (the last dim is usually contiguous;
// kernels that need more copy to a contiguous scratch buffer), outputs are preallocated contiguous
// device tensors. Floating kernels take f32, f16 and bf16 (f32 accumulation). Every launch is
// checked; failures throw Error(backend) naming the kernel and the CUDA error. Host-side shape
// invariants are checked cheaply and throw Error(invalid_argument) rather than launch out of bounds.
// Kernels are asynchronous on ctx.stream; nothing synchronises unless the comment says so.
#pragma once

#include <span>

#include "encore/core/tensor.h"
#include "encore/graph/op_attrs.h"

namespace encore::cuda {

class CudaRuntime;  // backends/cuda/runtime.h: device, stream, cuBLAS(Lt) handles, allocator

/// Per-call settings of the CUDA backend.
struct CudaContext {
  CudaRuntime* runtime = nullptr;  ///< device + stream + library handles (required)
  bool allow_tf32 = false;         ///< TF32 GEMMs for f32 (off by default: tests compare to 1e-5)
};

void activation(const Tensor& x, Activation act, const Tensor& y, const CudaContext& ctx);
void binary(const Tensor& a, const Tensor& b, BinaryOp op, const Tensor& y, const CudaContext& ctx);
void scale(const Tensor& x, const ScaleAttrs& attrs, const Tensor& y, const CudaContext& ctx);
void glu(const Tensor& x, const GluAttrs& attrs, const Tensor& y, const CudaContext& ctx);
void cast(const Tensor& x, const Tensor& y, const CudaContext& ctx);

void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const LayerNormAttrs& attrs,
                const Tensor& y, const CudaContext& ctx);
void add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                    const LayerNormAttrs& attrs, const Tensor& sum, const Tensor& y, const CudaContext& ctx);
void rms_norm(const Tensor& x, const Tensor& gamma, const RmsNormAttrs& attrs, const Tensor& y,
              const CudaContext& ctx);
void group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const GroupNormAttrs& attrs,
                const Tensor& y, const CudaContext& ctx);
void l2_normalize(const Tensor& x, const L2NormAttrs& attrs, const Tensor& y, const CudaContext& ctx);
void softmax(const Tensor& x, const SoftmaxAttrs& attrs, bool log, const Tensor& y, const CudaContext& ctx);

void embedding(const Tensor& table, const Tensor& ids, const Tensor& y, const CudaContext& ctx);
void concat(std::span<const Tensor> xs, int axis, const Tensor& y, const CudaContext& ctx);
void copy(const Tensor& x, const Tensor& y, const CudaContext& ctx);
void pad(const Tensor& x, const PadAttrs& attrs, const Tensor& y, const CudaContext& ctx);
void gather(const Tensor& x, const Tensor& index, const GatherAttrs& attrs, const Tensor& y, const CudaContext& ctx);
void scatter_add(const Tensor& x, const Tensor& index, const Tensor& src, const ScatterAddAttrs& attrs,
                 const Tensor& y, const CudaContext& ctx);

void reduce(const Tensor& x, const ReduceAttrs& attrs, bool mean, const Tensor& y, const CudaContext& ctx);
void argmax(const Tensor& x, const ArgMaxAttrs& attrs, const Tensor& y, const CudaContext& ctx);
void topk(const Tensor& x, const TopKAttrs& attrs, const Tensor& values, const Tensor& indices,
          const CudaContext& ctx);
void cumsum(const Tensor& x, const CumSumAttrs& attrs, const Tensor& y, const CudaContext& ctx);
void resize(const Tensor& x, const ResizeAttrs& attrs, const Tensor& y, const CudaContext& ctx);

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearAttrs& attrs, const Tensor& y,
            const CudaContext& ctx);
void matmul(const Tensor& a, const Tensor& b, const MatMulAttrs& attrs, const Tensor& y, const CudaContext& ctx);
void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dAttrs& attrs, const Tensor& y,
            const CudaContext& ctx);
void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv1dAttrs& attrs, const Tensor& y,
            const CudaContext& ctx);

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const AttentionAttrs& attrs,
               const Tensor& y, const CudaContext& ctx);
void rel_pos_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pos, const Tensor& bias_u,
                       const Tensor& bias_v, const Tensor& mask, const RelPosAttentionAttrs& attrs, const Tensor& y,
                       const CudaContext& ctx);
void rope(const Tensor& x, const RopeAttrs& attrs, const Tensor& y, const CudaContext& ctx);

/// Writes k_new/v_new [B, Tq, Hkv*D] into the paged caches at positions lengths[b]-Tq+t (the
/// graph's kv_cache_write). Dtypes of new entries and caches must match.
void kv_cache_write(const Tensor& k_new, const Tensor& v_new, const Tensor& k_cache, const Tensor& v_cache,
                    const Tensor& block_table, const Tensor& lengths, const CudaContext& ctx);


/// Decode attention over a paged KV cache (kernels/cuda/decode_attention*.cu); same semantics as
/// the CPU kernel. Reads lengths and block tables from device memory (CUDA-graph replayable).
void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& lengths, const DecodeAttentionAttrs& attrs, const Tensor& y,
                      const CudaContext& ctx);

}  // namespace encore::cuda
