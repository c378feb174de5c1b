// Double-precision references for data movement, reductions and resizing.
#pragma once

#include <utility>
#include <vector>

#include "encore/graph/op_attrs.h"
#include "reference/ref_tensor.h"

namespace encore::ref {

/// table [V, D]; ids holds integer values (any shape). Ids must be valid.
RefTensor embedding(const RefTensor& table, const RefTensor& ids);
RefTensor concat(const std::vector<RefTensor>& xs, int axis);
RefTensor pad(const RefTensor& x, const PadAttrs& attrs);
/// index_select along axis.
RefTensor gather(const RefTensor& x, const std::vector<std::int64_t>& index, int axis);
/// x.index_add(axis, index, src).
RefTensor scatter_add(const RefTensor& x, const std::vector<std::int64_t>& index, const RefTensor& src, int axis);
RefTensor reduce(const RefTensor& x, const ReduceAttrs& attrs, bool mean);
/// Indices as doubles; ties -> lowest index (inputs without NaN).
RefTensor argmax(const RefTensor& x, int axis, bool keepdims);
/// {values, indices}: descending, ties lower index first (inputs without NaN).
std::pair<RefTensor, RefTensor> topk(const RefTensor& x, int k, int axis);
RefTensor cumsum(const RefTensor& x, int axis);
/// [N, C, H, W] -> [N, C, out_h, out_w], PyTorch semantics (see resize.cpp's header comment).
RefTensor resize(const RefTensor& x, const ResizeAttrs& attrs);

}  // namespace encore::ref
