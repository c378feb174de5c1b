// Double-precision references for GEMM and convolution: textbook loops, written independently of
// the oneDNN kernels. Optional inputs (bias) are passed as null pointers.
#pragma once

#include <cstdint>
#include <vector>

#include "encore/graph/op_attrs.h"
#include "reference/ref_tensor.h"

namespace encore::ref {


/// y = act(x W + bias); x [..., K]; w [N, K] (out_in) or [K, N] (in_out); bias [N] or null.
RefTensor linear(const RefTensor& x, const RefTensor& w, const RefTensor* bias, WeightLayout layout,
                 Activation act = Activation::none);

/// alpha * a b with NumPy broadcasting of the batch dims; a [..., M, K] ([..., K, M] when trans_a),
/// b [..., K, N] ([..., N, K] when trans_b).
RefTensor matmul(const RefTensor& a, const RefTensor& b, bool trans_a, bool trans_b, double alpha = 1.0);

/// x [N, C, H, W], w [O, C/groups, kh, kw], bias [O] or null; zero padding.
RefTensor conv2d(const RefTensor& x, const RefTensor& w, const RefTensor* bias, const Conv2dAttrs& attrs);
/// x [N, C, T], w [O, C/groups, k], bias [O] or null; zero padding.
RefTensor conv1d(const RefTensor& x, const RefTensor& w, const RefTensor* bias, const Conv1dAttrs& attrs);

/// Exact integer GEMM: acc[m * N + n] = sum_k (x[m * K + k] - x_zero_point) * w[n * K + k].
std::vector<std::int64_t> int8_gemm(const std::vector<std::uint8_t>& x, std::int64_t M, std::int64_t K,
                                    std::int32_t x_zero_point, const std::vector<std::int8_t>& w, std::int64_t N);

/// Requantisation of a real value v: saturate(round_half_even(v / y_scale + zero_point)) to
/// [lo, hi] (0..255 for u8, -128..127 for i8). oneDNN adds the zero point before rounding, so on an
/// exact tie with an odd zero point this differs by one from round-then-add (PyTorch's order).
std::int64_t requantize(double v, double y_scale, std::int32_t zero_point, std::int64_t lo, std::int64_t hi);

}  // namespace encore::ref
