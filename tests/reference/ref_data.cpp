#include "reference/ref_data.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "reference/ref_elementwise.h"

namespace encore::ref {
namespace {

using ew::dense_strides;
using ew::unravel;

int norm_axis(int axis, int rank) { return axis < 0 ? axis + rank : axis; }

std::int64_t offset(const std::vector<std::int64_t>& idx, const std::vector<std::int64_t>& st) {
  std::int64_t o = 0;
  for (std::size_t d = 0; d < idx.size(); ++d) o += idx[d] * st[d];
  return o;
}

double& at(RefTensor& t, const std::vector<std::int64_t>& idx) {
  return t.data[static_cast<std::size_t>(offset(idx, dense_strides(t.shape)))];
}
double at(const RefTensor& t, const std::vector<std::int64_t>& idx) {
  return t.data[static_cast<std::size_t>(offset(idx, dense_strides(t.shape)))];
}

}  // namespace

RefTensor embedding(const RefTensor& table, const RefTensor& ids) {
  Shape out = ids.shape;
  const std::int64_t d = table.shape[1];
  out.push_back(d);
  RefTensor y(out);
  for (std::int64_t i = 0; i < ids.numel(); ++i) {
    const auto row = static_cast<std::int64_t>(ids.data[static_cast<std::size_t>(i)]);
    for (std::int64_t j = 0; j < d; ++j)
      y.data[static_cast<std::size_t>(i * d + j)] = table.data[static_cast<std::size_t>(row * d + j)];
  }
  return y;
}

RefTensor concat(const std::vector<RefTensor>& xs, int axis_in) {
  const int axis = norm_axis(axis_in, xs[0].shape.rank());
  Shape out = xs[0].shape;
  out[axis] = 0;
  for (const auto& x : xs) out[axis] += x.shape[axis];
  RefTensor y(out);
  std::int64_t base = 0;
  for (const auto& x : xs) {
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      auto idx = unravel(x.shape, i);
      idx[static_cast<std::size_t>(axis)] += base;
      at(y, idx) = x.data[static_cast<std::size_t>(i)];
    }
    base += x.shape[axis];
  }
  return y;
}

RefTensor pad(const RefTensor& x, const PadAttrs& attrs) {
  const int r = x.shape.rank();
  Shape out = x.shape;
  std::vector<std::int64_t> before(static_cast<std::size_t>(r), 0);
  for (int d = 0; d < r; ++d) {
    const std::size_t i = 2 * static_cast<std::size_t>(d);
    if (i < attrs.pads.size()) {
      before[static_cast<std::size_t>(d)] = attrs.pads[i];
      out[d] += attrs.pads[i] + attrs.pads[i + 1];
    }
  }
  RefTensor y(out);
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    auto idx = unravel(out, i);
    bool inside = true;
    for (int d = 0; d < r; ++d) {
      idx[static_cast<std::size_t>(d)] -= before[static_cast<std::size_t>(d)];
      inside = inside && idx[static_cast<std::size_t>(d)] >= 0 && idx[static_cast<std::size_t>(d)] < x.shape[d];
    }
    y.data[static_cast<std::size_t>(i)] = inside ? at(x, idx) : static_cast<double>(attrs.value);
  }
  return y;
}

RefTensor gather(const RefTensor& x, const std::vector<std::int64_t>& index, int axis_in) {
  const int axis = norm_axis(axis_in, x.shape.rank());
  Shape out = x.shape;
  out[axis] = static_cast<std::int64_t>(index.size());
  RefTensor y(out);
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    auto idx = unravel(out, i);
    idx[static_cast<std::size_t>(axis)] = index[static_cast<std::size_t>(idx[static_cast<std::size_t>(axis)])];
    y.data[static_cast<std::size_t>(i)] = at(x, idx);
  }
  return y;
}

RefTensor scatter_add(const RefTensor& x, const std::vector<std::int64_t>& index, const RefTensor& src, int axis_in) {
  const int axis = norm_axis(axis_in, x.shape.rank());
  RefTensor y = x;
  for (std::int64_t i = 0; i < src.numel(); ++i) {
    auto idx = unravel(src.shape, i);
    idx[static_cast<std::size_t>(axis)] = index[static_cast<std::size_t>(idx[static_cast<std::size_t>(axis)])];
    at(y, idx) += src.data[static_cast<std::size_t>(i)];
  }
  return y;
}

RefTensor reduce(const RefTensor& x, const ReduceAttrs& attrs, bool mean) {
  const int r = x.shape.rank();
  std::vector<bool> red(static_cast<std::size_t>(r), attrs.axes.empty());
  for (int a : attrs.axes) red[static_cast<std::size_t>(norm_axis(a, r))] = true;
  Shape out;
  for (int d = 0; d < r; ++d)
    if (!red[static_cast<std::size_t>(d)]) out.push_back(x.shape[d]);
    else if (attrs.keepdims) out.push_back(1);
  RefTensor y(out);
  RefTensor count(out);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const auto idx = unravel(x.shape, i);
    std::vector<std::int64_t> o;
    for (int d = 0; d < r; ++d)
      if (!red[static_cast<std::size_t>(d)]) o.push_back(idx[static_cast<std::size_t>(d)]);
      else if (attrs.keepdims) o.push_back(0);
    at(y, o) += x.data[static_cast<std::size_t>(i)];
    at(count, o) += 1;
  }
  if (mean)
    for (std::size_t i = 0; i < y.data.size(); ++i) y.data[i] /= count.data[i];
  return y;
}

RefTensor argmax(const RefTensor& x, int axis_in, bool keepdims) {
  const int axis = norm_axis(axis_in, x.shape.rank());
  Shape out = x.shape;
  out[axis] = 1;
  RefTensor y(out);
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    auto idx = unravel(out, i);
    std::int64_t best = 0;
    for (std::int64_t j = 0; j < x.shape[axis]; ++j) {
      idx[static_cast<std::size_t>(axis)] = j;
      auto bidx = idx;
      bidx[static_cast<std::size_t>(axis)] = best;
      if (at(x, idx) > at(x, bidx)) best = j;
    }
    y.data[static_cast<std::size_t>(i)] = static_cast<double>(best);
  }
  if (!keepdims) y.shape.erase(axis);
  return y;
}

std::pair<RefTensor, RefTensor> topk(const RefTensor& x, int k, int axis_in) {
  const int axis = norm_axis(axis_in, x.shape.rank());
  Shape out = x.shape;
  out[axis] = k;
  RefTensor values(out), indices(out);
  Shape lines = x.shape;
  lines[axis] = 1;
  for (std::int64_t i = 0; i < lines.numel(); ++i) {
    auto idx = unravel(lines, i);
    std::vector<std::pair<double, std::int64_t>> v;
    for (std::int64_t j = 0; j < x.shape[axis]; ++j) {
      idx[static_cast<std::size_t>(axis)] = j;
      v.emplace_back(at(x, idx), j);
    }
    std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (int j = 0; j < k; ++j) {
      idx[static_cast<std::size_t>(axis)] = j;
      at(values, idx) = v[static_cast<std::size_t>(j)].first;
      at(indices, idx) = static_cast<double>(v[static_cast<std::size_t>(j)].second);
    }
  }
  return {values, indices};
}

RefTensor cumsum(const RefTensor& x, int axis_in) {
  const int axis = norm_axis(axis_in, x.shape.rank());
  RefTensor y(x.shape);
  const std::int64_t step = dense_strides(x.shape)[static_cast<std::size_t>(axis)], n = x.shape[axis];
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    if ((i / step) % n != 0) continue;  // start of a line along the axis
    double s = 0;
    for (std::int64_t j = 0; j < n; ++j) {
      s += x.data[static_cast<std::size_t>(i + j * step)];
      y.data[static_cast<std::size_t>(i + j * step)] = s;
    }
  }
  return y;
}

namespace {

// The 1-D interpolation matrix row of output coordinate o: (input index, weight) pairs.
std::vector<std::pair<std::int64_t, double>> weights_1d(ResizeMode mode, std::int64_t in, std::int64_t out,
                                                        std::int64_t o) {
  std::vector<std::pair<std::int64_t, double>> w;
  auto clampi = [&](std::int64_t i) { return std::min(std::max<std::int64_t>(i, 0), in - 1); };
  if (mode == ResizeMode::nearest) {
    // torch computes the scale and the product in float; the floor of that product is the index.
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    w.emplace_back(std::min(static_cast<std::int64_t>(std::floor(static_cast<float>(o) * scale)), in - 1), 1.0);
    return w;
  }
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  double src = (static_cast<double>(o) + 0.5) * scale - 0.5;
  if (mode == ResizeMode::bilinear) {
    src = std::max(src, 0.0);
    const auto i0 = static_cast<std::int64_t>(std::floor(src));
    const double t = src - static_cast<double>(i0);
    w.emplace_back(clampi(i0), 1.0 - t);
    w.emplace_back(clampi(i0 + 1), t);
    return w;
  }
  const double a = -0.75;
  const auto i0 = static_cast<std::int64_t>(std::floor(src));
  const double t = src - static_cast<double>(i0);
  for (int j = -1; j <= 2; ++j) {
    const double d = std::fabs(t - j);  // distance from the sample point to tap i0 + j
    const double k = d <= 1 ? ((a + 2) * d - (a + 3)) * d * d + 1 : ((a * d - 5 * a) * d + 8 * a) * d - 4 * a;
    w.emplace_back(clampi(i0 + j), k);
  }
  return w;
}

}  // namespace

RefTensor resize(const RefTensor& x, const ResizeAttrs& attrs) {
  const std::int64_t n = x.shape[0], c = x.shape[1], ih = x.shape[2], iw = x.shape[3];
  RefTensor y(Shape{n, c, attrs.out_h, attrs.out_w});
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t ch = 0; ch < c; ++ch)
      for (std::int64_t oy = 0; oy < attrs.out_h; ++oy)
        for (std::int64_t ox = 0; ox < attrs.out_w; ++ox) {
          double s = 0;
          for (const auto& [ry, wy] : weights_1d(attrs.mode, ih, attrs.out_h, oy))
            for (const auto& [rx, wx] : weights_1d(attrs.mode, iw, attrs.out_w, ox))
              s += wy * wx * at(x, {b, ch, ry, rx});
          at(y, {b, ch, oy, ox}) = s;
        }
  return y;
}

}  // namespace encore::ref
