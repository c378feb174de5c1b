#include "reference/ref_gemm.h"

#include "reference/ref_elementwise.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace encore::ref {
namespace {

// Row-major offset of `index` in `shape`, with extent-1 dims of `shape` broadcast.
std::int64_t broadcast_offset(const Shape& shape, const std::vector<std::int64_t>& index, int index_rank) {
  std::int64_t off = 0;
  const int r = shape.rank();
  for (int i = 0; i < r; ++i) {
    const std::int64_t idx = index[static_cast<std::size_t>(index_rank - r + i)];
    off = off * shape[i] + (shape[i] == 1 ? 0 : idx);
  }
  return off;
}

}  // namespace

RefTensor linear(const RefTensor& x, const RefTensor& w, const RefTensor* bias, WeightLayout layout, Activation act) {
  const std::int64_t K = x.shape[x.shape.rank() - 1];
  const bool out_in = layout == WeightLayout::out_in;
  const std::int64_t N = out_in ? w.shape[0] : w.shape[1];
  Shape ys = x.shape;
  ys[ys.rank() - 1] = N;
  RefTensor y(ys);
  const std::int64_t rows = y.numel() / std::max<std::int64_t>(N, 1);
  for (std::int64_t m = 0; m < rows; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      double acc = bias ? bias->data[static_cast<std::size_t>(n)] : 0.0;
      for (std::int64_t k = 0; k < K; ++k) {
        const double wv = w.data[static_cast<std::size_t>(out_in ? n * K + k : k * N + n)];
        acc += x.data[static_cast<std::size_t>(m * K + k)] * wv;
      }
      y.data[static_cast<std::size_t>(m * N + n)] = activation_value(acc, act);
    }
  return y;
}

RefTensor matmul(const RefTensor& a, const RefTensor& b, bool trans_a, bool trans_b, double alpha) {
  const int ra = a.shape.rank(), rb = b.shape.rank(), R = std::max(ra, rb);
  const std::int64_t M = trans_a ? a.shape[ra - 1] : a.shape[ra - 2];
  const std::int64_t K = trans_a ? a.shape[ra - 2] : a.shape[ra - 1];
  const std::int64_t N = trans_b ? b.shape[rb - 2] : b.shape[rb - 1];
  Shape batch_a, batch_b, ys;
  for (int i = 0; i < ra - 2; ++i) batch_a.push_back(a.shape[i]);
  for (int i = 0; i < rb - 2; ++i) batch_b.push_back(b.shape[i]);
  for (int i = 0; i < R - 2; ++i) {
    const int ia = i - (R - ra), ib = i - (R - rb);
    ys.push_back(std::max(ia >= 0 ? a.shape[ia] : 1, ib >= 0 ? b.shape[ib] : 1));
  }
  const std::int64_t batches = ys.numel();
  ys.push_back(M);
  ys.push_back(N);
  RefTensor y(ys);
  std::vector<std::int64_t> index(static_cast<std::size_t>(std::max(R - 2, 0)), 0);
  for (std::int64_t bi = 0; bi < batches; ++bi) {
    std::int64_t rem = bi;  // batch index -> multi-index over the broadcast batch shape
    for (int i = R - 3; i >= 0; --i) {
      index[static_cast<std::size_t>(i)] = rem % ys[i];
      rem /= ys[i];
    }
    const std::int64_t oa = broadcast_offset(batch_a, index, R - 2) * M * K;
    const std::int64_t ob = broadcast_offset(batch_b, index, R - 2) * K * N;
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (std::int64_t k = 0; k < K; ++k) {
          const double av = a.data[static_cast<std::size_t>(oa + (trans_a ? k * M + m : m * K + k))];
          const double bv = b.data[static_cast<std::size_t>(ob + (trans_b ? n * K + k : k * N + n))];
          acc += av * bv;
        }
        y.data[static_cast<std::size_t>((bi * M + m) * N + n)] = alpha * acc;
      }
  }
  return y;
}

RefTensor conv2d(const RefTensor& x, const RefTensor& w, const RefTensor* bias, const Conv2dAttrs& attrs) {
  const std::int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const std::int64_t O = w.shape[0], Cg = w.shape[1], kh = w.shape[2], kw = w.shape[3];
  const std::int64_t G = attrs.groups, Og = O / G;
  const auto [sh, sw] = attrs.stride;
  const auto [ph, pw] = attrs.padding;
  const auto [dh, dw] = attrs.dilation;
  const std::int64_t Ho = (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const std::int64_t Wo = (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  RefTensor y(Shape{N, O, Ho, Wo});
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t o = 0; o < O; ++o) {
      const std::int64_t g = o / Og;
      for (std::int64_t i = 0; i < Ho; ++i)
        for (std::int64_t j = 0; j < Wo; ++j) {
          double acc = bias ? bias->data[static_cast<std::size_t>(o)] : 0.0;
          for (std::int64_t c = 0; c < Cg; ++c)
            for (std::int64_t u = 0; u < kh; ++u)
              for (std::int64_t v = 0; v < kw; ++v) {
                const std::int64_t hi = i * sh - ph + u * dh, wi = j * sw - pw + v * dw;
                if (hi < 0 || hi >= H || wi < 0 || wi >= W) continue;
                const std::int64_t ci = g * Cg + c;
                acc += x.data[static_cast<std::size_t>(((n * C + ci) * H + hi) * W + wi)] *
                       w.data[static_cast<std::size_t>(((o * Cg + c) * kh + u) * kw + v)];
              }
          y.data[static_cast<std::size_t>(((n * O + o) * Ho + i) * Wo + j)] = acc;
        }
    }
  return y;
}

RefTensor conv1d(const RefTensor& x, const RefTensor& w, const RefTensor* bias, const Conv1dAttrs& attrs) {
  // Written out separately (not via conv2d) so the two references check each other's indexing.
  const std::int64_t N = x.shape[0], C = x.shape[1], T = x.shape[2];
  const std::int64_t O = w.shape[0], Cg = w.shape[1], k = w.shape[2];
  const std::int64_t G = attrs.groups, Og = O / G;
  const std::int64_t To = (T + 2 * attrs.padding - attrs.dilation * (k - 1) - 1) / attrs.stride + 1;
  RefTensor y(Shape{N, O, To});
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t o = 0; o < O; ++o)
      for (std::int64_t t = 0; t < To; ++t) {
        double acc = bias ? bias->data[static_cast<std::size_t>(o)] : 0.0;
        for (std::int64_t c = 0; c < Cg; ++c)
          for (std::int64_t u = 0; u < k; ++u) {
            const std::int64_t ti = t * attrs.stride - attrs.padding + u * attrs.dilation;
            if (ti < 0 || ti >= T) continue;
            acc += x.data[static_cast<std::size_t>((n * C + (o / Og) * Cg + c) * T + ti)] *
                   w.data[static_cast<std::size_t>((o * Cg + c) * k + u)];
          }
        y.data[static_cast<std::size_t>((n * O + o) * To + t)] = acc;
      }
  return y;
}

std::vector<std::int64_t> int8_gemm(const std::vector<std::uint8_t>& x, std::int64_t M, std::int64_t K,
                                    std::int32_t x_zero_point, const std::vector<std::int8_t>& w, std::int64_t N) {
  std::vector<std::int64_t> acc(static_cast<std::size_t>(M * N), 0);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      std::int64_t s = 0;
      for (std::int64_t k = 0; k < K; ++k)
        s += (static_cast<std::int64_t>(x[static_cast<std::size_t>(m * K + k)]) - x_zero_point) *
             static_cast<std::int64_t>(w[static_cast<std::size_t>(n * K + k)]);
      acc[static_cast<std::size_t>(m * N + n)] = s;
    }
  return acc;
}

std::int64_t requantize(double v, double y_scale, std::int32_t zero_point, std::int64_t lo, std::int64_t hi) {
  // The zero point is added before rounding, as oneDNN does (it matters on exact ties when the
  // zero point is odd).
  const double q = v / y_scale + zero_point;
  double z = std::floor(q);  // round half to even, spelled out
  const double frac = q - z;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(z, 2.0) != 0.0)) z += 1.0;
  return static_cast<std::int64_t>(
      std::min<double>(std::max<double>(z, static_cast<double>(lo)), static_cast<double>(hi)));
}

}  // namespace encore::ref
