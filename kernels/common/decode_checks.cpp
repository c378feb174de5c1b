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

void check_kv_cache_write(const Tensor& k_new, const Tensor& v_new, const Tensor& k_cache, const Tensor& v_cache,
                          const Tensor& block_table, const Tensor& lengths) {
  ENCORE_CHECK(k_new.dtype() == k_cache.dtype() && v_new.dtype() == v_cache.dtype() && k_new.dtype() == v_new.dtype(),
               invalid_argument, "kv_cache_write: new entries are {}/{} and the caches hold {}/{}: all must match",
               dtype_name(k_new.dtype()), dtype_name(v_new.dtype()), dtype_name(k_cache.dtype()),
               dtype_name(v_cache.dtype()));
  ENCORE_CHECK(k_new.rank() == 3 && v_new.shape() == k_new.shape() && k_cache.rank() == 4 &&
                   v_cache.shape() == k_cache.shape() && k_new.dim(2) == k_cache.dim(1) * k_cache.dim(3) &&
                   block_table.rank() == 2 && block_table.dim(0) == k_new.dim(0) &&
                   block_table.dtype() == DType::I32 && lengths.dtype() == DType::I32 &&
                   lengths.numel() == k_new.dim(0),
               invalid_argument,
               "kv_cache_write: k {} / v {} must be [B, Tq, Hkv*D] over caches {} / {} [blocks, Hkv, block_size, D], "
               "with an i32 [B, max_blocks] table ({}) and B i32 lengths ({})",
               k_new.shape().str(), v_new.shape().str(), k_cache.shape().str(), v_cache.shape().str(),
               block_table.shape().str(), lengths.shape().str());
  ENCORE_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && block_table.is_contiguous() &&
                   lengths.is_contiguous() && k_new.strides()[2] == 1 && v_new.strides()[2] == 1,
               invalid_argument,
               "kv_cache_write: the caches, block table and lengths must be contiguous, and the last dimension of "
               "k/v too");
}

}  // namespace encore::decode_checks
