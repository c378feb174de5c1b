// Softmax and log-softmax along any axis (f32/bf16/f16; computed in f32).
//
// Rows along the axis are staged as contiguous f32 (strided gathers for inner axes), reduced with
// the max-shifted exponentials, and written back rounded once. Semantics follow torch: a row of
// float-lowest values becomes uniform; a row that is all -inf (or holds a NaN) becomes NaN.
#include <cmath>
#include <memory>

#include "kernels/cpu/simd_common.h"

namespace encore::cpu {

using namespace ewk;

void softmax(const Tensor& x, const SoftmaxAttrs& attrs, bool log, const Tensor& y, const CpuContext& ctx) {
  const char* op = log ? "log_softmax" : "softmax";
  check_float(op, "x", x);
  check_float(op, "y", y);
  check_shape(op, "y", y, x.shape());
  const int axis = normalize_axis(attrs.axis, x.rank(), "softmax axis");
  if (x.numel() == 0) return;
  const Rows<2> rows({&x, &y}, axis);
  const i64 n = rows.len;
  const DType xt = x.dtype(), yt = y.dtype();
  const bool x_direct = xt == DType::F32 && (rows.step[0] == 1 || n == 1);
  const bool y_direct = yt == DType::F32 && rows.step[1] == 1;
  // log_softmax needs x after the exponentials: they go to scratch when y may be x.
  const bool exp_scratch = log && x.storage() == y.storage();
  parallel_rows(rows.count, n * 8, ctx, [&](i64 r0, i64 r1) {
    // Scratch rows only where needed, uninitialised (every element is written before it is read):
    // a zeroed vocabulary-sized row per call was most of a decode step's log_softmax.
    std::unique_ptr<float[]> in(x_direct ? nullptr : new float[static_cast<std::size_t>(n)]);
    std::unique_ptr<float[]> out(y_direct && !exp_scratch ? nullptr : new float[static_cast<std::size_t>(n)]);
    rows.visit(r0, r1, [&](const std::array<std::byte*, 2>& p) {
      const float* xr = row_f32(p[0], xt, rows.step[0], n, in.get());
      float* yr = y_direct ? reinterpret_cast<float*>(p[1]) : out.get();
      const float m = row_max(xr, n);
      if (!log) {
        const float s = row_exp_shift_sum(xr, yr, n, m);
        row_mul_scalar(yr, yr, n, 1.0f / s);
      } else {
        const float s = row_exp_shift_sum(xr, yr == xr ? out.get() : yr, n, m);
        // (x - max) - log(sum): subtracting max first keeps small results exact when |max| is large
        row_sub_scalar(xr, yr, n, m);
        row_sub_scalar(yr, yr, n, std::log(s));
      }
      if (!y_direct) store_row(yr, n, p[1], yt, rows.step[1]);
    });
  });
}

}  // namespace encore::cpu
