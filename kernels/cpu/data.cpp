// Data-movement kernels: copy, concat, pad, gather (index_select), scatter_add (index_add) and
// embedding. Every dtype is moved as raw elements (scatter_add, which adds, takes floating
// dtypes). Indices are validated before anything is written, so a bad id leaves y untouched and
// no exception ever crosses an OpenMP region.
#include <string>
#include <vector>

#include "kernels/common/index_checks.h"
#include "kernels/cpu/simd_common.h"

namespace encore::cpu {
namespace ewk {
namespace {

template <typename T>
inline void strided_move(const std::byte* src, i64 ss, std::byte* dst, i64 ds, i64 n) {
  const T* s = reinterpret_cast<const T*>(src);
  T* d = reinterpret_cast<T*>(dst);
  for (i64 i = 0; i < n; ++i) d[i * ds] = s[i * ss];
}

/// Moves one run of n elements of `es` bytes (strides in elements).
inline void move_run(const std::byte* src, i64 ss, std::byte* dst, i64 ds, i64 n, i64 es) {
  if ((ss == 1 && ds == 1) || n == 1) {
    std::memcpy(dst, src, static_cast<std::size_t>(n * es));
    return;
  }
  switch (es) {
    case 1: return strided_move<std::uint8_t>(src, ss, dst, ds, n);
    case 2: return strided_move<std::uint16_t>(src, ss, dst, ds, n);
    case 4: return strided_move<std::uint32_t>(src, ss, dst, ds, n);
    default: return strided_move<std::uint64_t>(src, ss, dst, ds, n);
  }
}

/// dst[shape] = src[shape] for raw elements of `es` bytes; strides in elements.
void copy_strided(const std::byte* src, const i64* ss, std::byte* dst, const i64* ds, const Shape& shape, i64 es,
                  const CpuContext& ctx) {
  if (shape.numel() == 0) return;
  const Walk<2> w(shape, {ss, ds});
  const i64 s1 = w.inner_stride(0), d1 = w.inner_stride(1);
  parallel_segments(w, ctx, [&](const std::array<i64, 2>& off, i64 len) {
    move_run(src + off[0] * es, s1, dst + off[1] * es, d1, len, es);
  });
}

void copy_tensor(const Tensor& x, const Tensor& y, const CpuContext& ctx) {
  copy_strided(bytes_of(x), x.strides().begin(), bytes_of(y), y.strides().begin(), x.shape(),
               static_cast<i64>(dtype_size(x.dtype())), ctx);
}

/// The bytes of `value` in dtype t, converted exactly as Tensor::fill does.
struct alignas(8) Raw8 {
  std::array<std::byte, 8> b{};
};
Raw8 value_bytes(double value, DType t) {
  Raw8 raw;
  Tensor one = Tensor::from_blob(raw.b.data(), Shape{1}, t);
  one.fill(value);
  return raw;
}

void fill_value(const Tensor& y, double value, const CpuContext& ctx) {
  const auto v = value_bytes(value, y.dtype());
  const i64 es = static_cast<i64>(dtype_size(y.dtype()));
  const Walk<1> w(y.shape(), {y.strides().begin()});
  std::byte* yb = bytes_of(y);
  const i64 s = w.inner_stride(0);
  parallel_segments(w, ctx, [&](const std::array<i64, 1>& off, i64 len) {
    std::byte* p = yb + off[0] * es;
    for (i64 i = 0; i < len; ++i) std::memcpy(p + i * s * es, v.b.data(), static_cast<std::size_t>(es));
  });
}

std::string index_str(const Shape& shape, i64 flat) {
  std::string s = "]";
  for (int d = shape.rank() - 1; d >= 0; --d) {
    s.insert(0, std::to_string(flat % shape[d]));
    if (d > 0) s.insert(0, ", ");
    flat /= shape[d];
  }
  return "[" + s;
}

/// Reads a 1-D index tensor and checks every entry is in [0, extent).
std::vector<i64> read_indices(const char* op, const Tensor& index, i64 extent, int axis) {
  check_index(op, "index", index);
  ENCORE_CHECK(index.rank() == 1, invalid_argument, "{}: index must be 1-D, got shape {}", op, index.shape().str());
  std::vector<i64> v(static_cast<std::size_t>(index.numel()));
  const std::byte* p = bytes_of(index);
  for (i64 j = 0; j < index.numel(); ++j) {
    const i64 id = load_index(p, index.dtype(), j * index.strides()[0]);
    ENCORE_CHECK(id >= 0 && id < extent, invalid_argument,
                 "{}: index {} at position {} is out of range for dimension {} of extent {}", op, id, j, axis, extent);
    v[static_cast<std::size_t>(j)] = id;
  }
  return v;
}

}  // namespace
}  // namespace ewk

using namespace ewk;

void copy(const Tensor& x, const Tensor& y, const CpuContext& ctx) {
  check_defined("copy", "x", x);
  check_defined("copy", "y", y);
  check_shape("copy", "y", y, x.shape());
  ENCORE_CHECK(x.dtype() == y.dtype(), invalid_argument, "copy: x is {} but y is {} (use cast to convert)",
               dtype_name(x.dtype()), dtype_name(y.dtype()));
  copy_tensor(x, y, ctx);
}

void concat(std::span<const Tensor> xs, int axis_in, const Tensor& y, const CpuContext& ctx) {
  check_defined("concat", "y", y);
  ENCORE_CHECK(!xs.empty(), invalid_argument, "concat: no inputs");
  const int axis = normalize_axis(axis_in, y.rank(), "concat axis");
  i64 total = 0;
  for (std::size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    check_defined("concat", "input", x);
    ENCORE_CHECK(x.dtype() == y.dtype(), invalid_argument, "concat: input {} is {} but y is {}", k,
                 dtype_name(x.dtype()), dtype_name(y.dtype()));
    bool ok = x.rank() == y.rank();
    for (int d = 0; ok && d < y.rank(); ++d) ok = d == axis || x.shape()[d] == y.shape()[d];
    ENCORE_CHECK(ok, invalid_argument, "concat: input {} has shape {}, incompatible with y {} along axis {}", k,
                 x.shape().str(), y.shape().str(), axis);
    total += x.shape()[axis];
  }
  ENCORE_CHECK(total == y.shape()[axis], invalid_argument, "concat: inputs add up to {} along axis {}, y has {}",
               total, axis, y.shape()[axis]);
  i64 at = 0;
  for (const Tensor& x : xs) {
    const i64 n = x.shape()[axis];
    if (n > 0 && x.numel() > 0) copy_tensor(x, y.slice(axis, at, at + n), ctx);
    at += n;
  }
}

void pad(const Tensor& x, const PadAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_defined("pad", "x", x);
  check_defined("pad", "y", y);
  ENCORE_CHECK(x.dtype() == y.dtype(), invalid_argument, "pad: x is {} but y is {}", dtype_name(x.dtype()),
               dtype_name(y.dtype()));
  ENCORE_CHECK(attrs.pads.size() % 2 == 0 && attrs.pads.size() <= 2 * static_cast<std::size_t>(x.rank()),
               invalid_argument, "pad: {} pad values for a rank-{} tensor (expected pairs, at most {})",
               attrs.pads.size(), x.rank(), 2 * x.rank());
  Shape expected = x.shape();
  bool grows = false;
  Tensor src = x, dst = y;
  for (int d = 0; d < x.rank(); ++d) {
    const std::size_t i = 2 * static_cast<std::size_t>(d);
    const i64 before = i < attrs.pads.size() ? attrs.pads[i] : 0, after = i < attrs.pads.size() ? attrs.pads[i + 1] : 0;
    expected[d] = x.shape()[d] + before + after;
    ENCORE_CHECK(expected[d] >= 0, invalid_argument, "pad: pads {} and {} remove more than dimension {} of {} holds",
                 before, after, d, x.shape().str());
    grows = grows || before > 0 || after > 0;
  }
  check_shape("pad", "y", y, expected);
  if (y.numel() == 0) return;
  if (grows) fill_value(y, attrs.value, ctx);
  // Negative pads crop x; positive ones offset the interior of y.
  for (int d = 0; d < x.rank(); ++d) {
    const std::size_t i = 2 * static_cast<std::size_t>(d);
    const i64 before = i < attrs.pads.size() ? attrs.pads[i] : 0, after = i < attrs.pads.size() ? attrs.pads[i + 1] : 0;
    const i64 x0 = std::max<i64>(0, -before), x1 = x.shape()[d] - std::max<i64>(0, -after);
    if (x1 <= x0) return;  // nothing of x survives: y is all padding
    src = src.slice(d, x0, x1);
    dst = dst.slice(d, std::max<i64>(0, before), std::max<i64>(0, before) + (x1 - x0));
  }
  copy_tensor(src, dst, ctx);
}

void gather(const Tensor& x, const Tensor& index, const GatherAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_defined("gather", "x", x);
  check_defined("gather", "y", y);
  check_index("gather", "index", index);
  const int axis = index_checks::check_gather(x, index, attrs.axis, y);
  const std::vector<i64> idx = read_indices("gather", index, x.shape()[axis], axis);
  if (y.numel() == 0) return;
  const Without xo(x, axis), yo(y, axis);
  const i64 es = static_cast<i64>(dtype_size(x.dtype()));
  const i64 slice = xo.shape.numel(), n = static_cast<i64>(idx.size());
  const std::byte* xb = bytes_of(x);
  std::byte* yb = bytes_of(y);
  const i64 xa = x.strides()[axis], ya = y.strides()[axis];
  if (slice >= kParallelMin || n == 1) {  // few large slices (beam reorder): split each slice
    for (i64 j = 0; j < n; ++j)
      copy_strided(xb + idx[static_cast<std::size_t>(j)] * xa * es, xo.strides.begin(), yb + j * ya * es,
                   yo.strides.begin(), xo.shape, es, ctx);
    return;
  }
  const Walk<2> w(xo.shape, {xo.strides.begin(), yo.strides.begin()});
  const i64 s1 = w.inner_stride(0), d1 = w.inner_stride(1);
  const int nt = static_cast<int>(std::min<i64>(threads_for(n * slice, ctx), n));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (i64 j = 0; j < n; ++j) {
    const std::byte* xs = xb + idx[static_cast<std::size_t>(j)] * xa * es;
    std::byte* ys = yb + j * ya * es;
    w.segments(0, slice, [&](const std::array<i64, 2>& off, i64 len) {
      move_run(xs + off[0] * es, s1, ys + off[1] * es, d1, len, es);
    });
  }
}

void scatter_add(const Tensor& x, const Tensor& index, const Tensor& src, const ScatterAddAttrs& attrs, const Tensor& y,
                 const CpuContext& ctx) {
  const char* op = "scatter_add";
  check_float(op, "x", x);
  check_float(op, "src", src);
  check_float(op, "y", y);
  check_index(op, "index", index);
  const int axis = index_checks::check_scatter_add(x, index, src, attrs.axis, y);
  const std::vector<i64> idx = read_indices(op, index, x.shape()[axis], axis);
  if (y.numel() == 0) return;
  // Accumulate in f32: y itself when it is contiguous f32, else a scratch copy rounded once at the end.
  const bool direct = y.dtype() == DType::F32 && y.is_contiguous();
  std::vector<float> scratch(direct ? 0 : static_cast<std::size_t>(y.numel()));
  float* acc = direct ? y.data_ptr<float>() : scratch.data();
  const Shape acc_strides = contiguous_strides(y.shape());
  {
    const Walk<2> w(x.shape(), {x.strides().begin(), acc_strides.begin()});
    const std::byte* xb = bytes_of(x);
    const DType xt = x.dtype();
    const i64 xe = static_cast<i64>(dtype_size(xt)), sx = w.inner_stride(0), sa = w.inner_stride(1);
    parallel_segments(w, ctx, [&](const std::array<i64, 2>& off, i64 len) {
      if (sa == 1) return load_row(xb + off[0] * xe, xt, sx, len, acc + off[1]);
      float buf[kChunk];
      for (i64 i = 0; i < len; i += kChunk) {
        const i64 m = std::min(kChunk, len - i);
        load_row(xb + (off[0] + i * sx) * xe, xt, sx, m, buf);
        for (i64 k = 0; k < m; ++k) acc[off[1] + (i + k) * sa] = buf[k];
      }
    });
  }
  if (!idx.empty()) {
    // Threads split the positions off the axis; each walks the index in order, so duplicate
    // indices add up deterministically and no two threads touch one element.
    Shape acc_outer_strides;
    const Without so(src, axis);
    for (int d = 0; d < y.rank(); ++d)
      if (d != axis) acc_outer_strides.push_back(acc_strides[d]);
    const Walk<2> w(so.shape, {so.strides.begin(), acc_outer_strides.begin()});
    const std::byte* sb = bytes_of(src);
    const DType st = src.dtype();
    const i64 se = static_cast<i64>(dtype_size(st)), s1 = w.inner_stride(0), a1 = w.inner_stride(1);
    const i64 s_axis = src.strides()[axis], a_axis = acc_strides[axis], total = w.numel;
    const i64 n = static_cast<i64>(idx.size());
    const int nt = static_cast<int>(std::min<i64>(threads_for(total * n, ctx), std::max<i64>(1, total / 64)));
    const i64 ntasks = nt > 1 ? static_cast<i64>(nt) * 4 : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i64 t = 0; t < ntasks; ++t) {
      float buf[kChunk];
      for (i64 j = 0; j < n; ++j) {
        const std::byte* sj = sb + j * s_axis * se;
        float* aj = acc + idx[static_cast<std::size_t>(j)] * a_axis;
        w.segments(total * t / ntasks, total * (t + 1) / ntasks, [&](const std::array<i64, 2>& off, i64 len) {
          for (i64 i = 0; i < len; i += kChunk) {
            const i64 m = std::min(kChunk, len - i);
            const float* v = row_f32(sj + (off[0] + i * s1) * se, st, s1, m, buf);
            float* a = aj + off[1] + i * a1;
            for (i64 k = 0; k < m; ++k) a[k * a1] += v[k];
          }
        });
      }
    }
  }
  if (!direct) {
    const Walk<2> w(y.shape(), {acc_strides.begin(), y.strides().begin()});
    std::byte* yb = bytes_of(y);
    const DType yt = y.dtype();
    const i64 ye = static_cast<i64>(dtype_size(yt)), sa = w.inner_stride(0), sy = w.inner_stride(1);
    parallel_segments(w, ctx, [&](const std::array<i64, 2>& off, i64 len) {
      float buf[kChunk];
      for (i64 i = 0; i < len; i += kChunk) {
        const i64 m = std::min(kChunk, len - i);
        for (i64 k = 0; k < m; ++k) buf[k] = acc[off[0] + (i + k) * sa];
        store_row(buf, m, yb + (off[1] + i * sy) * ye, yt, sy);
      }
    });
  }
}

void embedding(const Tensor& table, const Tensor& ids, const Tensor& y, const CpuContext& ctx) {
  check_defined("embedding", "table", table);
  check_defined("embedding", "ids", ids);
  check_defined("embedding", "y", y);
  ENCORE_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, unsupported,
               "embedding: ids have dtype {}; expected i32 or i64", dtype_name(ids.dtype()));
  ENCORE_CHECK(table.rank() == 2, invalid_argument, "embedding: table must be [V, D], got {}", table.shape().str());
  const i64 vocab = table.shape()[0], dim = table.shape()[1];
  Shape expected = ids.shape();
  expected.push_back(dim);
  check_shape("embedding", "y", y, expected);
  const bool same = table.dtype() == y.dtype();
  ENCORE_CHECK(same || (is_floating(table.dtype()) && is_floating(y.dtype())), unsupported,
               "embedding: a {} table cannot produce {} output", dtype_name(table.dtype()), dtype_name(y.dtype()));
  // Validate every id first (serially) so an error is thrown before anything is written.
  const Walk<1> iw(ids.shape(), {ids.strides().begin()});
  const std::byte* ib = bytes_of(ids);
  const DType it = ids.dtype();
  i64 pos = 0;
  iw.elements(0, iw.numel, [&](const std::array<i64, 1>& off) {
    const i64 id = load_index(ib, it, off[0]);
    ENCORE_CHECK(id >= 0 && id < vocab, invalid_argument,
                 "embedding: id {} at position {} (index {}) is out of range for a vocabulary of {} rows", id, pos,
                 index_str(ids.shape(), pos), vocab);
    ++pos;
  });
  if (y.numel() == 0) return;
  const Walk<2> w(ids.shape(), {ids.strides().begin(), y.strides().begin()});
  const std::byte* tb = bytes_of(table);
  std::byte* yb = bytes_of(y);
  const i64 te = static_cast<i64>(dtype_size(table.dtype())), ye = static_cast<i64>(dtype_size(y.dtype()));
  const i64 t_row = table.strides()[0], t_col = table.strides()[1], y_col = y.strides()[y.rank() - 1];
  const DType tt = table.dtype(), yt = y.dtype();
  parallel_elements(w, dim, ctx, [&](const std::array<i64, 2>& off) {
    const std::byte* row = tb + load_index(ib, it, off[0]) * t_row * te;
    std::byte* out = yb + off[1] * ye;
    if (same) return move_run(row, t_col, out, y_col, dim, te);
    float buf[kChunk];
    for (i64 i = 0; i < dim; i += kChunk) {
      const i64 m = std::min(kChunk, dim - i);
      store_row(row_f32(row + i * t_col * te, tt, t_col, m, buf), m, out + i * y_col * ye, yt, y_col);
    }
  });
}

}  // namespace encore::cpu
