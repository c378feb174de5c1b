#include "kernels/common/decode_checks.h"

#include <cmath>

#include "core/check.h"

namespace encore::decode_checks {

DecodeDims check_decode_attention(const char* op, const Tensor& q, const Tensor& kc, const Tensor& vc,
                                  const Tensor& block_table, const Tensor& lengths, const DecodeAttentionAttrs& attrs,
                                  const Tensor& y) {
  ENCORE_CHECK(q.rank() == 3, invalid_argument, "{}: q is {}, expected [B, Tq, Hq*D]", op, q.shape().str());
  ENCORE_CHECK(kc.rank() == 4 && vc.shape() == kc.shape(), invalid_argument,
               "{}: k_cache {} and v_cache {} must both be [num_blocks, Hkv, block_size, D]", op, kc.shape().str(),
               vc.shape().str());
  ENCORE_CHECK(kc.dtype() == vc.dtype(), unsupported, "{}: k_cache ({}) and v_cache ({}) must share one dtype", op,
               dtype_name(kc.dtype()), dtype_name(vc.dtype()));
  DecodeDims d;
  d.Hq = attrs.num_heads, d.Hkv = attrs.num_kv_heads == 0 ? attrs.num_heads : attrs.num_kv_heads;
  ENCORE_CHECK(d.Hq >= 1 && d.Hkv >= 1 && d.Hq % d.Hkv == 0, invalid_argument,
               "{}: num_heads {} must be a positive multiple of num_kv_heads {}", op, d.Hq, d.Hkv);
  d.num_blocks = kc.dim(0), d.block_size = kc.dim(2), d.D = kc.dim(3);
  ENCORE_CHECK(kc.dim(1) == d.Hkv && d.block_size >= 1 && d.D >= 1, invalid_argument,
               "{}: k_cache is {}, expected [num_blocks, {} (Hkv), block_size >= 1, D >= 1]", op, kc.shape().str(),
               d.Hkv);
  d.B = q.dim(0), d.Tq = q.dim(1);
  ENCORE_CHECK(q.dim(2) == d.Hq * d.D, invalid_argument, "{}: q is {}, expected [B, Tq, {}] ({} heads x D {})", op,
               q.shape().str(), d.Hq * d.D, d.Hq, d.D);
  ENCORE_CHECK(block_table.dtype() == DType::I32 && block_table.rank() == 2 && block_table.dim(0) == d.B,
               invalid_argument, "{}: block_table is {} {}, expected i32 [{}, max_blocks]", op,
               dtype_name(block_table.dtype()), block_table.shape().str(), d.B);
  d.max_blocks = block_table.dim(1);
  ENCORE_CHECK(lengths.dtype() == DType::I32 && lengths.rank() == 1 && lengths.dim(0) == d.B, invalid_argument,
               "{}: lengths is {} {}, expected i32 [{}]", op, dtype_name(lengths.dtype()), lengths.shape().str(), d.B);
  const Shape y_shape{d.B, d.Tq, d.Hq * d.D};
  ENCORE_CHECK(y.shape() == y_shape && y.is_contiguous(), invalid_argument,
               "{}: output is {}, expected a contiguous {}", op, y.shape().str(), y_shape.str());
  ENCORE_CHECK(attrs.num_splits >= 0, invalid_argument, "{}: num_splits {} must be >= 0", op, attrs.num_splits);
  ENCORE_CHECK(static_cast<int>(attrs.strategy) <= static_cast<int>(DecodeStrategy::lean), invalid_argument,
               "{}: unknown strategy {}", op, static_cast<int>(attrs.strategy));
  ENCORE_CHECK(std::isfinite(attrs.scale), invalid_argument, "{}: scale {} is not finite", op, attrs.scale);
  return d;
}

}  // namespace encore::decode_checks
