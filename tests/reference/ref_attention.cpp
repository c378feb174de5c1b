// Double-precision attention references (see ref_attention.h).
#include "reference/ref_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace encore::ref {
namespace {

constexpr double kLowest = static_cast<double>(std::numeric_limits<float>::lowest());
constexpr double kInf = std::numeric_limits<double>::infinity();

// Element of a rank <= 4 mask broadcast (right-aligned, extent-1 dims repeat) to index idx[4].
double broadcast_at(const RefTensor& m, const std::int64_t idx[4]) {
  const int r = m.shape.rank();
  std::int64_t flat = 0;
  for (int i = 0; i < r; ++i) {
    const std::int64_t e = m.shape[i];
    flat = flat * e + (e == 1 ? 0 : idx[4 - r + i]);
  }
  return m.data[static_cast<std::size_t>(flat)];
}

// Softmax of a row in place; a row whose maximum is -inf becomes zeros.
void softmax_row(std::vector<double>& s) {
  double m = -kInf;
  for (double x : s) m = std::max(m, x);
  if (m == -kInf) {
    std::fill(s.begin(), s.end(), 0.0);
    return;
  }
  double sum = 0;
  for (double& x : s) sum += (x = std::exp(x - m));
  for (double& x : s) x /= sum;
}

}  // namespace

RefTensor attention(const RefTensor& q, const RefTensor& k, const RefTensor& v, const RefTensor* mask,
                    const AttentionAttrs& attrs) {
  const std::int64_t B = q.shape[0], Tq = q.shape[1], Tk = k.shape[1];
  const std::int64_t Hq = attrs.num_heads, Hkv = attrs.num_kv_heads ? attrs.num_kv_heads : Hq;
  const std::int64_t D = attrs.head_dim ? attrs.head_dim : q.shape[2] / Hq;
  const std::int64_t Ho = std::max(Hq, Hkv);
  const double scale = attrs.scale != 0 ? attrs.scale : 1.0 / std::sqrt(static_cast<double>(D));
  const double fill = attrs.fill == MaskFill::lowest ? kLowest : -kInf;
  RefTensor out(Shape{B, Tq, Ho * D});
  std::vector<double> s(static_cast<std::size_t>(Tk));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t o = 0; o < Ho; ++o) {
      // Head mapping: GQA repeats kv heads; reverse SQA tiles query heads.
      const std::int64_t qh = Hq >= Hkv ? o : o % Hq;
      const std::int64_t kh = Hq >= Hkv ? o / (Hq / Hkv) : o;
      // An additive mask with Ho (!= Hq) heads is indexed by output head, else by query head.
      const bool mask_by_out = mask && mask->shape.rank() >= 3 && mask->shape[mask->shape.rank() - 3] == Ho && Ho != Hq;
      for (std::int64_t i = 0; i < Tq; ++i) {
        for (std::int64_t j = 0; j < Tk; ++j) {
          double dot = 0;
          for (std::int64_t d = 0; d < D; ++d)
            dot += q.data[static_cast<std::size_t>((b * Tq + i) * Hq * D + qh * D + d)] *
                   k.data[static_cast<std::size_t>((b * Tk + j) * Hkv * D + kh * D + d)];
          double x = dot * scale;
          if (attrs.causal && j > i + (Tk - Tq)) x = fill;
          if (attrs.mask == MaskKind::key_padding && mask->data[static_cast<std::size_t>(b * Tk + j)] == 0) x = fill;
          if (attrs.mask == MaskKind::additive) {
            const std::int64_t idx[4] = {b, mask_by_out ? o : qh, i, j};
            x += broadcast_at(*mask, idx);
          }
          // f32 semantics for masked magnitudes: overflow -> -inf, huge values rounded to f32.
          if (std::abs(x) > 1e30 && std::isfinite(x)) x = static_cast<double>(static_cast<float>(x));
          s[static_cast<std::size_t>(j)] = x;
        }
        softmax_row(s);
        for (std::int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (std::int64_t j = 0; j < Tk; ++j)
            acc += s[static_cast<std::size_t>(j)] * v.data[static_cast<std::size_t>((b * Tk + j) * Hkv * D + kh * D + d)];
          out.data[static_cast<std::size_t>((b * Tq + i) * Ho * D + o * D + d)] = acc;
        }
      }
    }
  return out;
}

RefTensor rel_pos_attention(const RefTensor& q, const RefTensor& k, const RefTensor& v, const RefTensor& pos,
                            const RefTensor& bias_u, const RefTensor& bias_v, const RefTensor* mask,
                            const RelPosAttentionAttrs& attrs) {
  const std::int64_t B = q.shape[0], Tq = q.shape[1], Tk = k.shape[1], HD = q.shape[2];
  const std::int64_t H = attrs.num_heads, D = HD / H, K = attrs.max_relative;
  const double scale = attrs.scale != 0 ? attrs.scale : 1.0 / std::sqrt(static_cast<double>(D));
  RefTensor out(q.shape);
  std::vector<double> s(static_cast<std::size_t>(Tk));
  auto masked = [&](std::int64_t b, std::int64_t j) {
    return mask != nullptr && mask->data[static_cast<std::size_t>(b * Tk + j)] == 0;
  };
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < Tq; ++i) {
        for (std::int64_t j = 0; j < Tk; ++j) {
          const std::int64_t rel = std::min(std::max(j - i, -K), K) + K;
          double ac = 0, bd = 0;
          for (std::int64_t d = 0; d < D; ++d) {
            const double qi = q.data[static_cast<std::size_t>((b * Tq + i) * HD + h * D + d)];
            ac += (qi + bias_u.data[static_cast<std::size_t>(h * D + d)]) *
                  k.data[static_cast<std::size_t>((b * Tk + j) * HD + h * D + d)];
            bd += (qi + bias_v.data[static_cast<std::size_t>(h * D + d)]) *
                  pos.data[static_cast<std::size_t>(rel * HD + h * D + d)];
          }
          s[static_cast<std::size_t>(j)] = masked(b, j) ? kLowest : (ac + bd) * scale;
        }
        softmax_row(s);
        for (std::int64_t j = 0; j < Tk; ++j)
          if (masked(b, j)) s[static_cast<std::size_t>(j)] = 0;
        for (std::int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (std::int64_t j = 0; j < Tk; ++j)
            acc += s[static_cast<std::size_t>(j)] * v.data[static_cast<std::size_t>((b * Tk + j) * HD + h * D + d)];
          out.data[static_cast<std::size_t>((b * Tq + i) * HD + h * D + d)] = acc;
        }
      }
  return out;
}

RefTensor rope(const RefTensor& x, const RopeAttrs& attrs) {
  const std::int64_t B = x.shape[0], T = x.shape[1], H = attrs.num_heads, D = x.shape[2] / H;
  const std::int64_t R = attrs.rotary_dim ? attrs.rotary_dim : D, half = R / 2;
  RefTensor out = x;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < half; ++i) {
      // The f32 angle recipe (HF: inv_freq = 1 / base^(arange(0, R, 2) / R), freqs = t * inv_freq).
      const float inv = 1.0f / std::pow(attrs.base, static_cast<float>(2 * i) / static_cast<float>(R));
      const float angle = static_cast<float>(attrs.position_offset + t) * inv;
      const double c = std::cos(static_cast<double>(angle)), s = std::sin(static_cast<double>(angle));
      const std::int64_t a = attrs.layout == RopeLayout::interleaved ? 2 * i : i;
      const std::int64_t bb = attrs.layout == RopeLayout::interleaved ? 2 * i + 1 : i + half;
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t h = 0; h < H; ++h) {
          const auto base = static_cast<std::size_t>((b * T + t) * H * D + h * D);
          const double x1 = x.data[base + static_cast<std::size_t>(a)], x2 = x.data[base + static_cast<std::size_t>(bb)];
          out.data[base + static_cast<std::size_t>(a)] = x1 * c - x2 * s;
          out.data[base + static_cast<std::size_t>(bb)] = x2 * c + x1 * s;
        }
    }
  return out;
}

}  // namespace encore::ref
