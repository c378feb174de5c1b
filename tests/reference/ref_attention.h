// Double-precision references for the attention ops: plain loops that materialise every score,
// apply the mask, run a textbook softmax and multiply by V. Written independently of the kernels.
#pragma once

#include "encore/graph/op_attrs.h"
#include "reference/ref_tensor.h"

namespace encore::ref {

/// Scaled dot-product attention; q [B, Tq, Hq*D], k/v [B, Tk, Hkv*D] -> [B, Tq, max(Hq, Hkv)*D].
/// `mask` is null for none, else a key-padding [B, Tk] (nonzero = attend) or an additive mask of
/// rank <= 4 broadcast to [B, H, Tq, Tk] as attrs.mask says. Masked (huge) scores follow f32
/// arithmetic: a sum that overflows f32 becomes -inf, and values beyond 1e30 are rounded to f32 as
/// the kernels see them. A row of only -inf outputs zeros.
RefTensor attention(const RefTensor& q, const RefTensor& k, const RefTensor& v, const RefTensor* mask,
                    const AttentionAttrs& attrs);

/// CASS-NAT relative-position attention; `mask` null or key padding [B, Tk]; masked keys get
/// float32 lowest before the softmax and probability 0 after it.
RefTensor rel_pos_attention(const RefTensor& q, const RefTensor& k, const RefTensor& v, const RefTensor& pos,
                            const RefTensor& bias_u, const RefTensor& bias_v, const RefTensor* mask,
                            const RelPosAttentionAttrs& attrs);

/// Rotary embedding; the angle is formed in f32 exactly as documented in kernels/cpu/rope.cpp
/// (that formula is the definition), the rotation itself in double.
RefTensor rope(const RefTensor& x, const RopeAttrs& attrs);

}  // namespace encore::ref
