// Conformer / Transformer-XL relative-position self-attention (CASS-NAT RelMultiHeadedAttention):
//   score(i, j) = ((q_i + u) . k_j + (q_i + v) . p[clamp(j - i, -K, K) + K]) * scale
// p = the projected relative embeddings [2K+1, H*D]. Keys masked by the key-padding mask get
// float32 lowest before the softmax, and their probabilities are set to 0 after it, without
// renormalising (so a fully masked row, uniform after the softmax, outputs zeros).
//
// One task per (batch, head): the head's keys are transposed into f32 [D][Tk] and its values
// converted to f32 [Tk][D], then each query row materialises only its own [Tk] scores. The
// position term takes just 2K+1 distinct values per row, so it costs (2K+1)·D, not Tk·D.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/kernels.h"
#include "kernels/cpu/omp_guard.h"
#include "core/check.h"

namespace encore::cpu {
namespace {

float load_f(const Tensor& t, const void* base, std::int64_t off) {
  return t.dtype() == DType::BF16 ? bfloat16_to_float(static_cast<const BFloat16*>(base)[off])
                                  : static_cast<const float*>(base)[off];
}

bool is_rp_float(DType t) { return t == DType::F32 || t == DType::BF16; }

}  // namespace

void rel_pos_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pos, const Tensor& bias_u,
                       const Tensor& bias_v, const Tensor& mask, const RelPosAttentionAttrs& attrs, const Tensor& y,
                       const CpuContext& ctx) {
  ENCORE_CHECK(q.defined() && k.defined() && v.defined() && pos.defined() && bias_u.defined() && bias_v.defined() &&
                   y.defined(),
               invalid_argument, "rel_pos_attention: q, k, v, pos, bias_u, bias_v and the output must be defined");
  for (const Tensor* t : {&q, &k, &v, &pos, &bias_u, &bias_v, &y, &mask})
    ENCORE_CHECK(!t->defined() || t->device().is_cpu(), invalid_argument,
                 "rel_pos_attention: an operand is on {}, expected the CPU", t->device().str());
  ENCORE_CHECK(q.rank() == 3 && k.rank() == 3 && k.shape() == v.shape() && q.dim(0) == k.dim(0) &&
                   q.dim(2) == k.dim(2),
               invalid_argument, "rel_pos_attention: q {}, k {}, v {} must be [B, T, H*D] with k and v alike",
               q.shape().str(), k.shape().str(), v.shape().str());
  const int H = attrs.num_heads;
  const std::int64_t K = attrs.max_relative;
  ENCORE_CHECK(H >= 1 && K >= 0 && q.dim(2) % H == 0, invalid_argument,
               "rel_pos_attention: q {} last dim is not divisible by num_heads {} (max_relative {})", q.shape().str(),
               H, K);
  const std::int64_t B = q.dim(0), Tq = q.dim(1), Tk = k.dim(1), HD = q.dim(2), D = HD / H;
  ENCORE_CHECK(pos.rank() == 2 && pos.dim(0) == 2 * K + 1 && pos.dim(1) == HD, invalid_argument,
               "rel_pos_attention: pos is {}, expected [{}, {}]", pos.shape().str(), 2 * K + 1, HD);
  ENCORE_CHECK(bias_u.numel() == HD && bias_v.numel() == HD, invalid_argument,
               "rel_pos_attention: bias_u {} and bias_v {} must hold [{}, {}]", bias_u.shape().str(),
               bias_v.shape().str(), H, D);
  for (const Tensor* t : {&q, &k, &v, &pos, &bias_u, &bias_v, &y})
    ENCORE_CHECK(is_rp_float(t->dtype()), invalid_argument, "rel_pos_attention: tensors must be f32 or bf16, got {}",
                 dtype_name(t->dtype()));
  ENCORE_CHECK(y.shape() == q.shape() && y.is_contiguous(), invalid_argument,
               "rel_pos_attention: output {} must be contiguous with q's shape {}", y.shape().str(), q.shape().str());
  Tensor kpm;
  if (attrs.mask == MaskKind::key_padding) {
    ENCORE_CHECK(mask.defined() && (mask.dtype() == DType::Bool || mask.dtype() == DType::U8), invalid_argument,
                 "rel_pos_attention: a key padding mask (bool or u8 [B, Tk]) is required");
    // [B, Tk] or CASS-NAT's [B, 1, Tk].
    ENCORE_CHECK((mask.rank() == 2 || (mask.rank() == 3 && mask.dim(1) == 1)) && mask.dim(0) == B &&
                     mask.dim(-1) == Tk,
                 invalid_argument, "rel_pos_attention: key padding mask is {}, expected [{}, {}]", mask.shape().str(),
                 B, Tk);
    kpm = mask.rank() == 3 ? mask.squeeze(1) : mask;
  } else {
    ENCORE_CHECK(attrs.mask == MaskKind::none && !mask.defined(), invalid_argument,
                 "rel_pos_attention: only a key_padding mask is supported (mask kind {}, mask {})",
                 static_cast<int>(attrs.mask), mask.defined() ? mask.shape().str() : std::string("none"));
  }
  if (B == 0 || Tq == 0 || D == 0) return;

  // Small operands as contiguous f32; q/k/v are read through their strides.
  const Tensor P = pos.to(DType::F32), U = bias_u.to(DType::F32), V = bias_v.to(DType::F32);
  const float* pf = P.data_ptr<float>();
  const float* uf = U.data_ptr<float>();
  const float* vf = V.data_ptr<float>();
  const float scale = attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(D));
  const float lowest = std::numeric_limits<float>::lowest();
  const std::int64_t npos = 2 * K + 1;
  const void* qd = q.data();
  const void* kd = k.data();
  const void* vd = v.data();
  const auto* md = kpm.defined() ? static_cast<const std::uint8_t*>(kpm.data()) : nullptr;

  RegionGuard guard;  // a bad_alloc of the per-thread buffers must not terminate the process
#pragma omp parallel num_threads(std::max(1, ctx.num_threads))
  {
    std::vector<float> kt, vh, qu, qv, out, s, pterm;
    std::vector<char> masked;
    guard.run([&] {
      kt.resize(static_cast<std::size_t>(D * Tk)), vh.resize(static_cast<std::size_t>(Tk * D));
      qu.resize(static_cast<std::size_t>(D)), qv.resize(static_cast<std::size_t>(D));
      out.resize(static_cast<std::size_t>(D));
      s.resize(static_cast<std::size_t>(Tk)), pterm.resize(static_cast<std::size_t>(npos));
      masked.resize(static_cast<std::size_t>(Tk));
    });
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < B * H; ++task)
      guard.run([&] {
        const std::int64_t b = task / H, h = task % H;
        for (std::int64_t j = 0; j < Tk; ++j) {
          const std::int64_t ko = b * k.strides()[0] + j * k.strides()[1], vo = b * v.strides()[0] + j * v.strides()[1];
          for (std::int64_t d = 0; d < D; ++d) {
            kt[static_cast<std::size_t>(d * Tk + j)] = load_f(k, kd, ko + (h * D + d) * k.strides()[2]);
            vh[static_cast<std::size_t>(j * D + d)] = load_f(v, vd, vo + (h * D + d) * v.strides()[2]);
          }
          masked[static_cast<std::size_t>(j)] = md != nullptr && md[b * kpm.strides()[0] + j * kpm.strides()[1]] == 0;
        }
        for (std::int64_t i = 0; i < Tq; ++i) {
          const std::int64_t qo = b * q.strides()[0] + i * q.strides()[1];
          for (std::int64_t d = 0; d < D; ++d) {
            const float x = load_f(q, qd, qo + (h * D + d) * q.strides()[2]);
            qu[static_cast<std::size_t>(d)] = x + uf[h * D + d];
            qv[static_cast<std::size_t>(d)] = x + vf[h * D + d];
          }
          for (std::int64_t r = 0; r < npos; ++r) {
            float acc = 0.0f;
            for (std::int64_t d = 0; d < D; ++d) acc += qv[static_cast<std::size_t>(d)] * pf[r * HD + h * D + d];
            pterm[static_cast<std::size_t>(r)] = acc;
          }
          // Content term, vectorisable over keys: s[j] = sum_d qu[d] * kt[d][j].
          std::fill(s.begin(), s.end(), 0.0f);
          for (std::int64_t d = 0; d < D; ++d) {
            const float w = qu[static_cast<std::size_t>(d)];
            const float* kr = kt.data() + d * Tk;
            for (std::int64_t j = 0; j < Tk; ++j) s[static_cast<std::size_t>(j)] += w * kr[j];
          }
          float m = -std::numeric_limits<float>::infinity();
          for (std::int64_t j = 0; j < Tk; ++j) {
            const std::int64_t rel = std::clamp<std::int64_t>(j - i, -K, K) + K;
            float& sj = s[static_cast<std::size_t>(j)];
            sj = masked[static_cast<std::size_t>(j)] ? lowest : (sj + pterm[static_cast<std::size_t>(rel)]) * scale;
            m = std::max(m, sj);
          }
          float sum = 0.0f;
          for (std::int64_t j = 0; j < Tk; ++j) {
            float& sj = s[static_cast<std::size_t>(j)];
            sum += (sj = std::exp(sj - m));
          }
          const float inv = 1.0f / sum;  // sum >= 1: the max term is exp(0)
          std::fill(out.begin(), out.end(), 0.0f);
          for (std::int64_t j = 0; j < Tk; ++j) {
            if (masked[static_cast<std::size_t>(j)]) continue;  // probability zeroed after the softmax
            const float w = s[static_cast<std::size_t>(j)] * inv;
            const float* vr = vh.data() + j * D;
            for (std::int64_t d = 0; d < D; ++d) out[static_cast<std::size_t>(d)] += w * vr[d];
          }
          const std::int64_t yo = (b * Tq + i) * HD + h * D;
          if (y.dtype() == DType::BF16) {
            BFloat16* yp = static_cast<BFloat16*>(y.data()) + yo;
            for (std::int64_t d = 0; d < D; ++d) yp[d] = float_to_bfloat16(out[static_cast<std::size_t>(d)]);
          } else {
            std::memcpy(static_cast<float*>(y.data()) + yo, out.data(), sizeof(float) * static_cast<std::size_t>(D));
          }
        }
      });
  }
  guard.rethrow();
}

}  // namespace encore::cpu
