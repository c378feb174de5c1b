// Shared plumbing of the elementwise / norm / data / reduce / resize CPU kernels (namespace ewk):
// strided multi-operand iteration, f32 row loads and stores for f32/bf16/f16, threading policy
// and dtype checks. Internal to kernels/cpu; no intrinsics here (see simd_avx512.h).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include <omp.h>

#include "kernels/cpu/omp_guard.h"
#include "backends/cpu/kernels.h"
#include "core/check.h"
#include "kernels/cpu/cpu_features.h"

namespace encore::cpu::ewk {

using i64 = std::int64_t;

/// Below this many elements of work one thread beats the fork/join cost of OpenMP.
inline constexpr i64 kParallelMin = 32768;
/// Elements per f32 staging buffer when a kernel converts through f32 (fits L1 with 3 operands).
inline constexpr i64 kChunk = 1024;

inline int threads_for(i64 work, const CpuContext& ctx) {
  return work > kParallelMin ? std::max(1, ctx.num_threads) : 1;
}

inline std::byte* bytes_of(const Tensor& t) { return static_cast<std::byte*>(t.data()); }

/// True when the AVX-512 paths may run: the CPU has them and the test hook below is off.
bool use_avx512() noexcept;
/// Test hook: forces the portable paths of this kernel family (elementwise, norm, softmax, ...).
void set_force_portable(bool on) noexcept;

// ---- scalar conversions ----------------------------------------------------------------------
inline float to_f32(float v) { return v; }
inline float to_f32(BFloat16 v) { return bfloat16_to_float(v); }
inline float to_f32(Half v) { return half_to_float(v); }
template <typename T> inline T from_f32(float v);
template <> inline float from_f32<float>(float v) { return v; }
template <> inline BFloat16 from_f32<BFloat16>(float v) { return float_to_bfloat16(v); }
template <> inline Half from_f32<Half>(float v) { return float_to_half(v); }

/// Calls fn(T{}) with T the storage type of `t`.
template <typename Fn>
decltype(auto) visit_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(float{});
    case DType::F16: return fn(Half{});
    case DType::BF16: return fn(BFloat16{});
    case DType::I8: return fn(std::int8_t{});
    case DType::U8: return fn(std::uint8_t{});
    case DType::I32: return fn(std::int32_t{});
    case DType::I64: return fn(std::int64_t{});
    case DType::Bool: return fn(bool{});
  }
  return fn(float{});
}

/// Calls fn(T{}) for the floating storage types only (callers check the dtype first).
template <typename Fn>
decltype(auto) visit_float(DType t, Fn&& fn) {
  switch (t) {
    case DType::F16: return fn(Half{});
    case DType::BF16: return fn(BFloat16{});
    default: return fn(float{});
  }
}

// ---- checks ----------------------------------------------------------------------------------
inline void check_defined(const char* op, const char* what, const Tensor& t) {
  ENCORE_CHECK(t.defined(), invalid_argument, "{}: {} is undefined", op, what);
  ENCORE_CHECK(t.device().is_cpu(), invalid_argument, "{}: {} is on {}, expected the CPU", op, what,
               t.device().str());
}
/// f32/bf16/f16 or Error(unsupported) naming the op and the dtype.
inline void check_float(const char* op, const char* what, const Tensor& t) {
  check_defined(op, what, t);
  ENCORE_CHECK(is_floating(t.dtype()), unsupported, "{}: {} has dtype {}; supported: f32, bf16, f16", op,
               what, dtype_name(t.dtype()));
}
inline void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  ENCORE_CHECK(t.shape() == expected, invalid_argument, "{}: {} has shape {}, expected {}", op, what,
               t.shape().str(), expected.str());
}
/// 1-D i32/i64 index tensor.
inline void check_index(const char* op, const char* what, const Tensor& t) {
  check_defined(op, what, t);
  ENCORE_CHECK(t.dtype() == DType::I32 || t.dtype() == DType::I64, unsupported,
               "{}: {} has dtype {}; expected i32 or i64", op, what, dtype_name(t.dtype()));
}
/// Reads element `i` (stride in elements) of an i32/i64 tensor.
inline i64 load_index(const std::byte* p, DType t, i64 elem) {
  if (t == DType::I32) {
    std::int32_t v;
    std::memcpy(&v, p + elem * 4, 4);
    return v;
  }
  i64 v;
  std::memcpy(&v, p + elem * 8, 8);
  return v;
}

// ---- f32 rows ---------------------------------------------------------------------------------
// Implemented in elementwise.cpp; dispatch to AVX-512 for contiguous 16-bit rows.
/// dst[i] = float(src[i * stride]) for a floating dtype.
void load_row(const std::byte* src, DType dt, i64 stride, i64 n, float* dst);
/// dst[i * stride] = round(src[i]) for a floating dtype.
void store_row(const float* src, i64 n, std::byte* dst, DType dt, i64 stride);
/// `src` itself when it already is a contiguous f32 row, else `buf` after load_row.
inline const float* row_f32(const std::byte* src, DType dt, i64 stride, i64 n, float* buf) {
  if (dt == DType::F32 && (stride == 1 || n == 1)) return reinterpret_cast<const float*>(src);
  load_row(src, dt, stride, n, buf);
  return buf;
}

// ---- shared f32 row math (elementwise.cpp; AVX-512 when available) ------------------------------
/// y = act(x); y may equal x.
void activation_row(const float* x, float* y, i64 n, Activation act);
/// y[i] = a[i*sa] op b[i*sb] with sa, sb in {0, 1} (0: broadcast a single value); y may equal a or b.
void binary_row(const float* a, i64 sa, const float* b, i64 sb, float* y, i64 n, BinaryOp op);

// ---- shared f32 row statistics (norm.cpp; AVX-512 when available) -------------------------------
/// sum(x - shift)
float row_sum_dev(const float* x, i64 n, float shift);
/// The mean as x[0] + mean(x - x[0]): exact for constant rows, and no loss when |mean| >> std.
float row_mean(const float* x, i64 n);
/// sum((x - mean)^2)
float row_sum_sq_dev(const float* x, i64 n, float mean);
float row_sum_sq(const float* x, i64 n);
/// y = (x - mean) * rstd [* g] [+ b]; g, b may be null. y may equal x.
void row_normalize(const float* x, float* y, i64 n, float mean, float rstd, const float* g, const float* b);
float row_max(const float* x, i64 n);
/// y = exp(x - shift), returns sum(y). y may equal x.
float row_exp_shift_sum(const float* x, float* y, i64 n, float shift);
void row_mul_scalar(const float* x, float* y, i64 n, float s);
void row_sub_scalar(const float* x, float* y, i64 n, float s);

// ---- strided iteration ------------------------------------------------------------------------
/// N operands walked together over one shape. Extent-1 dims are dropped and adjacent dims merged
/// when every operand allows it, so contiguous tensors become one long row. Offsets are elements.
template <int N>
struct Walk {
  int rank = 1;
  std::array<i64, kMaxDims> shape{};
  std::array<std::array<i64, kMaxDims>, N> st{};
  i64 numel = 1;

  Walk(const Shape& s, const std::array<const i64*, N>& strides) {
    numel = s.numel();
    int r = 0;
    for (int d = 0; d < s.rank(); ++d) {
      if (s[d] == 1) continue;
      if (r > 0) {
        bool merge = true;
        for (int k = 0; k < N; ++k) merge = merge && st[k][r - 1] == strides[k][d] * s[d];
        if (merge) {
          shape[r - 1] *= s[d];
          for (int k = 0; k < N; ++k) st[k][r - 1] = strides[k][d];
          continue;
        }
      }
      shape[r] = s[d];
      for (int k = 0; k < N; ++k) st[k][r] = strides[k][d];
      ++r;
    }
    if (r == 0) {  // a single element: call it a contiguous row of one
      shape[0] = numel == 0 ? 0 : 1;
      for (int k = 0; k < N; ++k) st[k][0] = 1;
      r = 1;
    }
    rank = r;
  }

  i64 inner() const { return shape[rank - 1]; }
  i64 inner_stride(int k) const { return st[k][rank - 1]; }

  /// Calls fn(off, len) for the runs of elements [begin, end) of the row-major enumeration; off[k]
  /// is operand k's offset of the run's first element, its stride is inner_stride(k).
  template <typename Fn>
  void segments(i64 begin, i64 end, Fn&& fn) const {
    if (begin >= end) return;
    const i64 in = inner();
    std::array<i64, kMaxDims> idx{};
    std::array<i64, N> off{};
    i64 rem = begin / in;
    i64 col = begin % in;
    for (int d = rank - 2; d >= 0; --d) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
      for (int k = 0; k < N; ++k) off[k] += idx[d] * st[k][d];
    }
    i64 pos = begin;
    while (true) {
      const i64 len = std::min(in - col, end - pos);
      std::array<i64, N> o = off;
      for (int k = 0; k < N; ++k) o[k] += col * st[k][rank - 1];
      fn(o, len);
      pos += len;
      if (pos >= end) return;
      col = 0;
      for (int d = rank - 2; d >= 0; --d) {  // next row, with carries
        if (++idx[d] < shape[d]) {
          for (int k = 0; k < N; ++k) off[k] += st[k][d];
          break;
        }
        for (int k = 0; k < N; ++k) off[k] -= (shape[d] - 1) * st[k][d];
        idx[d] = 0;
      }
    }
  }

  /// Calls fn(off) for every element in [begin, end).
  template <typename Fn>
  void elements(i64 begin, i64 end, Fn&& fn) const {
    segments(begin, end, [&](const std::array<i64, N>& o, i64 len) {
      std::array<i64, N> p = o;
      for (i64 i = 0; i < len; ++i) {
        fn(p);
        for (int k = 0; k < N; ++k) p[k] += st[k][rank - 1];
      }
    });
  }
};

/// Runs w.segments over all elements, split into tasks across threads when large.
template <int N, typename Fn>
void parallel_segments(const Walk<N>& w, const CpuContext& ctx, Fn&& fn) {
  const i64 total = w.numel;
  if (total <= 0) return;
  const int nt = threads_for(total, ctx);
  if (nt <= 1) {
    w.segments(0, total, fn);
    return;
  }
  // Multiples of 64 elements keep task starts vector-aligned within contiguous rows.
  const i64 task = std::max<i64>(8192, (total / (nt * 4) + 63) / 64 * 64);
  const i64 ntasks = (total + task - 1) / task;
  RegionGuard guard;  // an exception (a scratch buffer's bad_alloc) is rethrown after the region
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 t = 0; t < ntasks; ++t) guard.run([&] { w.segments(t * task, std::min(total, (t + 1) * task), fn); });
  guard.rethrow();
}

/// Runs w.elements over all elements, in per-thread blocks when numel * work_per_element is large.
template <int N, typename Fn>
void parallel_elements(const Walk<N>& w, i64 work_per_element, const CpuContext& ctx, Fn&& fn) {
  const i64 total = w.numel;
  if (total <= 0) return;
  const int nt = static_cast<int>(std::min<i64>(threads_for(total * std::max<i64>(1, work_per_element), ctx), total));
  if (nt <= 1) {
    w.elements(0, total, fn);
    return;
  }
  const i64 ntasks = std::min<i64>(total, static_cast<i64>(nt) * 8);
  RegionGuard guard;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 t = 0; t < ntasks; ++t) guard.run([&] { w.elements(total * t / ntasks, total * (t + 1) / ntasks, fn); });
  guard.rethrow();
}

/// Splits rows [0, rows) into one contiguous block per thread: fn(r0, r1) runs once per thread, so
/// it can allocate its scratch buffers once.
template <typename Fn>
void parallel_rows(i64 rows, i64 work_per_row, const CpuContext& ctx, Fn&& fn) {
  if (rows <= 0) return;
  const int nt = static_cast<int>(std::min<i64>(threads_for(rows * std::max<i64>(1, work_per_row), ctx), rows));
  if (nt <= 1) {
    fn(i64{0}, rows);
    return;
  }
  RegionGuard guard;  // fn's scratch allocations may throw: rethrown after the region
#pragma omp parallel num_threads(nt)
  {
    const i64 t = omp_get_thread_num(), n = omp_get_num_threads();
    guard.run([&] { fn(rows * t / n, rows * (t + 1) / n); });
  }
  guard.rethrow();
}

/// The rows of N same-shaped tensors along `axis`: row r of operand k starts at ptr(k) and has
/// `len` elements `step[k]` apart. Rows are enumerated in row-major order of the other dims.
template <int N>
struct Rows {
  i64 count = 0, len = 0;
  std::array<std::byte*, N> base{};
  std::array<i64, N> esize{}, step{};
  Walk<N> walk;

  Rows(const std::array<const Tensor*, N>& ts, int axis) : walk(outer_walk(ts, axis)) {
    const Tensor& t0 = *ts[0];
    len = t0.rank() == 0 ? 1 : t0.shape()[axis];
    count = len == 0 ? 0 : t0.numel() / len;
    for (int k = 0; k < N; ++k) {
      base[k] = count == 0 ? nullptr : bytes_of(*ts[k]);
      esize[k] = static_cast<i64>(dtype_size(ts[k]->dtype()));
      step[k] = (ts[k]->rank() == 0 || len == 1) ? 1 : ts[k]->strides()[axis];
    }
  }

  /// fn(ptrs) for rows [r0, r1), ptrs[k] = start of operand k's row.
  template <typename Fn>
  void visit(i64 r0, i64 r1, Fn&& fn) const {
    walk.elements(r0, r1, [&](const std::array<i64, N>& off) {
      std::array<std::byte*, N> p;
      for (int k = 0; k < N; ++k) p[k] = base[k] + off[k] * esize[k];
      fn(p);
    });
  }

 private:
  static Walk<N> outer_walk(const std::array<const Tensor*, N>& ts, int axis) {
    Shape outer;
    std::array<Shape, N> st;
    for (int d = 0; d < ts[0]->rank(); ++d) {
      if (d == axis) continue;
      outer.push_back(ts[0]->shape()[d]);
      for (int k = 0; k < N; ++k) st[k].push_back(ts[k]->strides()[d]);
    }
    std::array<const i64*, N> p;
    for (int k = 0; k < N; ++k) p[k] = st[k].begin();
    return Walk<N>(outer, p);
  }
};

/// A tensor's shape and strides with dimension `axis` removed (the "outer" positions of a
/// reduction/row op along `axis`).
struct Without {
  Shape shape, strides;
  Without(const Tensor& t, int axis) {
    for (int d = 0; d < t.rank(); ++d) {
      if (d == axis) continue;
      shape.push_back(t.shape()[d]);
      strides.push_back(t.strides()[d]);
    }
  }
};

}  // namespace encore::cpu::ewk
