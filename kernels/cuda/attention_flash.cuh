// Fused flash-style attention on tensor cores with mma.sync (f16/bf16 in, f32 accumulation; any
// sm_80+ device; Path::tensor_core), included by attention.cu only. AttnParams, the head mapping
// and the mask semantics are in attention_common.cuh, shared with the CUDA-core kernel and the
// wgmma kernel (attention_hopper.cu), which replaces this one on sm_90 where it is eligible.
//
// Algorithm (FlashAttention-2 style): a block of 4 warps owns 64 query rows of one (batch, output
// head); each warp owns 16 rows. Key/value tiles of 64 rows stream through shared memory (cp.async,
// double-buffered: tile i+1 loads while tile i computes). Per tile, a warp computes S = Q K^T with
// mma.sync m16n8k16 (Q fragments stay in registers for the whole pass), masks and scales S in
// registers, runs the online softmax (running max m, running sum l per row), converts P to 16-bit
// in registers (the accumulator layout of S is the A-operand layout of P, so P never touches
// shared memory) and accumulates O += P V with V fragments from ldmatrix.trans.
//
// Fragment layouts (PTX ISA, mma.m16n8k16; g = lane / 4, t = lane % 4):
//   A 16x16 (4 regs): a0 (row g, cols 2t..2t+1), a1 (row g+8, same cols), a2/a3 (cols + 8)
//   B 16x8  (2 regs): b0 (rows 2t..2t+1, col g), b1 (rows + 8)
//   C 16x8  (4 f32):  c0,c1 (row g, cols 2t..2t+1), c2,c3 (row g+8)
// ldmatrix.x4: lane l addresses row (l % 8) of 8x8 matrix l / 8; without .trans register r_i holds
// M_i[g][2t..2t+1], with .trans M_i[2t..2t+1][g].
//
// Head dims: DP (a multiple of 16) is the padded width of the shared-memory rows; D <= DP, D % 8 == 0.
// Columns D..DP-1 are zero-filled, so padded k-steps add nothing and padded output columns are
// never stored; k-steps and output tiles wholly beyond D are skipped at run time.
#pragma once

#include <cstdint>

#include "kernels/common/softmax_sum.h"
#include "kernels/cuda/attention_common.cuh"

namespace encore::cuda::attn {

// ---- PTX wrappers ------------------------------------------------------------------------------------

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// 16 bytes global -> shared, asynchronously; zero-filled (nothing read) when !valid.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

template <typename T> struct Mma;
template <> struct Mma<__half> {
  static __device__ __forceinline__ void run(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ unsigned pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
  }
};
template <> struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ unsigned pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
  }
};

// ---- the kernel ----------------------------------------------------------------------------------------

inline constexpr int kTcRows = 64;     // query rows per block (16 per warp)
inline constexpr int kTcKeys = 64;     // keys per tile
inline constexpr int kTcThreads = 128;

/// Dynamic shared memory of attn_tc_kernel<DP, T>: Q tile + two K and two V tiles.
template <int DP>
constexpr std::size_t tc_smem_bytes() {
  return static_cast<std::size_t>(kTcRows + 4 * kTcKeys) * (DP + 8) * 2;
}

/// Rows [r0, r0 + R) of a [n, D] matrix (row stride st elements) -> shared rows of DP + 8 elements.
/// Rows >= nrows and columns >= D are zero-filled.
template <int DP, typename T>
__device__ __forceinline__ void load_tile(T* s, const T* g, i64 st, i64 r0, i64 nrows, int D, int R) {
  constexpr int kChunks = DP / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < R * kChunks; c += kTcThreads) {
    const int r = c / kChunks, d = (c % kChunks) * 8;
    const i64 row = r0 + r;
    const bool ok = row < nrows && d < D;
    cp_async16(s + r * (DP + 8) + d, ok ? g + row * st + d : g, ok);
  }
}

template <int DP, typename T>
__global__ void __launch_bounds__(kTcThreads) attn_tc_kernel(const AttnParams p) {
  constexpr int LD = DP + 8;  // +16 bytes per row: conflict-free ldmatrix
  constexpr int KD = DP / 16, ND = DP / 8, NT = kTcKeys / 8;
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  pdl::begin();
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kTcRows * LD;       // [2][kTcKeys][LD]
  T* sV = sK + 2 * kTcKeys * LD;   // [2][kTcKeys][LD]

  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, t4 = lane & 3;
  const i64 b = blockIdx.z, q0 = static_cast<i64>(blockIdx.x) * kTcRows;
  const int oh = blockIdx.y;
  int qh, kvh;
  map_heads(p, oh, qh, kvh);
  const T* qg = static_cast<const T*>(p.q) + b * p.q_sb + static_cast<i64>(qh) * p.D;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_sb + static_cast<i64>(kvh) * p.D;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_sb + static_cast<i64>(kvh) * p.D;

  load_tile<DP>(sQ, qg, p.q_st, q0, p.Tq, p.D, kTcRows);
  load_tile<DP>(sK, kg, p.k_st, 0, p.Tk, p.D, kTcKeys);
  load_tile<DP>(sV, vg, p.v_st, 0, p.Tk, p.D, kTcKeys);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();

  // This lane's ldmatrix row/column offsets (see the layouts above).
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;  // A: Q, and V (.trans)
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 8;  // B: K
  unsigned qf[KD][4];
#pragma unroll
  for (int kk = 0; kk < KD; ++kk) ldsm_x4(qf[kk], sQ + (w * 16 + a_row) * LD + kk * 16 + a_col);

  float o[ND][4];
#pragma unroll
  for (int i = 0; i < ND; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const i64 row0 = q0 + w * 16 + (lane >> 2), row1 = row0 + 8;
  const i64 last_visible = min(q0 + kTcRows, p.Tq) - 1 + p.causal_offset;
  const int ntiles = static_cast<int>((p.Tk + kTcKeys - 1) / kTcKeys);

  for (int it = 0; it < ntiles; ++it) {
    const i64 j0 = static_cast<i64>(it) * kTcKeys;
    if (p.causal && j0 > last_visible) {
      // Every row masks the rest. Masked keys add exp(fill - m) == 0 once a row has seen a real
      // score; a row that saw only masked ones (fill = lowest) still averages all keys uniformly.
      if (p.fill_neg_inf) break;
      const bool live = (row0 >= p.Tq || m[0] > -1e30f) && (row1 >= p.Tq || m[1] > -1e30f);
      if (__syncthreads_and(live)) break;
    }
    const int buf = it & 1;
    if (it + 1 < ntiles) {  // prefetch the next tile into the other buffer
      load_tile<DP>(sK + (buf ^ 1) * kTcKeys * LD, kg, p.k_st, j0 + kTcKeys, p.Tk, p.D, kTcKeys);
      load_tile<DP>(sV + (buf ^ 1) * kTcKeys * LD, vg, p.v_st, j0 + kTcKeys, p.Tk, p.D, kTcKeys);
    }
    cp_async_commit();
    const T* cK = sK + buf * kTcKeys * LD;
    const T* cV = sV + buf * kTcKeys * LD;

    float s[NT][4];
#pragma unroll
    for (int i = 0; i < NT; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
      if (kk * 16 >= p.D) continue;
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        unsigned kb[4];
        ldsm_x4(kb, cK + (np * 16 + b_row) * LD + kk * 16 + b_col);
        Mma<T>::run(s[2 * np], qf[kk], kb[0], kb[1]);
        Mma<T>::run(s[2 * np + 1], qf[kk], kb[2], kb[3]);
      }
    }

    // Scale and mask; per-element mask work only where a mask or the end of the keys can apply.
    const bool masked = p.kpm != nullptr || p.add != nullptr || j0 + kTcKeys > p.Tk ||
                        (p.causal && j0 + kTcKeys - 1 > q0 + w * 16 + p.causal_offset);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] *= p.scale;
        if (masked) {
          const i64 qi = e < 2 ? row0 : row1, kj = j0 + nt * 8 + 2 * t4 + (e & 1);
          if (kj >= p.Tk) s[nt][e] = -INFINITY;  // past the end: no contribution at all
          else if (qi < p.Tq) s[nt][e] = mask_score(p, s[nt][e], b, qh, oh, qi, kj);
        }
      }
    }
    // The online softmax; s becomes the probabilities of this tile.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[h], mx);
      // Only -inf so far: subtract 0, so -inf scores give 0 and NaN scores stay NaN (a row of NaN
      // scores has no finite max: fmaxf drops NaN).
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f((m[h] - m_use) * kLog2e);
      float rs = 0.0f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float pe = exp2f((s[nt][2 * h + e] - m_use) * kLog2e);
          s[nt][2 * h + e] = pe;
          rs += pe;
        }
      }
      l[h] = l[h] * alpha + rs;  // per-lane partial sum; the quad is summed at the end
      m[h] = m_new;
#pragma unroll
      for (int i = 0; i < ND; ++i) o[i][2 * h] *= alpha, o[i][2 * h + 1] *= alpha;
    }

    // O += P V: the S accumulators of key tiles 2c, 2c+1 are the A fragment of key chunk c.
#pragma unroll
    for (int c = 0; c < kTcKeys / 16; ++c) {
      const unsigned pa[4] = {Mma<T>::pack(s[2 * c][0], s[2 * c][1]), Mma<T>::pack(s[2 * c][2], s[2 * c][3]),
                              Mma<T>::pack(s[2 * c + 1][0], s[2 * c + 1][1]),
                              Mma<T>::pack(s[2 * c + 1][2], s[2 * c + 1][3])};
#pragma unroll
      for (int dp = 0; dp < DP / 16; ++dp) {
        if (dp * 16 >= p.D) continue;
        unsigned vb[4];
        ldsm_x4_trans(vb, cV + (c * 16 + a_row) * LD + dp * 16 + a_col);
        Mma<T>::run(o[2 * dp], pa, vb[0], vb[1]);
        Mma<T>::run(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
    cp_async_wait_all();
    __syncthreads();  // the next tile is in; this one may be overwritten
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float lt = l[h];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
    const i64 qi = h ? row1 : row0;
    if (qi >= p.Tq) continue;
    const float inv = softmax_row_scale(lt);
    const i64 base = ((b * p.Tq + qi) * p.Ho + oh) * p.D;
#pragma unroll
    for (int i = 0; i < ND; ++i) {
      const int d = i * 8 + 2 * t4;
      if (d >= p.D) continue;
      kc::store_f(p.y, base + d, p.dt_out, o[i][2 * h] * inv);
      kc::store_f(p.y, base + d + 1, p.dt_out, o[i][2 * h + 1] * inv);
    }
  }
}

}  // namespace encore::cuda::attn
