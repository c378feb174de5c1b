#include "kernels/common/reduce_layout.h"

#include <vector>

#include "core/check.h"

namespace encore::reduce_layout {

Shape kept_strides(const Tensor& y, const std::vector<bool>& reduced, bool keepdims) {
  Shape s;
  int yd = 0;
  for (std::size_t d = 0; d < reduced.size(); ++d) {
    if (!reduced[d]) s.push_back(y.strides()[yd]);
    if (!reduced[d] || keepdims) ++yd;
  }
  return s;
}

Layout plan(const char* op, const Tensor& x, const ReduceAttrs& attrs, bool mean, const Tensor& y) {
  ENCORE_CHECK(is_floating(x.dtype()) || (!mean && (x.dtype() == DType::I32 || x.dtype() == DType::I64)), unsupported,
               "{}: x has dtype {}; supported: f32, bf16, f16{}", op, dtype_name(x.dtype()), mean ? "" : ", i32, i64");
  ENCORE_CHECK(y.dtype() == x.dtype(), invalid_argument, "{}: y is {} but x is {}", op, dtype_name(y.dtype()),
               dtype_name(x.dtype()));
  std::vector<bool> reduced(static_cast<std::size_t>(x.rank()), attrs.axes.empty());
  for (int a : attrs.axes) {
    const int d = normalize_axis(a, x.rank(), "reduce axis");
    ENCORE_CHECK(!reduced[static_cast<std::size_t>(d)], invalid_argument, "{}: axis {} is listed twice", op, d);
    reduced[static_cast<std::size_t>(d)] = true;
  }
  Layout l;
  Shape expected;
  for (int d = 0; d < x.rank(); ++d) {
    if (reduced[static_cast<std::size_t>(d)]) {
      l.red_shape.push_back(x.shape()[d]);
      l.red_x.push_back(x.strides()[d]);
      if (attrs.keepdims) expected.push_back(1);
    } else {
      l.kept_shape.push_back(x.shape()[d]);
      l.kept_x.push_back(x.strides()[d]);
      expected.push_back(x.shape()[d]);
    }
  }
  ENCORE_CHECK(y.shape() == expected, invalid_argument, "{}: y has shape {}, expected {}", op, y.shape().str(),
               expected.str());
  l.kept_y = kept_strides(y, reduced, attrs.keepdims);
  return l;
}

}  // namespace encore::reduce_layout
