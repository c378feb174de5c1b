#include "reference/ref_elementwise.h"

#include <cmath>
#include <stdexcept>

namespace encore::ref {

namespace ew {
std::vector<std::int64_t> dense_strides(const Shape& shape) {
  std::vector<std::int64_t> s(static_cast<std::size_t>(shape.rank()), 1);
  for (int d = shape.rank() - 2; d >= 0; --d) s[static_cast<std::size_t>(d)] = s[static_cast<std::size_t>(d) + 1] * shape[d + 1];
  return s;
}

std::vector<std::int64_t> unravel(const Shape& shape, std::int64_t flat) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(shape.rank()), 0);
  for (int d = shape.rank() - 1; d >= 0; --d) {
    idx[static_cast<std::size_t>(d)] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}
}  // namespace ew

using ew::dense_strides;
using ew::unravel;

double activation_value(double x, Activation act) {
  const double pi = 3.14159265358979323846;
  switch (act) {
    case Activation::none: return x;
    // 0.5 x (1 + erf(x/sqrt2)) written with erfc, which is the same function without the
    // cancellation of 1 + erf for negative x.
    case Activation::gelu: return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    // 0.5 x (1 + tanh(u)) with 1 + tanh(u) = 2 / (1 + e^{-2u}), exact in the left tail too.
    case Activation::gelu_tanh: {
      const double u = std::sqrt(2.0 / pi) * (x + 0.044715 * x * x * x);
      return x / (1.0 + std::exp(-2.0 * u));
    }
    case Activation::relu: return x > 0 ? x : 0.0;
    case Activation::silu: return x / (1.0 + std::exp(-x));
    case Activation::sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case Activation::tanh: return std::tanh(x);
  }
  return x;
}

RefTensor activation(const RefTensor& x, Activation act) {
  RefTensor y(x.shape);
  for (std::size_t i = 0; i < x.data.size(); ++i) y.data[i] = activation_value(x.data[i], act);
  return y;
}

RefTensor binary(const RefTensor& a, const RefTensor& b, BinaryOp op) {
  const int r = std::max(a.shape.rank(), b.shape.rank());
  Shape out;
  for (int d = 0; d < r; ++d) {
    const int da = d - (r - a.shape.rank()), db = d - (r - b.shape.rank());
    const std::int64_t ea = da < 0 ? 1 : a.shape[da], eb = db < 0 ? 1 : b.shape[db];
    if (ea != eb && ea != 1 && eb != 1) throw std::invalid_argument("ref::binary: shapes do not broadcast");
    out.push_back(std::max(ea, eb) == 1 ? 1 : (ea == 1 ? eb : ea));
  }
  RefTensor y(out);
  const auto sa = dense_strides(a.shape), sb = dense_strides(b.shape);
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    const auto idx = unravel(out, i);
    std::int64_t ia = 0, ib = 0;
    for (int d = 0; d < r; ++d) {
      const int da = d - (r - a.shape.rank()), db = d - (r - b.shape.rank());
      if (da >= 0 && a.shape[da] != 1) ia += idx[static_cast<std::size_t>(d)] * sa[static_cast<std::size_t>(da)];
      if (db >= 0 && b.shape[db] != 1) ib += idx[static_cast<std::size_t>(d)] * sb[static_cast<std::size_t>(db)];
    }
    const double u = a.data[static_cast<std::size_t>(ia)], v = b.data[static_cast<std::size_t>(ib)];
    double res = 0;
    switch (op) {
      case BinaryOp::add: res = u + v; break;
      case BinaryOp::sub: res = u - v; break;
      case BinaryOp::mul: res = u * v; break;
      case BinaryOp::div: res = u / v; break;
    }
    y.data[static_cast<std::size_t>(i)] = res;
  }
  return y;
}

RefTensor scale(const RefTensor& x, const ScaleAttrs& attrs) {
  RefTensor y(x.shape);
  for (std::size_t i = 0; i < x.data.size(); ++i)
    y.data[i] = x.data[i] * static_cast<double>(attrs.scale) + static_cast<double>(attrs.shift);
  return y;
}

RefTensor glu(const RefTensor& x, const GluAttrs& attrs) {
  const int axis = attrs.axis < 0 ? attrs.axis + x.shape.rank() : attrs.axis;
  Shape out = x.shape;
  const std::int64_t h = x.shape[axis] / 2;
  out[axis] = h;
  RefTensor y(out);
  const auto sx = dense_strides(x.shape);
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    const auto idx = unravel(out, i);
    std::int64_t off = 0;
    for (int d = 0; d < x.shape.rank(); ++d) off += idx[static_cast<std::size_t>(d)] * sx[static_cast<std::size_t>(d)];
    const double a = x.data[static_cast<std::size_t>(off)];
    const double b = x.data[static_cast<std::size_t>(off + h * sx[static_cast<std::size_t>(axis)])];
    const double sig_b = 1.0 / (1.0 + std::exp(-b)), sig_a = 1.0 / (1.0 + std::exp(-a));
    y.data[static_cast<std::size_t>(i)] = attrs.kind == GluKind::glu ? a * sig_b : a * sig_a * b;
  }
  return y;
}

}  // namespace encore::ref
