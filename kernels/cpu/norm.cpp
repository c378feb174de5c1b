// Normalisation kernels: layer_norm (standard and CASS-NAT's unbiased-std flavour), the fused
// add_layer_norm, rms_norm, group_norm and l2_normalize; plus the f32 row statistics they and
// softmax share (AVX-512 with a portable fallback).
//
// Each row is brought to f32 once (a pointer into x when it already is a contiguous f32 row),
// statistics are two-pass (mean, then squared deviations: no E[x^2] - mean^2 cancellation), and
// the result is rounded once on the store.
#include <cmath>
#include <vector>

#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/simd_common.h"

namespace encore::cpu {
namespace ewk {

// ---- row statistics -----------------------------------------------------------------------------
// The scalar fallbacks accumulate in double: simple and at least as accurate as the vector code.

float row_sum_dev(const float* x, i64 n, float shift) {
  if (use_avx512()) return avx512::sum_dev(x, n, shift);
  double s = 0;
  for (i64 i = 0; i < n; ++i) s += static_cast<double>(x[i]) - shift;
  return static_cast<float>(s);
}

float row_mean(const float* x, i64 n) {
  if (n <= 0) return 0.0f;
  return x[0] + row_sum_dev(x, n, x[0]) / static_cast<float>(n);
}

float row_sum_sq_dev(const float* x, i64 n, float mean) {
  if (use_avx512()) return avx512::sum_sq_dev(x, n, mean);
  double s = 0;
  for (i64 i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    s += d * d;
  }
  return static_cast<float>(s);
}

float row_sum_sq(const float* x, i64 n) {
  if (use_avx512()) return avx512::sum_sq(x, n);
  double s = 0;
  for (i64 i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(s);
}

void row_normalize(const float* x, float* y, i64 n, float mean, float rstd, const float* g, const float* b) {
  if (use_avx512()) return avx512::normalize(x, y, n, mean, rstd, g, b);
  for (i64 i = 0; i < n; ++i) {
    float v = (x[i] - mean) * rstd;
    if (g) v *= g[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

float row_max(const float* x, i64 n) {
  if (use_avx512()) return avx512::max(x, n);
  float m = -std::numeric_limits<float>::infinity();
  for (i64 i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

float row_exp_shift_sum(const float* x, float* y, i64 n, float shift) {
  if (use_avx512()) return avx512::exp_shift_sum(x, y, n, shift);
  double s = 0;
  for (i64 i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - shift);
    s += y[i];
  }
  return static_cast<float>(s);
}

void row_mul_scalar(const float* x, float* y, i64 n, float s) {
  if (use_avx512()) return avx512::mul_scalar(x, y, n, s);
  for (i64 i = 0; i < n; ++i) y[i] = x[i] * s;
}

void row_sub_scalar(const float* x, float* y, i64 n, float s) {
  if (use_avx512()) return avx512::sub_scalar(x, y, n, s);
  for (i64 i = 0; i < n; ++i) y[i] = x[i] - s;
}

namespace {

void row_add(const float* a, const float* b, float* s, i64 n) {
  if (use_avx512()) return avx512::add(a, b, s, n);
  for (i64 i = 0; i < n; ++i) s[i] = a[i] + b[i];
}

/// A [C] affine parameter as f32 (any floating dtype, any stride); empty when undefined.
std::vector<float> param_f32(const char* op, const char* what, const Tensor& p, i64 c) {
  if (!p.defined()) return {};
  check_float(op, what, p);
  ENCORE_CHECK(p.rank() == 1 && p.shape()[0] == c, invalid_argument, "{}: {} has shape {}, expected [{}]", op, what,
               p.shape().str(), c);
  std::vector<float> v(static_cast<std::size_t>(c));
  if (c > 0) load_row(bytes_of(p), p.dtype(), p.strides()[0], c, v.data());
  return v;
}

const float* ptr_or_null(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

/// Normalises one f32 row (x may equal y).
void layer_norm_row(const float* x, float* y, i64 c, const LayerNormAttrs& attrs, const float* g, const float* b) {
  const float mean = row_mean(x, c);
  const double m2 = row_sum_sq_dev(x, c, mean);
  double rstd;
  if (attrs.kind == LayerNormKind::standard)
    rstd = 1.0 / std::sqrt(m2 / static_cast<double>(c) + attrs.eps);
  else  // CASS-NAT: (x - mean) / (std_unbiased + eps); one element gives NaN like torch.std
    rstd = 1.0 / (std::sqrt(m2 / static_cast<double>(c - 1)) + attrs.eps);
  row_normalize(x, y, c, mean, static_cast<float>(rstd), g, b);
}

/// A destination row: the tensor memory itself when it is a contiguous f32 row, else `buf`
/// (flushed with store_row by the caller).
inline float* out_row(std::byte* p, DType dt, i64 step, float* buf) {
  return dt == DType::F32 && step == 1 ? reinterpret_cast<float*>(p) : buf;
}

inline void flush_row(const float* r, const float* buf, i64 n, std::byte* p, DType dt, i64 step) {
  if (r == buf) store_row(buf, n, p, dt, step);
}

}  // namespace
}  // namespace ewk

using namespace ewk;

void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const LayerNormAttrs& attrs, const Tensor& y,
                const CpuContext& ctx) {
  check_float("layer_norm", "x", x);
  check_float("layer_norm", "y", y);
  check_shape("layer_norm", "y", y, x.shape());
  ENCORE_CHECK(x.rank() >= 1, invalid_argument, "layer_norm: x must have at least one dimension");
  const i64 c = x.shape()[x.rank() - 1];
  const std::vector<float> g = param_f32("layer_norm", "gamma", gamma, c), b = param_f32("layer_norm", "beta", beta, c);
  if (x.numel() == 0) return;
  const Rows<2> rows({&x, &y}, x.rank() - 1);
  const DType xt = x.dtype(), yt = y.dtype();
  parallel_rows(rows.count, c * 4, ctx, [&](i64 r0, i64 r1) {
    std::vector<float> in(static_cast<std::size_t>(c)), out(static_cast<std::size_t>(c));
    rows.visit(r0, r1, [&](const std::array<std::byte*, 2>& p) {
      const float* xr = row_f32(p[0], xt, rows.step[0], c, in.data());
      float* yr = out_row(p[1], yt, rows.step[1], out.data());
      layer_norm_row(xr, yr, c, attrs, ptr_or_null(g), ptr_or_null(b));
      flush_row(yr, out.data(), c, p[1], yt, rows.step[1]);
    });
  });
}

void add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                    const LayerNormAttrs& attrs, const Tensor& sum, const Tensor& y, const CpuContext& ctx) {
  const char* op = "add_layer_norm";
  check_float(op, "x", x);
  check_float(op, "residual", residual);
  check_float(op, "sum", sum);
  check_float(op, "y", y);
  check_shape(op, "residual", residual, x.shape());
  check_shape(op, "sum", sum, x.shape());
  check_shape(op, "y", y, x.shape());
  ENCORE_CHECK(x.rank() >= 1, invalid_argument, "add_layer_norm: x must have at least one dimension");
  const i64 c = x.shape()[x.rank() - 1];
  const std::vector<float> g = param_f32(op, "gamma", gamma, c), b = param_f32(op, "beta", beta, c);
  if (x.numel() == 0) return;
  const Rows<4> rows({&x, &residual, &sum, &y}, x.rank() - 1);
  const DType xt = x.dtype(), rt = residual.dtype(), st = sum.dtype(), yt = y.dtype();
  parallel_rows(rows.count, c * 5, ctx, [&](i64 r0, i64 r1) {
    std::vector<float> xa(static_cast<std::size_t>(c)), ra(static_cast<std::size_t>(c)),
        sa(static_cast<std::size_t>(c)), out(static_cast<std::size_t>(c));
    rows.visit(r0, r1, [&](const std::array<std::byte*, 4>& p) {
      const float* xr = row_f32(p[0], xt, rows.step[0], c, xa.data());
      const float* rr = row_f32(p[1], rt, rows.step[1], c, ra.data());
      float* sr = out_row(p[2], st, rows.step[2], sa.data());
      row_add(xr, rr, sr, c);
      if (sr == sa.data()) {
        store_row(sa.data(), c, p[2], st, rows.step[2]);
        // Normalise the rounded sum, as the unfused add + layer_norm would.
        if (st != DType::F32) load_row(p[2], st, rows.step[2], c, sa.data());
      }
      float* yr = out_row(p[3], yt, rows.step[3], out.data());
      layer_norm_row(sr, yr, c, attrs, ptr_or_null(g), ptr_or_null(b));
      flush_row(yr, out.data(), c, p[3], yt, rows.step[3]);
    });
  });
}

void rms_norm(const Tensor& x, const Tensor& gamma, const RmsNormAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_float("rms_norm", "x", x);
  check_float("rms_norm", "y", y);
  check_shape("rms_norm", "y", y, x.shape());
  ENCORE_CHECK(x.rank() >= 1, invalid_argument, "rms_norm: x must have at least one dimension");
  const i64 c = x.shape()[x.rank() - 1];
  const std::vector<float> g = param_f32("rms_norm", "gamma", gamma, c);
  if (x.numel() == 0) return;
  const Rows<2> rows({&x, &y}, x.rank() - 1);
  const DType xt = x.dtype(), yt = y.dtype();
  parallel_rows(rows.count, c * 3, ctx, [&](i64 r0, i64 r1) {
    std::vector<float> in(static_cast<std::size_t>(c)), out(static_cast<std::size_t>(c));
    rows.visit(r0, r1, [&](const std::array<std::byte*, 2>& p) {
      const float* xr = row_f32(p[0], xt, rows.step[0], c, in.data());
      float* yr = out_row(p[1], yt, rows.step[1], out.data());
      const double ms = static_cast<double>(row_sum_sq(xr, c)) / static_cast<double>(c);
      row_normalize(xr, yr, c, 0.0f, static_cast<float>(1.0 / std::sqrt(ms + attrs.eps)), ptr_or_null(g), nullptr);
      flush_row(yr, out.data(), c, p[1], yt, rows.step[1]);
    });
  });
}

void l2_normalize(const Tensor& x, const L2NormAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_float("l2_normalize", "x", x);
  check_float("l2_normalize", "y", y);
  check_shape("l2_normalize", "y", y, x.shape());
  const int axis = normalize_axis(attrs.axis, x.rank(), "l2_normalize axis");
  if (x.numel() == 0) return;
  const Rows<2> rows({&x, &y}, axis);
  const i64 c = rows.len;
  const DType xt = x.dtype(), yt = y.dtype();
  parallel_rows(rows.count, c * 3, ctx, [&](i64 r0, i64 r1) {
    std::vector<float> in(static_cast<std::size_t>(c)), out(static_cast<std::size_t>(c));
    rows.visit(r0, r1, [&](const std::array<std::byte*, 2>& p) {
      const float* xr = row_f32(p[0], xt, rows.step[0], c, in.data());
      float* yr = out_row(p[1], yt, rows.step[1], out.data());
      const double norm = std::sqrt(static_cast<double>(row_sum_sq(xr, c)));
      // eps = 0: a zero vector divides 0 by 0 (NaN), exactly like Segmenter's x / x.norm().
      const double denom = std::max(norm, static_cast<double>(attrs.eps));
      row_normalize(xr, yr, c, 0.0f, static_cast<float>(1.0 / denom), nullptr, nullptr);
      flush_row(yr, out.data(), c, p[1], yt, rows.step[1]);
    });
  });
}

void group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const GroupNormAttrs& attrs, const Tensor& y,
                const CpuContext& ctx) {
  const char* op = "group_norm";
  check_float(op, "x", x);
  check_float(op, "y", y);
  check_shape(op, "y", y, x.shape());
  ENCORE_CHECK(x.rank() >= 2, invalid_argument, "group_norm: x must be [B, C, *], got {}", x.shape().str());
  const i64 batch = x.shape()[0], ch = x.shape()[1], groups = attrs.groups;
  ENCORE_CHECK(groups >= 1 && ch % groups == 0, invalid_argument, "group_norm: {} channels do not split into {} groups",
               ch, groups);
  const std::vector<float> g = param_f32(op, "gamma", gamma, ch), b = param_f32(op, "beta", beta, ch);
  if (x.numel() == 0) return;
  const i64 spatial = x.numel() / (batch * ch), cpg = ch / groups, n = cpg * spatial;
  // [B, C, S] views: x copies only when its spatial dims cannot merge; y (contiguous) never does.
  const Tensor xv = x.reshape({batch, ch, spatial});
  const Tensor yv = y.view({batch, ch, spatial});
  const DType xt = x.dtype(), yt = y.dtype();
  const i64 xe = static_cast<i64>(dtype_size(xt)), ye = static_cast<i64>(dtype_size(yt));
  const std::byte* xb = bytes_of(xv);
  std::byte* yb = bytes_of(yv);
  parallel_rows(batch * groups, n * 4, ctx, [&](i64 t0, i64 t1) {
    std::vector<float> buf(static_cast<std::size_t>(n));
    for (i64 t = t0; t < t1; ++t) {
      const i64 bi = t / groups, c0 = (t % groups) * cpg;
      for (i64 j = 0; j < cpg; ++j)
        load_row(xb + (bi * xv.strides()[0] + (c0 + j) * xv.strides()[1]) * xe, xt, xv.strides()[2], spatial,
                 buf.data() + j * spatial);
      // Shifted by the group's first value (exact for constant groups); per-channel partial sums
      // in f32, combined in double.
      const float shift = buf[0];
      double s = 0;
      for (i64 j = 0; j < cpg; ++j) s += row_sum_dev(buf.data() + j * spatial, spatial, shift);
      const float mean = static_cast<float>(shift + s / static_cast<double>(n));
      double m2 = 0;
      for (i64 j = 0; j < cpg; ++j) m2 += row_sum_sq_dev(buf.data() + j * spatial, spatial, mean);
      const double rstd = 1.0 / std::sqrt(m2 / static_cast<double>(n) + attrs.eps);
      for (i64 j = 0; j < cpg; ++j) {
        float* r = buf.data() + j * spatial;
        const i64 c = c0 + j;
        row_normalize(r, r, spatial, mean, static_cast<float>(rstd * (g.empty() ? 1.0f : g[c])), nullptr, nullptr);
        if (!b.empty()) row_sub_scalar(r, r, spatial, -b[c]);
        store_row(r, spatial, yb + (bi * yv.strides()[0] + c * yv.strides()[1]) * ye, yt, yv.strides()[2]);
      }
    }
  });
}

}  // namespace encore::cpu
