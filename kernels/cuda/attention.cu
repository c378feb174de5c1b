// Scaled dot-product attention on CUDA: validation, dispatch, and the CUDA-core kernel.
//
// Three kernels share AttnParams and the mask semantics (attention_common.cuh):
// - attn_hopper_kernel<DP, T> (attention_hopper.cu; wgmma + TMA, built for sm_90a only): f16/bf16
//   with D in {64, 128}, 16-byte aligned rows; taken on sm_90 devices when the build has it.
// - attn_tc_kernel<DP, T> (attention_flash.cuh; mma.sync): f16/bf16 with D % 8 == 0 and D <= 128,
//   rows 16-byte aligned (true for any slice of a fused QKV projection with D % 8 == 0).
//   Instantiated for DP = 64 (D <= 64) and DP = 128 (64 < D <= 128) times {f16, bf16}.
// - attn_generic_kernel (CUDA cores, f32 math): every float dtype, any strides, D <= 256. One
//   instantiation (dtypes decoded at run time). Used for f32 and whatever the others cannot take.
//
// Masking semantics match the CPU kernel (kernels/cpu/attention.cpp): causal and key-padding masks
// replace the scaled score by the fill (float lowest or -inf), an additive mask is then added in
// f32; MaskFill::lowest makes a fully masked row uniform over all keys, a row of only -inf outputs
// zeros. Softmax is in f32 whatever the input dtype.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "kernels/cuda/attention_flash.cuh"
#include "kernels/cuda/attention_internal.h"

namespace encore::cuda {

using namespace kc;

namespace attn {
namespace {

constexpr int kGW = 4;              // warps per block
constexpr int kGR = 4;              // query rows per warp
constexpr int kGQ = kGW * kGR;      // query rows per block
constexpr int kGN = 32;             // keys per tile (one per lane)
constexpr int kGMaxI = 8;           // output columns per lane: D <= 256
constexpr int kGMaxD = 32 * kGMaxI;

std::size_t generic_smem_bytes(int D) {
  return sizeof(float) * (static_cast<std::size_t>(kGQ) * D + static_cast<std::size_t>(kGN) * (D + 1) +
                          static_cast<std::size_t>(kGN) * D + static_cast<std::size_t>(kGQ) * kGN);
}

// A block: 16 query rows of one (batch, output head), 4 per warp. Per tile of 32 keys, lane j scores
// key j against the warp's 4 rows (K rows padded to D + 1 floats: conflict-free), the warp runs the
// online softmax with shuffles, and each lane accumulates output columns lane, lane + 32, ...
__global__ void __launch_bounds__(kGW * 32) attn_generic_kernel(const AttnParams p) {
  extern __shared__ float sm[];
  pdl::begin();
  const int D = p.D;
  float* sQ = sm;                  // [kGQ][D], pre-scaled
  float* sK = sQ + kGQ * D;        // [kGN][D + 1]
  float* sV = sK + kGN * (D + 1);  // [kGN][D]
  float* sP = sV + kGN * D;        // [kGQ][kGN]
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const i64 b = blockIdx.z, q0 = static_cast<i64>(blockIdx.x) * kGQ;
  const int oh = blockIdx.y;
  int qh, kvh;
  map_heads(p, oh, qh, kvh);
  const i64 qb = b * p.q_sb + static_cast<i64>(qh) * D * p.q_se;
  const i64 kb = b * p.k_sb + static_cast<i64>(kvh) * D * p.k_se;
  const i64 vb = b * p.v_sb + static_cast<i64>(kvh) * D * p.v_se;
  for (int e = threadIdx.x; e < kGQ * D; e += blockDim.x) {
    const int r = e / D, d = e % D;
    const i64 qi = q0 + r;
    sQ[e] = qi < p.Tq ? load_f(p.q, qb + qi * p.q_st + d * p.q_se, p.dt_in) * p.scale : 0.0f;
  }
  float m[kGR], l[kGR], o[kGR][kGMaxI];
#pragma unroll
  for (int r = 0; r < kGR; ++r) {
    m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kGMaxI; ++i) o[r][i] = 0.0f;
  }
  const i64 last_visible = min(q0 + kGQ, p.Tq) - 1 + p.causal_offset;
  for (i64 j0 = 0; j0 < p.Tk; j0 += kGN) {
    if (p.causal && j0 > last_visible) {  // see attn_tc_kernel
      if (p.fill_neg_inf) break;
      bool live = true;
#pragma unroll
      for (int r = 0; r < kGR; ++r) live = live && (q0 + w * kGR + r >= p.Tq || m[r] > -1e30f);
      if (__syncthreads_and(live)) break;
    }
    __syncthreads();  // the previous tile is consumed
    for (int e = threadIdx.x; e < kGN * D; e += blockDim.x) {
      const int j = e / D, d = e % D;
      const i64 kj = j0 + j;
      const bool ok = kj < p.Tk;
      sK[j * (D + 1) + d] = ok ? load_f(p.k, kb + kj * p.k_st + d * p.k_se, p.dt_in) : 0.0f;
      sV[j * D + d] = ok ? load_f(p.v, vb + kj * p.v_st + d * p.v_se, p.dt_in) : 0.0f;
    }
    __syncthreads();
    float acc[kGR] = {};
    const float* kr = sK + lane * (D + 1);
    const float* qr = sQ + w * kGR * D;
    for (int d = 0; d < D; ++d) {
      const float kd = kr[d];
#pragma unroll
      for (int r = 0; r < kGR; ++r) acc[r] += qr[r * D + d] * kd;
    }
    const i64 kj = j0 + lane;
#pragma unroll
    for (int r = 0; r < kGR; ++r) {
      const i64 qi = q0 + w * kGR + r;
      float s = -INFINITY;  // past the end: no contribution at all
      if (kj < p.Tk) s = qi < p.Tq ? mask_score(p, acc[r], b, qh, oh, qi, kj) : acc[r];
      const float m_new = fmaxf(m[r], warp_max(s));
      // Only -inf so far: subtract 0, so -inf scores give 0 and NaN scores stay NaN (a row of NaN
      // scores has no finite max: fmaxf drops NaN).
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = expf(m[r] - m_use), pj = expf(s - m_use);
      l[r] = l[r] * alpha + warp_sum(pj);
      m[r] = m_new;
      sP[(w * kGR + r) * kGN + lane] = pj;
#pragma unroll
      for (int i = 0; i < kGMaxI; ++i) o[r][i] *= alpha;
    }
    __syncwarp();
    const int nj = static_cast<int>(min(static_cast<i64>(kGN), p.Tk - j0));
    for (int j = 0; j < nj; ++j) {
      float pr[kGR];
#pragma unroll
      for (int r = 0; r < kGR; ++r) pr[r] = sP[(w * kGR + r) * kGN + j];
      const float* vr = sV + j * D;
#pragma unroll
      for (int i = 0; i < kGMaxI; ++i) {
        const int d = lane + 32 * i;
        if (d < D) {
          const float vv = vr[d];
#pragma unroll
          for (int r = 0; r < kGR; ++r) o[r][i] += pr[r] * vv;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kGR; ++r) {
    const i64 qi = q0 + w * kGR + r;
    if (qi >= p.Tq) continue;
    const float inv = softmax_row_scale(l[r]);
    const i64 base = ((b * p.Tq + qi) * p.Ho + oh) * D;
#pragma unroll
    for (int i = 0; i < kGMaxI; ++i) {
      const int d = lane + 32 * i;
      if (d < D) store_f(p.y, base + d, p.dt_out, o[r][i] * inv);
    }
  }
}

template <int DP, typename T>
void launch_tc(const AttnParams& p, bool pdl, cudaStream_t stream) {
  const std::size_t smem = tc_smem_bytes<DP>();
  allow_smem(attn_tc_kernel<DP, T>, smem);
  const dim3 grid(static_cast<unsigned>((p.Tq + kTcRows - 1) / kTcRows), static_cast<unsigned>(p.Ho),
                  static_cast<unsigned>(p.B));
  check_cuda(pdl::launch(pdl, attn_tc_kernel<DP, T>, grid, dim3(kTcThreads), smem, stream, p), "attention (tensor cores)");
}

bool row_aligned16(const Tensor& t) {
  return reinterpret_cast<std::uintptr_t>(t.data()) % 16 == 0 && t.strides()[0] % 8 == 0 && t.strides()[1] % 8 == 0;
}

}  // namespace

void attention_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const AttentionAttrs& attrs,
                    const Tensor& y, const CudaContext& ctx, Path path) {
  const char* op = "attention";
  check_float(op, "q", q);
  check_float(op, "k", k);
  check_float(op, "v", v);
  check_float(op, "output", y);
  ENCORE_CU_CHECK(q.rank() == 3 && k.rank() == 3 && v.rank() == 3, invalid_argument, "attention: q ",
                  q.shape().str(), ", k ", k.shape().str(), ", v ", v.shape().str(), " must all be [B, T, H*D]");
  ENCORE_CU_CHECK(k.shape() == v.shape(), invalid_argument, "attention: k ", k.shape().str(), " and v ",
                  v.shape().str(), " must have the same shape");
  ENCORE_CU_CHECK(q.dim(0) == k.dim(0), invalid_argument, "attention: batch of q ", q.shape().str(),
                  " differs from k ", k.shape().str());
  ENCORE_CU_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), invalid_argument,
                  "attention: q, k, v must have one dtype (got ", dtype_name(q.dtype()), ", ", dtype_name(k.dtype()),
                  ", ", dtype_name(v.dtype()), ")");
  const int Hq = attrs.num_heads;
  const int Hkv = attrs.num_kv_heads == 0 ? Hq : attrs.num_kv_heads;
  ENCORE_CU_CHECK(Hq >= 1 && Hkv >= 1, invalid_argument, "attention: num_heads ", Hq, " and num_kv_heads ", Hkv,
                  " must be >= 1");
  ENCORE_CU_CHECK(Hq % Hkv == 0 || Hkv % Hq == 0, invalid_argument, "attention: num_heads ", Hq,
                  " and num_kv_heads ", Hkv, " must divide one another (q ", q.shape().str(), ", k ",
                  k.shape().str(), ")");
  const i64 qw = q.dim(2), kw = k.dim(2);
  const i64 D = attrs.head_dim > 0 ? attrs.head_dim : qw / Hq;
  ENCORE_CU_CHECK(D >= 1 && qw == Hq * D && kw == Hkv * D, invalid_argument,
                  "attention: head dim mismatch: q ", q.shape().str(), " should be [B, Tq, ", Hq, "*D] and k ",
                  k.shape().str(), " [B, Tk, ", Hkv, "*D] with D = ", D);
  ENCORE_CU_CHECK(D <= kGMaxD, unsupported, "attention: head dim ", D, " is above the CUDA kernel's ", kGMaxD);
  const i64 B = q.dim(0), Tq = q.dim(1), Tk = k.dim(1);
  const int Ho = std::max(Hq, Hkv);
  const Shape y_shape{B, Tq, Ho * D};
  check_shape(op, "output", y, y_shape);
  ENCORE_CU_CHECK(y.is_contiguous(), invalid_argument, "attention: output ", y.shape().str(), " must be contiguous");
  ENCORE_CU_CHECK(B <= 65535 && Ho <= 65535, unsupported, "attention: batch ", B, " or heads ", Ho,
                  " beyond the CUDA grid limit of 65535");

  AttnParams p;
  if (attrs.mask == MaskKind::none) {
    ENCORE_CU_CHECK(!mask.defined(), invalid_argument, "attention: a mask ", mask.shape().str(),
                    " was given but attrs.mask is none");
  } else {
    ENCORE_CU_CHECK(mask.defined(), invalid_argument, "attention: attrs.mask needs a mask tensor");
    check_dev(op, "mask", mask);
  }
  if (attrs.mask == MaskKind::key_padding) {
    ENCORE_CU_CHECK(mask.dtype() == DType::Bool || mask.dtype() == DType::U8, invalid_argument,
                    "attention: a key padding mask must be bool or u8, got ", dtype_name(mask.dtype()));
    ENCORE_CU_CHECK(mask.rank() == 2 && mask.dim(0) == B && mask.dim(1) == Tk, invalid_argument,
                    "attention: key padding mask is ", mask.shape().str(), ", expected [", B, ", ", Tk, "] for q ",
                    q.shape().str(), ", k ", k.shape().str());
    p.kpm = static_cast<const std::uint8_t*>(mask.data());
    p.kpm_sb = mask.strides()[0];
    p.kpm_st = mask.strides()[1];
  } else if (attrs.mask == MaskKind::additive) {
    ENCORE_CU_CHECK(is_floating(mask.dtype()), invalid_argument, "attention: an additive mask must be a float, got ",
                    dtype_name(mask.dtype()));
    const int r = mask.rank();
    const i64 Hm = r >= 3 ? mask.dim(r - 3) : 1;
    const bool by_out = Hm != Hq && Hm == Ho;
    const i64 full[4] = {B, by_out ? Ho : Hq, Tq, Tk};
    bool ok = r >= 1 && r <= 4;
    for (int i = 0; ok && i < r; ++i) ok = mask.dim(i) == 1 || mask.dim(i) == full[4 - r + i];
    ENCORE_CU_CHECK(ok, invalid_argument, "attention: additive mask ", mask.shape().str(),
                    " does not broadcast to [", B, ", ", Hq, ", ", Tq, ", ", Tk, "]");
    i64 st[4] = {0, 0, 0, 0};
    for (int i = 0; i < r; ++i) st[4 - r + i] = mask.dim(i) == 1 ? 0 : mask.strides()[i];
    p.add = mask.data();
    p.add_dt = code(mask.dtype());
    p.add_sb = st[0], p.add_sh = st[1], p.add_sq = st[2], p.add_sk = st[3];
    p.add_by_out = by_out;
  }

  if (B == 0 || Tq == 0) return;
  Launch l(ctx, op);
  if (Tk == 0) {  // softmax over no keys: the output is defined as zeros
    check_cuda(cudaMemsetAsync(y.data(), 0, y.nbytes(), l.stream), "attention: cudaMemsetAsync");
    return;
  }
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.y = y.data();
  p.dt_in = code(q.dtype()), p.dt_out = code(y.dtype());
  p.B = B, p.Tq = Tq, p.Tk = Tk;
  p.Hq = Hq, p.Hkv = Hkv, p.Ho = Ho, p.D = static_cast<int>(D);
  p.q_sb = q.strides()[0], p.q_st = q.strides()[1], p.q_se = q.strides()[2];
  p.k_sb = k.strides()[0], p.k_st = k.strides()[1], p.k_se = k.strides()[2];
  p.v_sb = v.strides()[0], p.v_st = v.strides()[1], p.v_se = v.strides()[2];
  p.scale = attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(D));
  p.causal = attrs.causal;
  p.causal_offset = Tk - Tq;
  p.fill_neg_inf = attrs.fill == MaskFill::neg_infinity;
  p.fill = p.fill_neg_inf ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::lowest();

  const bool tc_ok = (q.dtype() == DType::F16 || q.dtype() == DType::BF16) && D % 8 == 0 && D <= 128 &&
                     (p.q_se == 1 || qw == 1) && (p.k_se == 1 || kw == 1) && (p.v_se == 1 || kw == 1) &&
                     row_aligned16(q) && row_aligned16(k) && row_aligned16(v) &&
                     reinterpret_cast<std::uintptr_t>(y.data()) % 16 == 0;  // paired 16-bit stores
  ENCORE_CU_CHECK(path != Path::tensor_core || tc_ok, unsupported,
                  "attention: the tensor-core kernel cannot take this problem (dtype ", dtype_name(q.dtype()),
                  ", head dim ", D, ", strides or alignment)");
  if (tc_ok && (path == Path::automatic || path == Path::hopper)) {
    const char* why = "this build has no sm_90a code (nvcc < 12)";
#if defined(ENCORE_ATTN_SM90A)
    if (launch_hopper(p, l.rt.sm(), l.rt.multiprocessors(), l.rt.programmatic_launch(), l.stream, &why)) return;
#endif
    ENCORE_CU_CHECK(path != Path::hopper, unsupported, "attention: the wgmma kernel cannot take this problem: ",
                    why);
  }
  ENCORE_CU_CHECK(path != Path::hopper, unsupported,
                  "attention: the wgmma kernel cannot take this problem (dtype ", dtype_name(q.dtype()),
                  ", head dim ", D, ", strides or alignment)");
  if (tc_ok && path != Path::generic) {
    const bool bf16 = q.dtype() == DType::BF16;
    const bool pdl = l.rt.programmatic_launch();
    if (D <= 64) bf16 ? launch_tc<64, __nv_bfloat16>(p, pdl, l.stream) : launch_tc<64, __half>(p, pdl, l.stream);
    else bf16 ? launch_tc<128, __nv_bfloat16>(p, pdl, l.stream) : launch_tc<128, __half>(p, pdl, l.stream);
    return;
  }
  const std::size_t smem = generic_smem_bytes(p.D);
  allow_smem(attn_generic_kernel, smem);
  const dim3 grid(static_cast<unsigned>((Tq + kGQ - 1) / kGQ), static_cast<unsigned>(Ho), static_cast<unsigned>(B));
  l.kernel("attention", attn_generic_kernel, grid, kGW * 32, smem, p);
}

namespace {

/// ENCORE_ATTN_HOPPER_SHAPE's grammar (attention_internal.h); -1 when `s` does not follow it.
int parse_hopper_shape(const std::string& s) {
  if (s.empty()) return 0;
  if (s[0] != '1' && s[0] != '2') return -1;
  int code = s[0] - '0', per_sm = 1;
  bool persistent = false;
  for (std::size_t i = 1; i < s.size();) {
    if (s.compare(i, 2, "x2") == 0) per_sm = 2, i += 2;
    else if (s.compare(i, 2, "+p") == 0) persistent = true, i += 2;
    else return -1;
  }
  return code | per_sm << 2 | (persistent ? 1 << 4 : 0);
}

std::atomic<int>& shape_override() {
  static std::atomic<int> code{[] {
    const char* e = std::getenv("ENCORE_ATTN_HOPPER_SHAPE");
    const int c = e != nullptr ? parse_hopper_shape(e) : 0;
    return c < 0 ? 0 : c;  // an unreadable setting of the exploration knob is ignored
  }()};
  return code;
}

}  // namespace

int hopper_shape_override() { return shape_override().load(std::memory_order_relaxed); }

void set_hopper_shape_for_testing(const std::string& shape) {
  const int code = parse_hopper_shape(shape);
  ENCORE_CU_CHECK(code >= 0, invalid_argument, "set_hopper_shape_for_testing: \"", shape,
                  "\" is not a launch shape (expected \"\", or \"1\" or \"2\" followed by any of \"x2\", \"+p\")");
  shape_override().store(code, std::memory_order_relaxed);
}

bool hopper_available(const CudaContext& ctx) {
#if defined(ENCORE_ATTN_SM90A)
  return ctx.runtime != nullptr && ctx.runtime->sm() == 90;
#else
  (void)ctx;
  return false;
#endif
}

}  // namespace attn

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const AttentionAttrs& attrs,
               const Tensor& y, const CudaContext& ctx) {
  attn::attention_impl(q, k, v, mask, attrs, y, ctx, attn::Path::automatic);
}

}  // namespace encore::cuda
