// Reductions: sum/mean over axes, argmax, topk, cumsum.
//
// Floating sums accumulate in double (rounded once on the store), integer ones in int64. Output
// elements are independent, so threads split them; each walks its reduced box in memory order of
// the innermost reduced dims.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>
#include <vector>

#include "kernels/common/reduce_layout.h"
#include "kernels/cpu/simd_common.h"

namespace encore::cpu {
namespace ewk {
namespace {

template <typename T>
inline double to_double(T v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>)
    return to_f32(v);
  else
    return static_cast<double>(v);
}

template <typename T>
inline constexpr bool is_float_storage =
    std::is_same_v<T, float> || std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

/// Sum of n elements p[0], p[s], ... in double; four accumulators break the add latency chain.
template <typename T>
double sum_run(const T* p, i64 s, i64 n) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  i64 i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += to_double(p[i * s]);
    a1 += to_double(p[(i + 1) * s]);
    a2 += to_double(p[(i + 2) * s]);
    a3 += to_double(p[(i + 3) * s]);
  }
  for (; i < n; ++i) a0 += to_double(p[i * s]);
  return (a0 + a1) + (a2 + a3);
}

template <typename T>
void store_value(std::byte* p, double v) {
  if constexpr (is_float_storage<T>) *reinterpret_cast<T*>(p) = from_f32<T>(static_cast<float>(v));
  else *reinterpret_cast<T*>(p) = static_cast<T>(v);
}

}  // namespace
}  // namespace ewk

using namespace ewk;

void reduce(const Tensor& x, const ReduceAttrs& attrs, bool mean, const Tensor& y, const CpuContext& ctx) {
  const char* op = mean ? "reduce_mean" : "reduce_sum";
  check_defined(op, "x", x);
  check_defined(op, "y", y);
  const reduce_layout::Layout rl = reduce_layout::plan(op, x, attrs, mean, y);
  if (y.numel() == 0) return;
  const Shape &kept_shape = rl.kept_shape, &kept_x = rl.kept_x, &kept_y = rl.kept_y, &red_shape = rl.red_shape,
              &red_x = rl.red_x;
  const Walk<2> out(kept_shape, {kept_x.begin(), kept_y.begin()});
  const Walk<1> box(red_shape, {red_x.begin()});
  const i64 count = red_shape.numel(), bs = box.inner_stride(0);
  const std::byte* xb = bytes_of(x);
  std::byte* yb = bytes_of(y);
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_float_storage<T> || std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>) {
      const T* xp = reinterpret_cast<const T*>(xb);
      parallel_elements(out, count, ctx, [&](const std::array<i64, 2>& o) {
        if constexpr (is_float_storage<T>) {
          double s = 0;
          if (count > 0)
            box.segments(0, count, [&](const std::array<i64, 1>& b, i64 len) { s += sum_run(xp + o[0] + b[0], bs, len); });
          store_value<T>(yb + o[1] * static_cast<i64>(sizeof(T)), mean ? s / static_cast<double>(count) : s);
        } else {
          std::uint64_t s = 0;  // wraps like the integer type would
          if (count > 0)
            box.elements(0, count, [&](const std::array<i64, 1>& b) { s += static_cast<std::uint64_t>(xp[o[0] + b[0]]); });
          reinterpret_cast<T*>(yb)[o[1]] = static_cast<T>(s);
        }
      });
    }
  });
}

void argmax(const Tensor& x, const ArgMaxAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_defined("argmax", "x", x);
  check_defined("argmax", "y", y);
  ENCORE_CHECK(x.dtype() != DType::Bool, unsupported, "argmax: x has dtype bool");
  ENCORE_CHECK(y.dtype() == DType::I64, invalid_argument, "argmax: y must be i64, got {}", dtype_name(y.dtype()));
  const int axis = normalize_axis(attrs.axis, x.rank(), "argmax axis");
  const i64 n = x.shape()[axis];
  ENCORE_CHECK(n > 0, invalid_argument, "argmax: dimension {} of {} is empty", axis, x.shape().str());
  std::vector<bool> reduced(static_cast<std::size_t>(x.rank()), false);
  reduced[static_cast<std::size_t>(axis)] = true;
  Shape expected = x.shape();
  if (attrs.keepdims) expected[axis] = 1;
  else expected.erase(axis);
  check_shape("argmax", "y", y, expected);
  if (y.numel() == 0) return;
  const Without xo(x, axis);
  const Shape ys = reduce_layout::kept_strides(y, reduced, attrs.keepdims);
  const Walk<2> out(xo.shape, {xo.strides.begin(), ys.begin()});
  const i64 xa = x.strides()[axis];
  std::int64_t* yp = y.data_ptr<std::int64_t>();
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x.data());
    parallel_elements(out, n, ctx, [&](const std::array<i64, 2>& o) {
      const T* p = xp + o[0];
      i64 bi = 0;
      if constexpr (std::is_integral_v<T>) {  // native compares: int64 beyond 2^53 is not a double
        T best = p[0];
        for (i64 i = 1; i < n; ++i)
          if (p[i * xa] > best) best = p[i * xa], bi = i;  // strict: ties keep the lowest index
      } else {
        double best = to_double(p[0]);
        for (i64 i = 1; i < n && !std::isnan(best); ++i) {  // the first NaN is the maximum
          const double v = to_double(p[i * xa]);
          if (v > best || std::isnan(v)) {  // strict: ties keep the lowest index
            best = v;
            bi = i;
          }
        }
      }
      yp[o[1]] = bi;
    });
  });
}

void topk(const Tensor& x, const TopKAttrs& attrs, const Tensor& values, const Tensor& indices, const CpuContext& ctx) {
  check_defined("topk", "x", x);
  check_defined("topk", "values", values);
  check_defined("topk", "indices", indices);
  ENCORE_CHECK(x.dtype() != DType::Bool, unsupported, "topk: x has dtype bool");
  ENCORE_CHECK(values.dtype() == x.dtype(), invalid_argument, "topk: values are {} but x is {}",
               dtype_name(values.dtype()), dtype_name(x.dtype()));
  ENCORE_CHECK(indices.dtype() == DType::I64 || indices.dtype() == DType::I32, invalid_argument,
               "topk: indices must be i64 (or i32), got {}", dtype_name(indices.dtype()));
  const int axis = normalize_axis(attrs.axis, x.rank(), "topk axis");
  const i64 n = x.shape()[axis], k = attrs.k;
  ENCORE_CHECK(k >= 0 && k <= n, invalid_argument, "topk: k = {} is outside [0, {}] (dimension {} of {})", k, n, axis,
               x.shape().str());
  Shape expected = x.shape();
  expected[axis] = k;
  check_shape("topk", "values", values, expected);
  check_shape("topk", "indices", indices, expected);
  if (values.numel() == 0) return;
  const Rows<3> rows({&x, &values, &indices}, axis);  // rows.len is n for x; values/indices use k
  // Rows takes its length from x; the three share the outer positions, and their axis strides are
  // read from each tensor, which is all visit() needs.
  const bool i64_out = indices.dtype() == DType::I64;
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    // Keys: integers as int64 (exact beyond 2^53), floats as double.
    using Key = std::conditional_t<std::is_integral_v<T>, std::int64_t, double>;
    parallel_rows(rows.count, n * 4, ctx, [&](i64 r0, i64 r1) {
      std::vector<Key> key(static_cast<std::size_t>(n));
      std::vector<i64> order(static_cast<std::size_t>(n));
      rows.visit(r0, r1, [&](const std::array<std::byte*, 3>& p) {
        const T* xr = reinterpret_cast<const T*>(p[0]);
        for (i64 i = 0; i < n; ++i) {
          if constexpr (std::is_integral_v<T>) key[static_cast<std::size_t>(i)] = static_cast<Key>(xr[i * rows.step[0]]);
          else key[static_cast<std::size_t>(i)] = to_double(xr[i * rows.step[0]]);
        }
        std::iota(order.begin(), order.end(), i64{0});
        // Descending; NaN above everything (torch); equal keys keep the lower index first.
        auto before = [&](i64 a, i64 b) {
          const Key va = key[static_cast<std::size_t>(a)], vb = key[static_cast<std::size_t>(b)];
          if constexpr (!std::is_integral_v<T>) {
            const bool na = std::isnan(va), nb = std::isnan(vb);
            if (na != nb) return na;
            if (na) return a < b;
          }
          if (va != vb) return va > vb;
          return a < b;
        };
        std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
        T* vr = reinterpret_cast<T*>(p[1]);
        for (i64 j = 0; j < k; ++j) {
          const i64 src = order[static_cast<std::size_t>(j)];
          vr[j * rows.step[1]] = xr[src * rows.step[0]];
          if (i64_out) reinterpret_cast<std::int64_t*>(p[2])[j * rows.step[2]] = src;
          else reinterpret_cast<std::int32_t*>(p[2])[j * rows.step[2]] = static_cast<std::int32_t>(src);
        }
      });
    });
  });
}

void cumsum(const Tensor& x, const CumSumAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_defined("cumsum", "x", x);
  check_defined("cumsum", "y", y);
  check_shape("cumsum", "y", y, x.shape());
  const bool fl = is_floating(x.dtype());
  ENCORE_CHECK(fl ? is_floating(y.dtype()) : (y.dtype() == DType::I32 || y.dtype() == DType::I64), unsupported,
               "cumsum: {} -> {} is not supported (floating -> floating, integer/bool -> i32/i64)",
               dtype_name(x.dtype()), dtype_name(y.dtype()));
  const int axis = normalize_axis(attrs.axis, x.rank(), "cumsum axis");
  if (x.numel() == 0) return;
  const Rows<2> rows({&x, &y}, axis);
  const i64 n = rows.len;
  const DType xt = x.dtype(), yt = y.dtype();
  if (fl) {
    parallel_rows(rows.count, n * 2, ctx, [&](i64 r0, i64 r1) {
      std::vector<float> buf(static_cast<std::size_t>(n));
      rows.visit(r0, r1, [&](const std::array<std::byte*, 2>& p) {
        load_row(p[0], xt, rows.step[0], n, buf.data());
        double s = 0;
        for (i64 i = 0; i < n; ++i) {
          s += buf[static_cast<std::size_t>(i)];
          buf[static_cast<std::size_t>(i)] = static_cast<float>(s);
        }
        store_row(buf.data(), n, p[1], yt, rows.step[1]);
      });
    });
    return;
  }
  visit_dtype(xt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!is_float_storage<T>) {
      parallel_rows(rows.count, n, ctx, [&](i64 r0, i64 r1) {
        rows.visit(r0, r1, [&](const std::array<std::byte*, 2>& p) {
          const T* xr = reinterpret_cast<const T*>(p[0]);
          std::uint64_t s = 0;
          for (i64 i = 0; i < n; ++i) {
            s += static_cast<std::uint64_t>(static_cast<std::int64_t>(xr[i * rows.step[0]]));
            if (yt == DType::I64) reinterpret_cast<std::int64_t*>(p[1])[i * rows.step[1]] = static_cast<std::int64_t>(s);
            else reinterpret_cast<std::int32_t*>(p[1])[i * rows.step[1]] = static_cast<std::int32_t>(s);
          }
        });
      });
    }
  });
}

}  // namespace encore::cpu
