// Fused scaled-dot-product attention on the CPU: validation, dispatch and the portable tile kernel.
// The algorithm and the block layout are described in attention_internal.h.
//
// Masking semantics (matching HF/PyTorch in f32):
// - causal and key-padding masks *replace* the scaled score with the fill value (float32 lowest or
//   -inf); an additive mask is then *added* in f32 (GPT-2: where(tril, s, lowest) + mask).
// - MaskFill::lowest: a row whose every score is `lowest` averages all keys uniformly (what the
//   reference softmax does); the online softmax gets this for free since exp(lowest - lowest) = 1.
// - A row whose every score is -inf (MaskFill::neg_infinity, or lowest + a lowest additive value
//   that overflows f32 to -inf) outputs zeros, never NaN (PyTorch would give NaN there).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "core/check.h"
#include "kernels/cpu/attention_internal.h"
#include "kernels/cpu/cpu_features.h"

namespace encore::cpu {
namespace attn {
namespace {

// Plain C++ tile loops: any head dim, f32 math, std::exp.
struct PortableK {
  static void prepare_block(const Problem&, const Block&, Workspace& ws) { ws.rs = kTile, ws.cs = 1; }

  // Key (or value) row c of the tile as f32: a direct pointer for f32 inputs, converted for bf16.
  static const float* row(const Problem& p, const void* base, std::int64_t off, float* buf) {
    if (!p.bf16_in) return static_cast<const float*>(base) + off;
    const auto* src = static_cast<const std::uint16_t*>(base) + off;
    for (int d = 0; d < p.D; ++d) buf[d] = bf16_bits_to_float(src[d]);
    return buf;
  }

  static void scores(const Problem& p, const Block& bl, std::int64_t j0, int nc, Workspace& ws) {
    const int nr = bl.rows();
    for (int c = 0; c < nc; ++c) {
      const float* kr = row(p, p.k, bl.b * p.k_sb + (j0 + c) * p.k_st + static_cast<std::int64_t>(bl.unit) * p.D, ws.kbuf);
      for (int r = 0; r < nr; ++r) {
        const float* qr = ws.Qp + static_cast<std::int64_t>(r) * p.D;
        float acc = 0.0f;
        for (int d = 0; d < p.D; ++d) acc += qr[d] * kr[d];
        ws.S[r * kTile + c] = acc;
      }
    }
  }

  static void softmax_update(int nr, int nc, Workspace& ws) {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    for (int r = 0; r < nr; ++r) {
      float* s = ws.S + r * kTile;
      float mt = neg_inf;
      for (int c = 0; c < nc; ++c) mt = std::max(mt, s[c]);
      const float m_new = std::max(ws.m[r], mt);
      if (m_new == neg_inf) {  // only -inf so far: nothing contributes (but a NaN makes the row NaN)
        if (std::any_of(s, s + nc, [](float v) { return std::isnan(v); }))
          ws.l[r] = std::numeric_limits<float>::quiet_NaN();
        ws.alpha[r] = 1.0f;
        std::fill(s, s + nc, 0.0f);
        continue;
      }
      ws.alpha[r] = std::exp(ws.m[r] - m_new);
      float sum = 0.0f;
      for (int c = 0; c < nc; ++c) {
        s[c] = std::exp(s[c] - m_new);
        sum += s[c];
      }
      ws.l[r] = ws.l[r] * ws.alpha[r] + sum;
      ws.m[r] = m_new;
    }
  }

  static void accumulate_pv(const Problem& p, const Block& bl, std::int64_t j0, int nc, Workspace& ws) {
    const int nr = bl.rows();
    for (int r = 0; r < nr; ++r) {
      float* o = ws.O + static_cast<std::int64_t>(r) * p.D;
      for (int d = 0; d < p.D; ++d) o[d] *= ws.alpha[r];
    }
    for (int c = 0; c < nc; ++c) {
      const float* vr = row(p, p.v, bl.b * p.v_sb + (j0 + c) * p.v_st + static_cast<std::int64_t>(bl.unit) * p.D, ws.kbuf);
      for (int r = 0; r < nr; ++r) {
        const float w = ws.S[r * kTile + c];
        float* o = ws.O + static_cast<std::int64_t>(r) * p.D;
        for (int d = 0; d < p.D; ++d) o[d] += w * vr[d];
      }
    }
  }
};

// A view whose last dim is contiguous, else a contiguous copy (kept alive by the caller).
Tensor last_dim_contiguous(const Tensor& t) {
  if (t.dim(-1) <= 1 || t.strides()[t.rank() - 1] == 1) return t;
  return t.contiguous();
}

bool is_attn_float(DType t) { return t == DType::F32 || t == DType::BF16; }

}  // namespace

void attention_impl(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& mask,
                    const AttentionAttrs& attrs, const Tensor& y, const CpuContext& ctx, const Options& opts) {
  ENCORE_CHECK(q_in.defined() && k_in.defined() && v_in.defined() && y.defined(), invalid_argument,
               "attention: q, k, v and the output must all be defined");
  for (const Tensor* t : {&q_in, &k_in, &v_in, &y, &mask})
    ENCORE_CHECK(!t->defined() || t->device().is_cpu(), invalid_argument,
                 "attention: an operand is on {}, expected the CPU", t->device().str());
  ENCORE_CHECK(q_in.rank() == 3 && k_in.rank() == 3 && v_in.rank() == 3, invalid_argument,
               "attention: q {}, k {}, v {} must all be [B, T, H*D]", q_in.shape().str(), k_in.shape().str(),
               v_in.shape().str());
  ENCORE_CHECK(k_in.shape() == v_in.shape(), invalid_argument, "attention: k {} and v {} must have the same shape",
               k_in.shape().str(), v_in.shape().str());
  ENCORE_CHECK(q_in.dim(0) == k_in.dim(0), invalid_argument, "attention: batch of q {} differs from k {}",
               q_in.shape().str(), k_in.shape().str());
  ENCORE_CHECK(is_attn_float(q_in.dtype()) && q_in.dtype() == k_in.dtype() && q_in.dtype() == v_in.dtype(),
               invalid_argument, "attention: q, k, v must all be f32 or all bf16 (got {}, {}, {})",
               dtype_name(q_in.dtype()), dtype_name(k_in.dtype()), dtype_name(v_in.dtype()));
  ENCORE_CHECK(is_attn_float(y.dtype()), invalid_argument, "attention: output must be f32 or bf16, got {}",
               dtype_name(y.dtype()));
  const int Hq = attrs.num_heads;
  const int Hkv = attrs.num_kv_heads == 0 ? Hq : attrs.num_kv_heads;
  ENCORE_CHECK(Hq >= 1 && Hkv >= 1, invalid_argument, "attention: num_heads {} and num_kv_heads {} must be >= 1", Hq,
               Hkv);
  ENCORE_CHECK(Hq % Hkv == 0 || Hkv % Hq == 0, invalid_argument,
               "attention: num_heads {} and num_kv_heads {} must divide one another (q {}, k {})", Hq, Hkv,
               q_in.shape().str(), k_in.shape().str());
  const std::int64_t qw = q_in.dim(2), kw = k_in.dim(2);
  const std::int64_t D = attrs.head_dim > 0 ? attrs.head_dim : qw / Hq;
  ENCORE_CHECK(D >= 1 && qw == Hq * D && kw == Hkv * D, invalid_argument,
               "attention: head dim mismatch: q {} should be [B, Tq, {}*D] and k {} [B, Tk, {}*D] with D = {}",
               q_in.shape().str(), Hq, k_in.shape().str(), Hkv, D);
  const std::int64_t B = q_in.dim(0), Tq = q_in.dim(1), Tk = k_in.dim(1);
  const int Ho = std::max(Hq, Hkv);
  const Shape y_shape{B, Tq, Ho * D};
  ENCORE_CHECK(y.shape() == y_shape, invalid_argument, "attention: output is {}, expected {} for q {}, k {}",
               y.shape().str(), y_shape.str(), q_in.shape().str(), k_in.shape().str());
  ENCORE_CHECK(y.is_contiguous(), invalid_argument, "attention: output {} must be contiguous", y.shape().str());

  Problem p;
  Tensor kpm, add;
  if (attrs.mask == MaskKind::none) {
    ENCORE_CHECK(!mask.defined(), invalid_argument, "attention: a mask {} was given but attrs.mask is none",
                 mask.shape().str());
  } else {
    ENCORE_CHECK(mask.defined(), invalid_argument, "attention: attrs.mask needs a mask tensor");
  }
  if (attrs.mask == MaskKind::key_padding) {
    ENCORE_CHECK(mask.dtype() == DType::Bool || mask.dtype() == DType::U8, invalid_argument,
                 "attention: a key padding mask must be bool or u8, got {}", dtype_name(mask.dtype()));
    ENCORE_CHECK(mask.rank() == 2 && mask.dim(0) == B && mask.dim(1) == Tk, invalid_argument,
                 "attention: key padding mask is {}, expected [{}, {}] for q {}, k {}", mask.shape().str(), B, Tk,
                 q_in.shape().str(), k_in.shape().str());
    kpm = mask;
    p.kpm = static_cast<const std::uint8_t*>(kpm.data());
    p.kpm_sb = kpm.strides()[0];
    p.kpm_st = kpm.strides()[1];
  } else if (attrs.mask == MaskKind::additive) {
    ENCORE_CHECK(is_floating(mask.dtype()), invalid_argument, "attention: an additive mask must be a float, got {}",
                 dtype_name(mask.dtype()));
    const int r = mask.rank();
    const std::int64_t Hm = r >= 3 ? mask.dim(r - 3) : 1;
    const bool by_out = Hm != Hq && Hm == Ho;
    const std::int64_t full[4] = {B, by_out ? Ho : Hq, Tq, Tk};
    bool ok = r >= 1 && r <= 4;
    for (int i = 0; ok && i < r; ++i) {
      const std::int64_t e = mask.dim(i), want = full[4 - r + i];
      ok = e == 1 || e == want;
    }
    ENCORE_CHECK(ok, invalid_argument, "attention: additive mask {} does not broadcast to [{}, {}, {}, {}]",
                 mask.shape().str(), B, Hq, Tq, Tk);
    add = mask.dtype() == DType::F32 ? mask : mask.to(DType::F32);
    std::int64_t st[4] = {0, 0, 0, 0};
    for (int i = 0; i < r; ++i) st[4 - r + i] = add.dim(i) == 1 ? 0 : add.strides()[i];
    p.add = static_cast<const float*>(add.data());
    p.add_sb = st[0], p.add_sh = st[1], p.add_sq = st[2], p.add_sk = st[3];
    p.add_by_out_head = by_out;
  }

  if (B == 0 || Tq == 0) return;
  if (Tk == 0) {  // softmax over no keys: define the output as zeros
    Tensor(y).fill(0.0);  // a handle copy shares the storage
    return;
  }
  const Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  p.bf16_in = q.dtype() == DType::BF16;
  p.bf16_out = y.dtype() == DType::BF16;
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.y = y.data();
  p.B = B, p.Tq = Tq, p.Tk = Tk;
  p.Hq = Hq, p.Hkv = Hkv, p.Ho = Ho, p.D = static_cast<int>(D);
  p.q_sb = q.strides()[0], p.q_st = q.strides()[1];
  p.k_sb = k.strides()[0], p.k_st = k.strides()[1];
  p.v_sb = v.strides()[0], p.v_st = v.strides()[1];
  p.scale = attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(D));
  p.causal = attrs.causal;
  p.causal_offset = Tk - Tq;
  p.fill_is_neg_inf = attrs.fill == MaskFill::neg_infinity;
  p.fill = p.fill_is_neg_inf ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::lowest();
  p.threads = std::max(1, ctx.num_threads);
  p.force_splits = opts.force_splits;

  if (!opts.force_portable && !opts.force_avx2 && D % 16 == 0 && has_avx512())
    run_avx512(p);
  else if (!opts.force_portable && D % 8 == 0 && has_avx2())
    run_avx2(p);
  else
    run<PortableK>(p);
}

}  // namespace attn

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const AttentionAttrs& attrs,
               const Tensor& y, const CpuContext& ctx) {
  attn::attention_impl(q, k, v, mask, attrs, y, ctx, attn::Options{});
}

}  // namespace encore::cpu
