// Double-precision references for normalisation and softmax. gamma/beta: nullptr = no affine.
#pragma once

#include "encore/graph/op_attrs.h"
#include "reference/ref_tensor.h"

namespace encore::ref {

/// Over the last dim.
RefTensor layer_norm(const RefTensor& x, const RefTensor* gamma, const RefTensor* beta, const LayerNormAttrs& attrs);
RefTensor rms_norm(const RefTensor& x, const RefTensor* gamma, const RmsNormAttrs& attrs);
/// x [B, C, *].
RefTensor group_norm(const RefTensor& x, const RefTensor* gamma, const RefTensor* beta, const GroupNormAttrs& attrs);
RefTensor l2_normalize(const RefTensor& x, const L2NormAttrs& attrs);
RefTensor softmax(const RefTensor& x, int axis, bool log);

}  // namespace encore::ref
