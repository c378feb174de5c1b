// gather / scatter_add: the argument checks shared by the CPU and CUDA backends (each checks
// devices and float dtypes first; the index values are checked by the backend, on the host or
// on the device). Host code only.
#pragma once

#include "encore/core/tensor.h"

namespace encore::index_checks {

/// y = x with dimension `axis` indexed by `index`: x and y of one dtype, index i32/i64 and 1-D, y
/// of x's shape but index's length at `axis`. Returns the axis in [0, rank); throws Error.
int check_gather(const Tensor& x, const Tensor& index, int axis, const Tensor& y);

/// y = x, then y[.., index[i], ..] += src[.., i, ..] along `axis`: y of x's shape, index i32/i64
/// and 1-D, src of x's shape but index's length at `axis`. Returns the axis; throws Error.
int check_scatter_add(const Tensor& x, const Tensor& index, const Tensor& src, int axis, const Tensor& y);

}  // namespace encore::index_checks
