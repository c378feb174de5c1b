// Pointwise CPU kernels: activation, binary (NumPy broadcasting), scale, glu, cast; plus the f32
// row loads/stores every kernel of this family converts through.
//
// Shape of every kernel: walk the output and inputs together (simd_common.h Walk, which merges
// contiguous dims into long runs), and per run either call the AVX-512 row kernel directly (f32,
// unit strides) or stage kChunk elements through f32 buffers (bf16/f16, strided, broadcast).
#include <atomic>
#include <cmath>

#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/simd_common.h"

namespace encore::cpu {
namespace ewk {

namespace {
std::atomic<bool> g_force_portable{false};
}  // namespace

bool use_avx512() noexcept { return has_avx512() && !g_force_portable.load(std::memory_order_relaxed); }
void set_force_portable(bool on) noexcept { g_force_portable.store(on, std::memory_order_relaxed); }

// ---- f32 rows -----------------------------------------------------------------------------------

void load_row(const std::byte* src, DType dt, i64 stride, i64 n, float* dst) {
  if (stride == 1 && use_avx512()) {
    if (dt == DType::BF16) return avx512::bf16_to_f32(reinterpret_cast<const std::uint16_t*>(src), dst, n);
    if (dt == DType::F16) return avx512::f16_to_f32(reinterpret_cast<const std::uint16_t*>(src), dst, n);
  }
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* p = reinterpret_cast<const T*>(src);
    for (i64 i = 0; i < n; ++i) dst[i] = to_f32(p[i * stride]);
  });
}

void store_row(const float* src, i64 n, std::byte* dst, DType dt, i64 stride) {
  if (stride == 1 && use_avx512()) {
    if (dt == DType::BF16) return avx512::f32_to_bf16(src, reinterpret_cast<std::uint16_t*>(dst), n);
    if (dt == DType::F16) return avx512::f32_to_f16(src, reinterpret_cast<std::uint16_t*>(dst), n);
  }
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    T* p = reinterpret_cast<T*>(dst);
    for (i64 i = 0; i < n; ++i) p[i * stride] = from_f32<T>(src[i]);
  });
}

// ---- scalar math (portable fallback; double inside so it meets the same accuracy) --------------

namespace {

float act_scalar(float xf, Activation act) {
  const double x = xf;
  switch (act) {
    case Activation::none: return xf;
    case Activation::gelu: return static_cast<float>(0.5 * x * std::erfc(-x * 0.70710678118654752440));
    case Activation::gelu_tanh: {  // x * sigmoid(2u): no cancellation for negative x
      const double two_u = 1.5957691216057307117 * (x + 0.044715 * x * x * x);
      return static_cast<float>(x / (1.0 + std::exp(-two_u)));
    }
    case Activation::relu: return xf < 0.0f ? 0.0f : xf;  // NaN stays NaN
    case Activation::silu: return static_cast<float>(x / (1.0 + std::exp(-x)));
    case Activation::sigmoid: return static_cast<float>(1.0 / (1.0 + std::exp(-x)));
    case Activation::tanh: return std::tanh(xf);
  }
  return xf;
}

float sigmoid_scalar(float x) { return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x)))); }

inline float binary_scalar(float a, float b, BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return a;
}

}  // namespace

void activation_row(const float* x, float* y, i64 n, Activation act) {
  if (use_avx512()) return avx512::activation(x, y, n, act);
  for (i64 i = 0; i < n; ++i) y[i] = act_scalar(x[i], act);
}

void binary_row(const float* a, i64 sa, const float* b, i64 sb, float* y, i64 n, BinaryOp op) {
  if (use_avx512() && sa <= 1 && sb <= 1) return avx512::binary(a, sa, b, sb, y, n, op);
  for (i64 i = 0; i < n; ++i) y[i] = binary_scalar(a[i * sa], b[i * sb], op);
}

namespace {

void scale_row(const float* x, float* y, i64 n, float s, float shift) {
  if (use_avx512()) return avx512::scale(x, y, n, s, shift);
  for (i64 i = 0; i < n; ++i) y[i] = x[i] * s + shift;
}

void glu_row(const float* a, const float* b, float* y, i64 n, GluKind kind) {
  if (use_avx512()) return avx512::glu(a, b, y, n, kind);
  for (i64 i = 0; i < n; ++i)
    y[i] = kind == GluKind::glu ? a[i] * sigmoid_scalar(b[i]) : a[i] * sigmoid_scalar(a[i]) * b[i];
}

inline bool is16(DType t) { return t == DType::BF16 || t == DType::F16; }
using u16 = std::uint16_t;

/// Runs a unary f32 row function over x -> y (same shape, any strides, floating dtypes).
/// row16(x, y, n, is_bf16) handles unit-stride bf16->bf16 / f16->f16 runs in registers when the
/// AVX-512 kernels are usable.
template <typename RowFn, typename Row16Fn>
void unary_map(const Tensor& x, const Tensor& y, const CpuContext& ctx, RowFn&& row, Row16Fn&& row16) {
  const Walk<2> w(x.shape(), {x.strides().begin(), y.strides().begin()});
  const std::byte* xb = bytes_of(x);
  std::byte* yb = bytes_of(y);
  const DType xt = x.dtype(), yt = y.dtype();
  const i64 xs = static_cast<i64>(dtype_size(xt)), ys = static_cast<i64>(dtype_size(yt));
  const i64 sx = w.inner_stride(0), sy = w.inner_stride(1);
  parallel_segments(w, ctx, [&](const std::array<i64, 2>& off, i64 len) {
    const std::byte* xp = xb + off[0] * xs;
    std::byte* yp = yb + off[1] * ys;
    if (xt == DType::F32 && yt == DType::F32 && sx == 1 && sy == 1)
      return row(reinterpret_cast<const float*>(xp), reinterpret_cast<float*>(yp), len);
    if (xt == yt && is16(xt) && sx == 1 && sy == 1 && use_avx512())
      return row16(reinterpret_cast<const u16*>(xp), reinterpret_cast<u16*>(yp), len, xt == DType::BF16);
    float in[kChunk], out[kChunk];
    for (i64 i = 0; i < len; i += kChunk) {
      const i64 m = std::min(kChunk, len - i);
      const float* src = row_f32(xp + i * sx * xs, xt, sx, m, in);
      row(src, out, m);
      store_row(out, m, yp + i * sy * ys, yt, sy);
    }
  });
}

/// NumPy broadcast strides of `t` against the output shape `out` (0 on broadcast dims).
std::array<i64, kMaxDims> broadcast_strides(const Tensor& t, const Shape& out) {
  std::array<i64, kMaxDims> s{};
  const int shift = out.rank() - t.rank();
  for (int d = 0; d < out.rank(); ++d) {
    const int td = d - shift;
    s[d] = (td < 0 || t.shape()[td] == 1) ? 0 : t.strides()[td];
  }
  return s;
}

Shape broadcast_shape(const char* op, const Shape& a, const Shape& b) {
  const int r = std::max(a.rank(), b.rank());
  Shape out;
  for (int d = 0; d < r; ++d) {
    const int da = d - (r - a.rank()), db = d - (r - b.rank());
    const i64 ea = da < 0 ? 1 : a[da], eb = db < 0 ? 1 : b[db];
    ENCORE_CHECK(ea == eb || ea == 1 || eb == 1, invalid_argument,
                 "{}: shapes {} and {} do not broadcast (dim {}: {} vs {})", op, a.str(), b.str(), d, ea, eb);
    out.push_back(ea == 1 ? eb : ea);
  }
  return out;
}

template <typename T>
void binary_int(const Tensor& a, const Tensor& b, BinaryOp op, const Tensor& y, const Walk<3>& w,
                const CpuContext& ctx) {
  using U = std::make_unsigned_t<T>;  // wrap-around instead of signed-overflow UB
  const T* pa = static_cast<const T*>(a.data());
  const T* pb = static_cast<const T*>(b.data());
  T* py = static_cast<T*>(y.data());
  const i64 sa = w.inner_stride(0), sb = w.inner_stride(1), sy = w.inner_stride(2);
  parallel_segments(w, ctx, [&](const std::array<i64, 3>& off, i64 len) {
    for (i64 i = 0; i < len; ++i) {
      const U u = static_cast<U>(pa[off[0] + i * sa]), v = static_cast<U>(pb[off[1] + i * sb]);
      const U r = op == BinaryOp::add ? U(u + v) : op == BinaryOp::sub ? U(u - v) : U(u * v);
      py[off[2] + i * sy] = static_cast<T>(r);
    }
  });
}

}  // namespace
}  // namespace ewk

using namespace ewk;

void activation(const Tensor& x, Activation act, const Tensor& y, const CpuContext& ctx) {
  check_float("activation", "x", x);
  check_float("activation", "y", y);
  check_shape("activation", "y", y, x.shape());
  unary_map(
      x, y, ctx, [act](const float* in, float* out, i64 n) { activation_row(in, out, n, act); },
      [act](const u16* in, u16* out, i64 n, bool bf16) { avx512::activation16(in, out, n, act, bf16); });
}

void scale(const Tensor& x, const ScaleAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_float("scale", "x", x);
  check_float("scale", "y", y);
  check_shape("scale", "y", y, x.shape());
  const float s = attrs.scale, b = attrs.shift;
  unary_map(
      x, y, ctx, [s, b](const float* in, float* out, i64 n) { scale_row(in, out, n, s, b); },
      [s, b](const u16* in, u16* out, i64 n, bool bf16) { avx512::scale16(in, out, n, s, b, bf16); });
}

void binary(const Tensor& a, const Tensor& b, BinaryOp op, const Tensor& y, const CpuContext& ctx) {
  check_defined("binary", "a", a);
  check_defined("binary", "b", b);
  check_defined("binary", "y", y);
  check_shape("binary", "y", y, broadcast_shape("binary", a.shape(), b.shape()));
  const std::array<i64, kMaxDims> sa = broadcast_strides(a, y.shape()), sb = broadcast_strides(b, y.shape());
  const Walk<3> w(y.shape(), {sa.data(), sb.data(), y.strides().begin()});
  if (!is_floating(a.dtype()) || !is_floating(b.dtype()) || !is_floating(y.dtype())) {
    const bool same = a.dtype() == b.dtype() && a.dtype() == y.dtype();
    ENCORE_CHECK(same && (y.dtype() == DType::I32 || y.dtype() == DType::I64) && op != BinaryOp::div, unsupported,
                 "binary: dtypes {}, {} -> {} are not supported (floating dtypes, or i32/i64 add/sub/mul)",
                 dtype_name(a.dtype()), dtype_name(b.dtype()), dtype_name(y.dtype()));
    if (y.dtype() == DType::I32) return binary_int<std::int32_t>(a, b, op, y, w, ctx);
    return binary_int<std::int64_t>(a, b, op, y, w, ctx);
  }
  const std::byte *ab = bytes_of(a), *bb = bytes_of(b);
  std::byte* yb = bytes_of(y);
  const DType at = a.dtype(), bt = b.dtype(), yt = y.dtype();
  const i64 as = static_cast<i64>(dtype_size(at)), bs = static_cast<i64>(dtype_size(bt)),
            ys = static_cast<i64>(dtype_size(yt));
  const i64 ia = w.inner_stride(0), ib = w.inner_stride(1), iy = w.inner_stride(2);
  parallel_segments(w, ctx, [&](const std::array<i64, 3>& off, i64 len) {
    const std::byte* ap = ab + off[0] * as;
    const std::byte* bp = bb + off[1] * bs;
    std::byte* yp = yb + off[2] * ys;
    const i64 ua = len == 1 ? 0 : ia, ub = len == 1 ? 0 : ib;
    if (at == DType::F32 && bt == DType::F32 && yt == DType::F32 && ua <= 1 && ub <= 1 && (iy == 1 || len == 1))
      return binary_row(reinterpret_cast<const float*>(ap), ua, reinterpret_cast<const float*>(bp), ub,
                        reinterpret_cast<float*>(yp), len, op);
    if (at == bt && at == yt && is16(yt) && ua <= 1 && ub <= 1 && (iy == 1 || len == 1) && use_avx512())
      return avx512::binary16(reinterpret_cast<const u16*>(ap), ua, reinterpret_cast<const u16*>(bp), ub,
                              reinterpret_cast<u16*>(yp), len, op, yt == DType::BF16);
    // Stage through f32: a stride-0 operand is loaded once as a scalar.
    float abuf[kChunk], bbuf[kChunk], out[kChunk];
    for (i64 i = 0; i < len; i += kChunk) {
      const i64 m = std::min(kChunk, len - i);
      const float* pa = ua == 0 ? row_f32(ap, at, 1, 1, abuf) : row_f32(ap + i * ua * as, at, ua, m, abuf);
      const float* pb = ub == 0 ? row_f32(bp, bt, 1, 1, bbuf) : row_f32(bp + i * ub * bs, bt, ub, m, bbuf);
      binary_row(pa, ua == 0 ? 0 : 1, pb, ub == 0 ? 0 : 1, out, m, op);
      store_row(out, m, yp + i * iy * ys, yt, iy);
    }
  });
}

void glu(const Tensor& x, const GluAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_float("glu", "x", x);
  check_float("glu", "y", y);
  const int axis = normalize_axis(attrs.axis, x.rank(), "glu axis");
  const i64 two_h = x.shape()[axis];
  ENCORE_CHECK(two_h % 2 == 0, invalid_argument, "glu: dimension {} of x {} has odd extent {}", axis, x.shape().str(),
               two_h);
  Shape expected = x.shape();
  expected[axis] = two_h / 2;
  check_shape("glu", "y", y, expected);
  if (y.numel() == 0) return;
  const Tensor a = x.slice(axis, 0, two_h / 2), b = x.slice(axis, two_h / 2, two_h);
  const Walk<3> w(y.shape(), {a.strides().begin(), b.strides().begin(), y.strides().begin()});
  const std::byte *ab = bytes_of(a), *bb = bytes_of(b);
  std::byte* yb = bytes_of(y);
  const DType xt = x.dtype(), yt = y.dtype();
  const i64 xs = static_cast<i64>(dtype_size(xt)), ys = static_cast<i64>(dtype_size(yt));
  const i64 ia = w.inner_stride(0), ib = w.inner_stride(1), iy = w.inner_stride(2);
  const GluKind kind = attrs.kind;
  parallel_segments(w, ctx, [&](const std::array<i64, 3>& off, i64 len) {
    const std::byte* ap = ab + off[0] * xs;
    const std::byte* bp = bb + off[1] * xs;
    std::byte* yp = yb + off[2] * ys;
    if (xt == DType::F32 && yt == DType::F32 && ia == 1 && ib == 1 && iy == 1)
      return glu_row(reinterpret_cast<const float*>(ap), reinterpret_cast<const float*>(bp),
                     reinterpret_cast<float*>(yp), len, kind);
    float abuf[kChunk], bbuf[kChunk], out[kChunk];
    for (i64 i = 0; i < len; i += kChunk) {
      const i64 m = std::min(kChunk, len - i);
      glu_row(row_f32(ap + i * ia * xs, xt, ia, m, abuf), row_f32(bp + i * ib * xs, xt, ib, m, bbuf), out, m,
              kind);
      store_row(out, m, yp + i * iy * ys, yt, iy);
    }
  });
}

// ---- cast ---------------------------------------------------------------------------------------

namespace {

template <typename D>
D int_to(std::int64_t v) {
  if constexpr (std::is_same_v<D, bool>) {
    return v != 0;
  } else if constexpr (std::is_integral_v<D>) {
    if (v < static_cast<std::int64_t>(std::numeric_limits<D>::min())) return std::numeric_limits<D>::min();
    if (v > static_cast<std::int64_t>(std::numeric_limits<D>::max())) return std::numeric_limits<D>::max();
    return static_cast<D>(v);
  } else {
    return from_f32<D>(static_cast<float>(v));
  }
}

template <typename D>
D float_to(float f) {
  if constexpr (std::is_same_v<D, bool>) {
    return f != 0.0f;  // NaN is true, like (v != 0)
  } else if constexpr (std::is_integral_v<D>) {  // truncate toward zero, saturate, NaN -> 0
    const double v = f;
    if (std::isnan(v)) return 0;
    if (v <= static_cast<double>(std::numeric_limits<D>::min())) return std::numeric_limits<D>::min();
    if (v >= static_cast<double>(std::numeric_limits<D>::max())) return std::numeric_limits<D>::max();
    return static_cast<D>(v);
  } else {
    return from_f32<D>(f);
  }
}

template <typename S, typename D>
D convert(S s) {
  if constexpr (std::is_same_v<S, D>) return s;
  else if constexpr (std::is_same_v<S, float> || std::is_same_v<S, Half> || std::is_same_v<S, BFloat16>)
    return float_to<D>(to_f32(s));
  else return int_to<D>(static_cast<std::int64_t>(s));
}

}  // namespace

void cast(const Tensor& x, const Tensor& y, const CpuContext& ctx) {
  check_defined("cast", "x", x);
  check_defined("cast", "y", y);
  check_shape("cast", "y", y, x.shape());
  if (y.numel() == 0) return;
  const DType xt = x.dtype(), yt = y.dtype();
  const Walk<2> w(x.shape(), {x.strides().begin(), y.strides().begin()});
  const i64 sx = w.inner_stride(0), sy = w.inner_stride(1);
  const std::byte* xb = bytes_of(x);
  std::byte* yb = bytes_of(y);
  const i64 xs = static_cast<i64>(dtype_size(xt)), ys = static_cast<i64>(dtype_size(yt));
  if (is_floating(xt) && is_floating(yt) && sx == 1 && sy == 1) {  // vector conversions through f32
    parallel_segments(w, ctx, [&](const std::array<i64, 2>& off, i64 len) {
      float buf[kChunk];
      for (i64 i = 0; i < len; i += kChunk) {
        const i64 m = std::min(kChunk, len - i);
        const float* f = row_f32(xb + (off[0] + i) * xs, xt, 1, m, buf);
        store_row(f, m, yb + (off[1] + i) * ys, yt, 1);
      }
    });
    return;
  }
  visit_dtype(xt, [&](auto stag) {
    using S = decltype(stag);
    visit_dtype(yt, [&](auto dtag) {
      using D = decltype(dtag);
      const S* xp = reinterpret_cast<const S*>(xb);
      D* yp = reinterpret_cast<D*>(yb);
      parallel_segments(w, ctx, [&](const std::array<i64, 2>& off, i64 len) {
        for (i64 i = 0; i < len; ++i) yp[off[1] + i * sy] = convert<S, D>(xp[off[0] + i * sx]);
      });
    });
  });
}

}  // namespace encore::cpu
