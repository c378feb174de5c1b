// Argument checks of decode attention shared by the CPU and CUDA backends: ranks and shapes, the
// head counts, the block table's and lengths' dtypes and shapes, the output, the options. What
// differs per backend (where the tensors live, which dtypes and head dims it runs) is checked by
// the backend before this. Host code only: declared here, compiled once in decode_checks.cpp.
#pragma once

#include <cstdint>

#include "encore/core/tensor.h"
#include "encore/graph/op_attrs.h"

namespace encore::decode_checks {

/// The sizes a decode attention call is made of, once its arguments are known to be consistent.
struct DecodeDims {
  std::int64_t B, Tq, D, block_size, num_blocks, max_blocks;
  int Hq, Hkv;  // Hkv: attrs.num_kv_heads, or num_heads when that is 0
};

/// Throws Error (invalid_argument, or unsupported for mismatched cache dtypes) naming `op`, the
/// operand and what was expected. q [B, Tq, Hq * D]; k_cache and v_cache [num_blocks, Hkv,
/// block_size, D] of one dtype; block_table i32 [B, max_blocks]; lengths i32 [B]; y a contiguous
/// [B, Tq, Hq * D]; Hq a positive multiple of Hkv; num_splits >= 0; a known strategy; a finite scale.
DecodeDims check_decode_attention(const char* op, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                  const Tensor& block_table, const Tensor& lengths, const DecodeAttentionAttrs& attrs,
                                  const Tensor& y);

/// kv_cache_write's arguments: k_new and v_new [B, Tq, Hkv * D] with a contiguous last dimension,
/// over contiguous caches [num_blocks, Hkv, block_size, D], all four of one dtype (one element size
/// serves k and v); block_table a contiguous i32 [B, max_blocks]; lengths a contiguous i32 [B].
/// Throws Error(invalid_argument) naming the shapes or dtypes.
void check_kv_cache_write(const Tensor& k_new, const Tensor& v_new, const Tensor& k_cache, const Tensor& v_cache,
                          const Tensor& block_table, const Tensor& lengths);

}  // namespace encore::decode_checks
