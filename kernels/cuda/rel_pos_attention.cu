// Conformer / Transformer-XL relative-position self-attention on CUDA (CASS-NAT):
//   score(i, j) = ((q_i + u) . k_j + (q_i + v) . p[clamp(j - i, -K, K) + K]) * scale
// p = the projected relative embeddings [2K+1, H*D]. Keys masked by the key-padding mask get float
// lowest before the softmax and probability 0 after it, without renormalising (a fully masked
// row outputs zeros), exactly like the CPU kernel (kernels/cpu/rel_pos_attention.cpp).
//
// Straightforward flash-style kernel on CUDA cores, f32 math: a block owns 16 query rows of one
// (batch, head), 4 per warp; per tile of 32 keys (one per lane) the K and V rows and the at most
// 47 position rows the tile's (i, j) pairs can reach are staged in shared memory as f32, each lane
// scores its key against the warp's 4 rows, and an online softmax accumulates the output.
#include <cmath>
#include <limits>

#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda {

using namespace kc;

namespace {

constexpr int kRW = 4, kRR = 4, kRQ = kRW * kRR, kRN = 32, kRP = kRQ + kRN - 1, kRMaxI = 8;
constexpr int kRMaxD = 32 * kRMaxI;

struct RelPosParams {
  const void *q = nullptr, *k = nullptr, *v = nullptr, *pos = nullptr, *bu = nullptr, *bv = nullptr;
  void* y = nullptr;  // contiguous [B, Tq, H*D]
  int dt_q = 0, dt_k = 0, dt_v = 0, dt_p = 0, dt_bu = 0, dt_bv = 0, dt_y = 0;
  i64 B = 0, Tq = 0, Tk = 0, K = 0;
  int H = 1, D = 0;
  i64 q_sb = 0, q_st = 0, q_se = 1, k_sb = 0, k_st = 0, k_se = 1, v_sb = 0, v_st = 0, v_se = 1;
  i64 p_sr = 0, p_se = 1;            // pos: row, element strides
  i64 bu_sh = 0, bu_sd = 1, bv_sh = 0, bv_sd = 1;  // biases: head, element strides
  float scale = 1.0f;
  const std::uint8_t* kpm = nullptr;
  i64 kpm_sb = 0, kpm_st = 0;
};

std::size_t rel_pos_smem_bytes(int D) {
  return sizeof(float) * (2 * static_cast<std::size_t>(kRQ) * D + static_cast<std::size_t>(kRN) * (D + 1) +
                          static_cast<std::size_t>(kRN) * D + static_cast<std::size_t>(kRP) * (D + 1) +
                          static_cast<std::size_t>(kRQ) * kRN);
}

__device__ __forceinline__ i64 clamp_rel(i64 r, i64 K) { return r < -K ? -K : (r > K ? K : r); }

__global__ void __launch_bounds__(kRW * 32) rel_pos_kernel(const RelPosParams p) {
  extern __shared__ float sm[];
  const int D = p.D;
  float* sQu = sm;                 // [kRQ][D]  q + u
  float* sQv = sQu + kRQ * D;      // [kRQ][D]  q + v
  float* sK = sQv + kRQ * D;       // [kRN][D + 1]
  float* sV = sK + kRN * (D + 1);  // [kRN][D]
  float* sP = sV + kRN * D;        // [kRP][D + 1]  position rows lo .. lo + kRP - 1
  float* sW = sP + kRP * (D + 1);  // [kRQ][kRN]  probabilities (masked ones zeroed)
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const i64 b = blockIdx.z, q0 = static_cast<i64>(blockIdx.x) * kRQ;
  const int h = blockIdx.y;
  const float lowest = -3.402823466e38f;
  for (int e = threadIdx.x; e < kRQ * D; e += blockDim.x) {
    const int r = e / D, d = e % D;
    const i64 qi = q0 + r;
    const float x = qi < p.Tq ? load_f(p.q, b * p.q_sb + qi * p.q_st + (static_cast<i64>(h) * D + d) * p.q_se, p.dt_q)
                              : 0.0f;
    sQu[e] = qi < p.Tq ? x + load_f(p.bu, h * p.bu_sh + d * p.bu_sd, p.dt_bu) : 0.0f;
    sQv[e] = qi < p.Tq ? x + load_f(p.bv, h * p.bv_sh + d * p.bv_sd, p.dt_bv) : 0.0f;
  }
  float m[kRR], l[kRR], o[kRR][kRMaxI];
#pragma unroll
  for (int r = 0; r < kRR; ++r) {
    m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kRMaxI; ++i) o[r][i] = 0.0f;
  }
  for (i64 j0 = 0; j0 < p.Tk; j0 += kRN) {
    // Position rows reachable from keys [j0, j0 + kRN) and queries [q0, q0 + kRQ).
    const i64 lo = clamp_rel(j0 - (q0 + kRQ - 1), p.K) + p.K, hi = clamp_rel(j0 + kRN - 1 - q0, p.K) + p.K;
    const int np = static_cast<int>(hi - lo + 1);
    __syncthreads();  // the previous tile is consumed
    for (int e = threadIdx.x; e < kRN * D; e += blockDim.x) {
      const int j = e / D, d = e % D;
      const i64 kj = j0 + j, c = static_cast<i64>(h) * D + d;
      const bool ok = kj < p.Tk;
      sK[j * (D + 1) + d] = ok ? load_f(p.k, b * p.k_sb + kj * p.k_st + c * p.k_se, p.dt_k) : 0.0f;
      sV[j * D + d] = ok ? load_f(p.v, b * p.v_sb + kj * p.v_st + c * p.v_se, p.dt_v) : 0.0f;
    }
    for (int e = threadIdx.x; e < np * D; e += blockDim.x) {
      const int r = e / D, d = e % D;
      sP[r * (D + 1) + d] = load_f(p.pos, (lo + r) * p.p_sr + (static_cast<i64>(h) * D + d) * p.p_se, p.dt_p);
    }
    __syncthreads();
    const i64 kj = j0 + lane;
    const float* kr = sK + lane * (D + 1);
    float content[kRR] = {}, position[kRR] = {};
    const float* pr[kRR];
#pragma unroll
    for (int r = 0; r < kRR; ++r) {
      const i64 qi = q0 + w * kRR + r;
      pr[r] = sP + (clamp_rel(kj - qi, p.K) + p.K - lo) * (D + 1);  // in [0, np) for every lane and row
    }
    const float* qu = sQu + w * kRR * D;
    const float* qv = sQv + w * kRR * D;
    for (int d = 0; d < D; ++d) {
      const float kd = kr[d];
#pragma unroll
      for (int r = 0; r < kRR; ++r) {
        content[r] += qu[r * D + d] * kd;
        position[r] += qv[r * D + d] * pr[r][d];
      }
    }
    const bool valid = kj < p.Tk;
    const bool masked = valid && p.kpm != nullptr && p.kpm[b * p.kpm_sb + kj * p.kpm_st] == 0;
#pragma unroll
    for (int r = 0; r < kRR; ++r) {
      const float s = !valid ? -INFINITY : (masked ? lowest : (content[r] + position[r]) * p.scale);
      const float m_new = fmaxf(m[r], warp_max(s));
      float alpha = 1.0f, pj = 0.0f;
      if (m_new != -INFINITY) {
        alpha = expf(m[r] - m_new);
        pj = expf(s - m_new);
      }
      l[r] = l[r] * alpha + warp_sum(pj);  // masked keys count in the sum ...
      m[r] = m_new;
      sW[(w * kRR + r) * kRN + lane] = masked ? 0.0f : pj;  // ... but not in the output
#pragma unroll
      for (int i = 0; i < kRMaxI; ++i) o[r][i] *= alpha;
    }
    __syncwarp();
    const int nj = static_cast<int>(min(static_cast<i64>(kRN), p.Tk - j0));
    for (int j = 0; j < nj; ++j) {
      float pw[kRR];
#pragma unroll
      for (int r = 0; r < kRR; ++r) pw[r] = sW[(w * kRR + r) * kRN + j];
      const float* vr = sV + j * D;
#pragma unroll
      for (int i = 0; i < kRMaxI; ++i) {
        const int d = lane + 32 * i;
        if (d < D) {
          const float vv = vr[d];
#pragma unroll
          for (int r = 0; r < kRR; ++r) o[r][i] += pw[r] * vv;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRR; ++r) {
    const i64 qi = q0 + w * kRR + r;
    if (qi >= p.Tq) continue;
    const float inv = 1.0f / l[r];  // l >= 1: the max term is exp(0)
    const i64 base = (b * p.Tq + qi) * static_cast<i64>(p.H) * D + static_cast<i64>(h) * D;
#pragma unroll
    for (int i = 0; i < kRMaxI; ++i) {
      const int d = lane + 32 * i;
      if (d < D) store_f(p.y, base + d, p.dt_y, o[r][i] * inv);
    }
  }
}

/// Head and element strides of a bias holding [H, D] values (shape [H, D], or contiguous).
void bias_strides(const Tensor& t, i64 H, i64 D, i64& sh, i64& sd) {
  if (t.rank() == 2 && t.dim(0) == H && t.dim(1) == D) {
    sh = t.strides()[0], sd = t.strides()[1];
    return;
  }
  ENCORE_CU_CHECK(t.is_contiguous(), unsupported, "rel_pos_attention: a bias of shape ", t.shape().str(),
                  " must be [H, D] or contiguous");
  sh = D, sd = 1;
}

}  // namespace

void rel_pos_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pos, const Tensor& bias_u,
                       const Tensor& bias_v, const Tensor& mask, const RelPosAttentionAttrs& attrs, const Tensor& y,
                       const CudaContext& ctx) {
  const char* op = "rel_pos_attention";
  check_float(op, "q", q);
  check_float(op, "k", k);
  check_float(op, "v", v);
  check_float(op, "pos", pos);
  check_float(op, "bias_u", bias_u);
  check_float(op, "bias_v", bias_v);
  check_float(op, "output", y);
  ENCORE_CU_CHECK(q.rank() == 3 && k.rank() == 3 && k.shape() == v.shape() && q.dim(0) == k.dim(0) &&
                      q.dim(2) == k.dim(2),
                  invalid_argument, "rel_pos_attention: q ", q.shape().str(), ", k ", k.shape().str(), ", v ",
                  v.shape().str(), " must be [B, T, H*D] with k and v alike");
  const int H = attrs.num_heads;
  const i64 K = attrs.max_relative;
  ENCORE_CU_CHECK(H >= 1 && K >= 0 && q.dim(2) % H == 0, invalid_argument, "rel_pos_attention: q ",
                  q.shape().str(), " last dim is not divisible by num_heads ", H, " (max_relative ", K, ")");
  const i64 B = q.dim(0), Tq = q.dim(1), Tk = k.dim(1), HD = q.dim(2), D = HD / H;
  ENCORE_CU_CHECK(pos.rank() == 2 && pos.dim(0) == 2 * K + 1 && pos.dim(1) == HD, invalid_argument,
                  "rel_pos_attention: pos is ", pos.shape().str(), ", expected [", 2 * K + 1, ", ", HD, "]");
  ENCORE_CU_CHECK(bias_u.numel() == HD && bias_v.numel() == HD, invalid_argument, "rel_pos_attention: bias_u ",
                  bias_u.shape().str(), " and bias_v ", bias_v.shape().str(), " must hold [", H, ", ", D, "]");
  ENCORE_CU_CHECK(y.shape() == q.shape() && y.is_contiguous(), invalid_argument, "rel_pos_attention: output ",
                  y.shape().str(), " must be contiguous with q's shape ", q.shape().str());
  ENCORE_CU_CHECK(D <= kRMaxD, unsupported, "rel_pos_attention: head dim ", D, " is above the CUDA kernel's ",
                  kRMaxD);
  RelPosParams p;
  if (attrs.mask == MaskKind::key_padding) {
    ENCORE_CU_CHECK(mask.defined() && (mask.dtype() == DType::Bool || mask.dtype() == DType::U8), invalid_argument,
                    "rel_pos_attention: a key padding mask (bool or u8 [B, Tk]) is required");
    check_dev(op, "mask", mask);
    // [B, Tk] or CASS-NAT's [B, 1, Tk].
    ENCORE_CU_CHECK((mask.rank() == 2 || (mask.rank() == 3 && mask.dim(1) == 1)) && mask.dim(0) == B &&
                        mask.dim(-1) == Tk,
                    invalid_argument, "rel_pos_attention: key padding mask is ", mask.shape().str(), ", expected [",
                    B, ", ", Tk, "]");
    p.kpm = static_cast<const std::uint8_t*>(mask.data());
    p.kpm_sb = mask.strides()[0];
    p.kpm_st = mask.strides()[mask.rank() - 1];
  } else {
    ENCORE_CU_CHECK(attrs.mask == MaskKind::none && !mask.defined(), invalid_argument,
                    "rel_pos_attention: only a key_padding mask is supported (mask kind ",
                    static_cast<int>(attrs.mask), ", mask ", mask.defined() ? mask.shape().str() : std::string("none"),
                    ")");
  }
  if (B == 0 || Tq == 0 || D == 0) return;
  ENCORE_CU_CHECK(B <= 65535 && H <= 65535, unsupported, "rel_pos_attention: batch ", B, " or heads ", H,
                  " beyond the CUDA grid limit of 65535");
  Launch l(ctx, op);
  if (Tk == 0) {  // no keys: zeros (the CPU kernel's sum would be 0 / 0)
    check_cuda(cudaMemsetAsync(y.data(), 0, y.nbytes(), l.stream), "rel_pos_attention: cudaMemsetAsync");
    return;
  }
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.pos = pos.data(), p.bu = bias_u.data(), p.bv = bias_v.data();
  p.y = y.data();
  p.dt_q = code(q.dtype()), p.dt_k = code(k.dtype()), p.dt_v = code(v.dtype()), p.dt_p = code(pos.dtype());
  p.dt_bu = code(bias_u.dtype()), p.dt_bv = code(bias_v.dtype()), p.dt_y = code(y.dtype());
  p.B = B, p.Tq = Tq, p.Tk = Tk, p.K = K, p.H = H, p.D = static_cast<int>(D);
  p.q_sb = q.strides()[0], p.q_st = q.strides()[1], p.q_se = q.strides()[2];
  p.k_sb = k.strides()[0], p.k_st = k.strides()[1], p.k_se = k.strides()[2];
  p.v_sb = v.strides()[0], p.v_st = v.strides()[1], p.v_se = v.strides()[2];
  p.p_sr = pos.strides()[0], p.p_se = pos.strides()[1];
  bias_strides(bias_u, H, D, p.bu_sh, p.bu_sd);
  bias_strides(bias_v, H, D, p.bv_sh, p.bv_sd);
  p.scale = attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(D));
  const std::size_t smem = rel_pos_smem_bytes(p.D);
  ENCORE_CU_CHECK(smem + static_smem(reinterpret_cast<const void*>(rel_pos_kernel)) <= max_smem_per_block(), unsupported,
                  "rel_pos_attention: head dim ", p.D, " needs ", smem, " bytes of shared memory, more than this GPU ",
                  "gives a block (", max_smem_per_block(), ")");
  allow_smem(rel_pos_kernel, smem);
  const dim3 grid(static_cast<unsigned>((Tq + kRQ - 1) / kRQ), static_cast<unsigned>(H), static_cast<unsigned>(B));
  rel_pos_kernel<<<grid, kRW * 32, smem, l.stream>>>(p);
  check_launch(op);
}

}  // namespace encore::cuda
