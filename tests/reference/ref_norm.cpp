#include "reference/ref_norm.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "reference/ref_elementwise.h"

namespace encore::ref {
namespace {

// Calls fn(list of flat offsets of one line along `axis`) for every line of a dense tensor.
template <typename Fn>
void for_each_line(const Shape& shape, int axis, Fn&& fn) {
  const auto st = ew::dense_strides(shape);
  const std::int64_t n = shape[axis], total = shape.numel();
  if (n == 0) return;
  for (std::int64_t i = 0; i < total; ++i) {
    const auto idx = ew::unravel(shape, i);
    if (idx[static_cast<std::size_t>(axis)] != 0) continue;
    std::vector<std::size_t> offs;
    for (std::int64_t j = 0; j < n; ++j) offs.push_back(static_cast<std::size_t>(i + j * st[static_cast<std::size_t>(axis)]));
    fn(offs);
  }
}

int norm_axis(int axis, int rank) { return axis < 0 ? axis + rank : axis; }

}  // namespace

RefTensor layer_norm(const RefTensor& x, const RefTensor* gamma, const RefTensor* beta, const LayerNormAttrs& attrs) {
  RefTensor y(x.shape);
  for_each_line(x.shape, x.shape.rank() - 1, [&](const std::vector<std::size_t>& o) {
    const double n = static_cast<double>(o.size());
    double mean = 0;
    for (auto i : o) mean += x.data[i];
    mean /= n;
    double ss = 0;
    for (auto i : o) ss += (x.data[i] - mean) * (x.data[i] - mean);
    const double denom = attrs.kind == LayerNormKind::standard ? std::sqrt(ss / n + attrs.eps)
                                                               : std::sqrt(ss / (n - 1)) + attrs.eps;
    for (std::size_t j = 0; j < o.size(); ++j) {
      double v = (x.data[o[j]] - mean) / denom;
      if (gamma) v *= gamma->data[j];
      if (beta) v += beta->data[j];
      y.data[o[j]] = v;
    }
  });
  return y;
}

RefTensor rms_norm(const RefTensor& x, const RefTensor* gamma, const RmsNormAttrs& attrs) {
  RefTensor y(x.shape);
  for_each_line(x.shape, x.shape.rank() - 1, [&](const std::vector<std::size_t>& o) {
    double ss = 0;
    for (auto i : o) ss += x.data[i] * x.data[i];
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(o.size()) + attrs.eps);
    for (std::size_t j = 0; j < o.size(); ++j) y.data[o[j]] = x.data[o[j]] * r * (gamma ? gamma->data[j] : 1.0);
  });
  return y;
}

RefTensor group_norm(const RefTensor& x, const RefTensor* gamma, const RefTensor* beta, const GroupNormAttrs& attrs) {
  RefTensor y(x.shape);
  const std::int64_t b = x.shape[0], c = x.shape[1], s = x.numel() / std::max<std::int64_t>(1, b * c);
  const std::int64_t cpg = c / attrs.groups;
  for (std::int64_t bi = 0; bi < b; ++bi)
    for (std::int64_t g = 0; g < attrs.groups; ++g) {
      const std::int64_t start = (bi * c + g * cpg) * s, n = cpg * s;  // the group is contiguous
      double mean = 0, ss = 0;
      for (std::int64_t i = 0; i < n; ++i) mean += x.data[static_cast<std::size_t>(start + i)];
      mean /= static_cast<double>(n);
      for (std::int64_t i = 0; i < n; ++i) {
        const double d = x.data[static_cast<std::size_t>(start + i)] - mean;
        ss += d * d;
      }
      const double denom = std::sqrt(ss / static_cast<double>(n) + attrs.eps);
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t ch = g * cpg + i / s;
        double v = (x.data[static_cast<std::size_t>(start + i)] - mean) / denom;
        if (gamma) v *= gamma->data[static_cast<std::size_t>(ch)];
        if (beta) v += beta->data[static_cast<std::size_t>(ch)];
        y.data[static_cast<std::size_t>(start + i)] = v;
      }
    }
  return y;
}

RefTensor l2_normalize(const RefTensor& x, const L2NormAttrs& attrs) {
  RefTensor y(x.shape);
  for_each_line(x.shape, norm_axis(attrs.axis, x.shape.rank()), [&](const std::vector<std::size_t>& o) {
    double ss = 0;
    for (auto i : o) ss += x.data[i] * x.data[i];
    const double denom = std::max(std::sqrt(ss), static_cast<double>(attrs.eps));
    for (auto i : o) y.data[i] = x.data[i] / denom;
  });
  return y;
}

RefTensor softmax(const RefTensor& x, int axis, bool log) {
  RefTensor y(x.shape);
  for_each_line(x.shape, norm_axis(axis, x.shape.rank()), [&](const std::vector<std::size_t>& o) {
    double m = -std::numeric_limits<double>::infinity();
    for (auto i : o) m = std::max(m, x.data[i]);
    double s = 0;
    for (auto i : o) s += std::exp(x.data[i] - m);
    for (auto i : o) y.data[i] = log ? (x.data[i] - m) - std::log(s) : std::exp(x.data[i] - m) / s;
  });
  return y;
}

}  // namespace encore::ref
