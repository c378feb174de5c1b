// Double-precision references for the pointwise kernels (activation, binary, scale, glu).
// Written from the math definitions, independently of kernels/cpu.
#pragma once

#include "encore/graph/op_attrs.h"
#include "reference/ref_tensor.h"

namespace encore::ref {

/// The activation of one value, in double.
double activation_value(double x, Activation act);
RefTensor activation(const RefTensor& x, Activation act);
/// NumPy broadcasting of a and b.
RefTensor binary(const RefTensor& a, const RefTensor& b, BinaryOp op);
RefTensor scale(const RefTensor& x, const ScaleAttrs& attrs);
RefTensor glu(const RefTensor& x, const GluAttrs& attrs);

namespace ew {  // index helpers shared by ref_elementwise/ref_norm/ref_data
/// Row-major strides of a shape.
std::vector<std::int64_t> dense_strides(const Shape& shape);
/// The multi-index of flat position `flat` in `shape`.
std::vector<std::int64_t> unravel(const Shape& shape, std::int64_t flat);
}  // namespace ew

}  // namespace encore::ref
