// reduce_sum / reduce_mean: the argument checks and the split of x's dims into kept and reduced
// ones, shared by the CPU and CUDA backends (each checks devices first). Host code only.
#pragma once

#include <vector>

#include "encore/core/tensor.h"
#include "encore/graph/op_attrs.h"

namespace encore::reduce_layout {

/// x's dims in order, split in two: the kept ones (extent, stride in x, stride in y) and the
/// reduced ones (extent, stride in x).
struct Layout {
  Shape kept_shape, kept_x, kept_y, red_shape, red_x;
};

/// The strides of y for the dims of x that are kept (those not in `reduced`); with keepdims y
/// also has the reduced ones, of extent 1.
Shape kept_strides(const Tensor& y, const std::vector<bool>& reduced, bool keepdims);

/// Throws Error naming `op`: x must be f32/bf16/f16 (or i32/i64 when not `mean`), y of x's dtype
/// and of the reduced shape (reduced dims dropped, or 1 with keepdims); each axis of attrs.axes in
/// range and listed once (none listed: all).
Layout plan(const char* op, const Tensor& x, const ReduceAttrs& attrs, bool mean, const Tensor& y);

}  // namespace encore::reduce_layout
