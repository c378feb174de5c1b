#include "kernels/common/index_checks.h"

#include "core/check.h"

namespace encore::index_checks {
namespace {

void check_index(const char* op, const Tensor& index) {
  ENCORE_CHECK(index.dtype() == DType::I32 || index.dtype() == DType::I64, unsupported,
               "{}: index has dtype {}; expected i32 or i64", op, dtype_name(index.dtype()));
  ENCORE_CHECK(index.rank() == 1, invalid_argument, "{}: index must be 1-D, got shape {}", op, index.shape().str());
}

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  ENCORE_CHECK(t.shape() == expected, invalid_argument, "{}: {} has shape {}, expected {}", op, what,
               t.shape().str(), expected.str());
}

}  // namespace

int check_gather(const Tensor& x, const Tensor& index, int axis_attr, const Tensor& y) {
  ENCORE_CHECK(x.dtype() == y.dtype(), invalid_argument, "gather: x is {} but y is {}", dtype_name(x.dtype()),
               dtype_name(y.dtype()));
  const int axis = normalize_axis(axis_attr, x.rank(), "gather axis");
  check_index("gather", index);
  Shape expected = x.shape();
  expected[axis] = index.shape()[0];
  check_shape("gather", "y", y, expected);
  return axis;
}

int check_scatter_add(const Tensor& x, const Tensor& index, const Tensor& src, int axis_attr, const Tensor& y) {
  const char* op = "scatter_add";
  check_shape(op, "y", y, x.shape());
  const int axis = normalize_axis(axis_attr, x.rank(), "scatter_add axis");
  check_index(op, index);
  Shape src_expected = x.shape();
  src_expected[axis] = index.shape()[0];
  check_shape(op, "src", src, src_expected);
  return axis;
}

}  // namespace encore::index_checks
