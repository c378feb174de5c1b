// The pieces shared by the lean (stream-K) and split decode attention kernels: parameters, the
// per-segment loops (tensor cores and CUDA cores), the merge of warp states inside a CTA, and the
// ordered merge of partial results across CTAs. Included by decode_attention.cu only.
//
// A *segment* is keys [k0, k1) of one (sequence b, kv head h, row block mt). Its RB query rows are
// the packed GQA group (row r: token r / g, query head h*g + r % g), so each K/V byte is read once.
// The CTA's warps take interleaved steps of the segment (warp w: steps w, w + NW, ...), each warp
// streaming its own keys through a private cp.async pipeline (no CTA barrier in the loop), with its
// own online-softmax state; the warp states are then merged in warp order (deterministic).
//
// Softmax state is kept in the log2 domain (scores times scale * log2 e): m = running max, l =
// running sum of exp2(s - m), O = unnormalised output. A partial slot holds m[RB], l[RB], O[RB][D].
#pragma once

#include <cstdint>

#include "kernels/cuda/attention_flash.cuh"  // cp.async / ldmatrix / mma wrappers
#include "kernels/cuda/kernel_common.cuh"
#include "kernels/cuda/lean_schedule_device.cuh"

namespace encore::cuda::dec {

using kc::i64;

enum : int { kModeLean = 0, kModeSplit = 1 };
inline constexpr int kMaxWarps = 8;
inline constexpr int kMaxWorkers = 4096;  // flag capacity: two flags per lean worker

struct Params {
  const void* q = nullptr;  // [B, Tq, Hq*D], any strides
  i64 q_sb = 0, q_st = 0, q_se = 1;
  int q_dt = 0;
  const void* k = nullptr;  // [num_blocks, Hkv, bs, D], any strides (tensor cores: last dim contiguous)
  const void* v = nullptr;
  i64 k_sn = 0, k_sh = 0, k_st = 0, k_se = 1, v_sn = 0, v_sh = 0, v_st = 0, v_se = 1;
  i64 num_blocks = 0;
  const std::int32_t* table = nullptr;  // [B, max_blocks]
  i64 tb_s0 = 0, tb_s1 = 1;
  const std::int32_t* lens = nullptr;  // [B]
  i64 len_s = 1;
  void* y = nullptr;  // contiguous [B, Tq, Hq*D]
  int y_dt = 0;
  int B = 0, Tq = 1, Hq = 1, Hkv = 1, group = 1, D = 0, rows = 1, MT = 1, Hv = 1, bs = 1;
  int bs_shift = -1;  // log2(bs) when bs is a power of two (a shift instead of a division per step)
  i64 tile = 128, capacity = 0;  // tokens per tile; max_blocks * bs
  float scale_log2 = 1.0f;
  int mode = kModeLean, G = 1, splits = 1;
  float* ws = nullptr;  // partial slots
  i64 slot_floats = 0;
  unsigned* counters = nullptr;                                // [0] epoch, [1] CTAs done; then the flags
  unsigned* flags = nullptr;                                   // [2 * kMaxWorkers]
  unsigned* head_counters = nullptr;  // split with the combine fused: [B * Hv] pieces finished, 0 between launches
  int cluster = 0;        // split: > 1 when a head's pieces form one thread-block cluster and merge there
  int off_cscratch = 0;   // cluster merge: its scratch (bytes; the pieces' states are read remotely)
  int nw = 1;                                                  // warps per CTA
  int off_q = 0, off_stat = 0, off_warps = 0, warp_bytes = 0;  // shared-memory layout (bytes)
};

// ---- small device helpers ---------------------------------------------------------------------

__device__ __forceinline__ i64 seq_length(const Params& p, int b) {
  return clamp_length(p.lens[b * p.len_s], p.capacity);
}
/// Rows held by row block mt.
__device__ __forceinline__ int block_rows(const Params& p, int mt, int rb) { return min(rb, p.rows - mt * rb); }
/// Last key visible to packed row `row` (token row / g sits at position len - Tq + token).
__device__ __forceinline__ i64 last_visible(const Params& p, i64 len, int row) { return len - p.Tq + row / p.group; }
/// Output offset of (b, kv head h, packed row, d).
__device__ __forceinline__ i64 y_offset(const Params& p, int b, int h, int row, int d) {
  const int t = row / p.group, qh = h * p.group + row % p.group;
  return ((static_cast<i64>(b) * p.Tq + t) * p.Hq + qh) * p.D + d;
}
/// Cache offsets (elements, head excluded) of key j of sequence b; false for a bad block id.
/// 32-bit division: positions are below 2^31 (lengths are i32).
__device__ __forceinline__ bool key_offsets(const Params& p, int b, i64 j, i64& ko, i64& vo) {
  const unsigned ju = static_cast<unsigned>(j), bs = static_cast<unsigned>(p.bs), bi = ju / bs;
  const i64 blk = __ldg(p.table + b * p.tb_s0 + static_cast<i64>(bi) * p.tb_s1), off = ju - bi * bs;
  ko = blk * p.k_sn + off * p.k_st;
  vo = blk * p.v_sn + off * p.v_st;
  return blk >= 0 && blk < p.num_blocks;
}

template <int RB>
struct Stat {  // per-row statistics of the CTA state, in shared memory
  float m[RB], l[RB], w[kMaxWarps][RB];
};

/// Base of warp w's area; after a segment its first floats hold m[RB], l[RB], O[RB][D].
__device__ __forceinline__ float* warp_state(const Params& p, unsigned char* smem, int w) {
  return reinterpret_cast<float*>(smem + p.off_warps + static_cast<i64>(w) * p.warp_bytes);
}

// ---- tensor-core segment loop (f16/bf16, D = 64 or 128) ------------------------------------------

template <typename T, int D>
struct TcCore {
  static constexpr int RB = 16;                // rows: one m16 fragment
  static constexpr int NW = 8;                 // warps
  static constexpr int NK = 16;                // keys per warp step
  static constexpr int LD = D + 8;             // padded smem row: conflict-free ldmatrix
  static constexpr int NS = D == 128 ? 3 : 5;  // pipeline stages per warp (~25 KB in flight per warp)
  static constexpr int kStage = 2 * NK * LD;   // elements: K rows then V rows
  static constexpr int kWarpBytes = (NS * kStage * 2 > (2 * RB + RB * D) * 4) ? NS * kStage * 2 : (2 * RB + RB * D) * 4;
  static constexpr int kQBytes = RB * LD * 2;

  static __device__ void load_q(const Params& p, unsigned char* smem, int b, int h, int mt) {
    T* sq = reinterpret_cast<T*>(smem + p.off_q);
    for (int e = threadIdx.x; e < RB * D; e += blockDim.x) {
      const int r = e / D, d = e % D, row = mt * RB + r;
      float v = 0.0f;
      if (row < p.rows) {
        const int t = row / p.group, qh = h * p.group + row % p.group;
        v = kc::load_f(p.q, b * p.q_sb + t * p.q_st + (static_cast<i64>(qh) * D + d) * p.q_se, p.q_dt);
      }
      sq[r * LD + d] = static_cast<T>(v);
    }
  }

  // Copies warp step `step` (NK keys from k0 + step * NK) into stage buffer `st` (zeros past k1).
  static __device__ __forceinline__ void load_step(const Params& p, T* st, const T* kh, const T* vh, int b, i64 j0,
                                                   i64 k1) {
    constexpr int kChunks = D / 8;          // 16-byte chunks per row
    constexpr int kRowsPerIt = 32 / kChunks;  // rows one warp-wide copy covers
    const int lane = threadIdx.x & 31;
    // Fast path: all NK keys valid and inside one cache block (the usual case: block sizes are
    // multiples of 16 and steps start on multiples of 16), so one table lookup serves the step and
    // each lane's copies are a fixed stride apart. The per-key lookups below cost ~8x the
    // instructions, and the loop was bound on instruction issue (ncu, docs/benchmarks/decode_attention.md).
    const unsigned ju = static_cast<unsigned>(j0), bsu = static_cast<unsigned>(p.bs),
                   bi = p.bs_shift >= 0 ? ju >> p.bs_shift : ju / bsu, off = ju - bi * bsu;
    if (j0 + NK <= k1 && off + NK <= bsu) {
      const i64 blk = __ldg(p.table + b * p.tb_s0 + static_cast<i64>(bi) * p.tb_s1);
      if (blk >= 0 && blk < p.num_blocks) {
        const int r0 = lane / kChunks, col = (lane % kChunks) * 8;
        const T* ks = kh + blk * p.k_sn + (off + r0) * p.k_st + col;
        const T* vs = vh + blk * p.v_sn + (off + r0) * p.v_st + col;
        const i64 kstep = kRowsPerIt * p.k_st, vstep = kRowsPerIt * p.v_st;
#pragma unroll
        for (int it = 0; it < NK / kRowsPerIt; ++it) {
          const int r = r0 + it * kRowsPerIt;
          attn::cp_async16(st + r * LD + col, ks + it * kstep, true);
          attn::cp_async16(st + (NK + r) * LD + col, vs + it * vstep, true);
        }
        return;
      }
    }
#pragma unroll
    for (int it = 0; it < NK * kChunks / 32; ++it) {
      const int c = lane + 32 * it, r = c / kChunks, col = (c % kChunks) * 8;
      const i64 j = j0 + r;
      i64 ko = 0, vo = 0;
      const bool ok = j < k1 && key_offsets(p, b, j, ko, vo);
      attn::cp_async16(st + r * LD + col, ok ? kh + ko + col : kh, ok);
      attn::cp_async16(st + (NK + r) * LD + col, ok ? vh + vo + col : vh, ok);
    }
  }

  static __device__ __forceinline__ int warp_steps(i64 k0, i64 k1, int w) {
    const i64 nsteps = (k1 - k0 + NK - 1) / NK;
    return nsteps > w ? static_cast<int>((nsteps - 1 - w) / NW + 1) : 0;
  }

  /// Issues the first NS - 1 stages of this warp's pipeline (before the query load, so that the
  /// two latencies overlap). The warp's area must be free.
  static __device__ void prefetch(const Params& p, unsigned char* smem, int b, int h, i64 k0, i64 k1) {
    const int w = threadIdx.x >> 5, count = warp_steps(k0, k1, w);
    T* area = reinterpret_cast<T*>(smem + p.off_warps + w * kWarpBytes);
    const T* kh = static_cast<const T*>(p.k) + h * p.k_sh;
    const T* vh = static_cast<const T*>(p.v) + h * p.v_sh;
#pragma unroll
    for (int i = 0; i < NS - 1; ++i) {
      if (i < count) load_step(p, area + i * kStage, kh, vh, b, k0 + static_cast<i64>(w + NW * i) * NK, k1);
      attn::cp_async_commit();
    }
  }

  /// The segment loop; prefetch() for the same segment must have been issued by this warp.
  static __device__ void run(const Params& p, unsigned char* smem, int b, int h, int mt, i64 k0, i64 k1, i64 len) {
    constexpr int KD = D / 16, ND = D / 8;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, t4 = lane & 3;
    T* area = reinterpret_cast<T*>(smem + p.off_warps + w * kWarpBytes);
    const T* sq = reinterpret_cast<const T*>(smem + p.off_q);
    const T* kh = static_cast<const T*>(p.k) + h * p.k_sh;
    const T* vh = static_cast<const T*>(p.v) + h * p.v_sh;

    const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;  // A (Q) and V (.trans)
    const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 8;  // B (K)
    unsigned qf[KD][4];
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) attn::ldsm_x4(qf[kk], sq + a_row * LD + kk * 16 + a_col);

    // Causal limits of this lane's two rows (rows past p.rows compute on zero queries, never stored).
    const int r0 = mt * RB + (lane >> 2), r1 = r0 + 8;
    const i64 lim[2] = {r0 < p.rows ? last_visible(p, len, r0) : k1, r1 < p.rows ? last_visible(p, len, r1) : k1};
    const i64 min_lim = last_visible(p, len, mt * RB);  // smallest limit in the block
    const int count = warp_steps(k0, k1, w);
    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int i = 0; i < count; ++i) {
      if (i + NS - 1 < count)
        load_step(p, area + ((i + NS - 1) % NS) * kStage, kh, vh, b, k0 + static_cast<i64>(w + NW * (i + NS - 1)) * NK,
                  k1);
      attn::cp_async_commit();
      asm volatile("cp.async.wait_group %0;\n" ::"n"(NS - 1) : "memory");
      __syncwarp();
      const T* cK = area + (i % NS) * kStage;
      const T* cV = cK + NK * LD;
      const i64 j0 = k0 + static_cast<i64>(w + NW * i) * NK;

      float s[2][4] = {};
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        unsigned kb[4];
        attn::ldsm_x4(kb, cK + b_row * LD + kk * 16 + b_col);
        attn::Mma<T>::run(s[0], qf[kk], kb[0], kb[1]);
        attn::Mma<T>::run(s[1], qf[kk], kb[2], kb[3]);
      }
      const bool masked = j0 + NK > k1 || j0 + NK - 1 > min_lim;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[nt][e] *= p.scale_log2;
          if (masked) {
            const i64 j = j0 + nt * 8 + 2 * t4 + (e & 1);
            if (j >= k1 || j > lim[e >> 1]) s[nt][e] = -INFINITY;
          }
        }
      float alpha[2];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {  // online softmax of rows r0 (hh 0) and r1 (hh 1)
        float mx = fmaxf(fmaxf(s[0][2 * hh], s[0][2 * hh + 1]), fmaxf(s[1][2 * hh], s[1][2 * hh + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[hh], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // all masked so far: exp2(-inf) = 0
        alpha[hh] = exp2f(m[hh] - m_use);
        float rs = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pe = exp2f(s[nt][2 * hh + e] - m_use);
            s[nt][2 * hh + e] = pe;
            rs += pe;
          }
        l[hh] = l[hh] * alpha[hh] + rs;  // per-lane partial; the quad is summed at the end
        m[hh] = m_new;
      }
      // Once the running max settles, alpha is exactly 1 for every row, and rescaling O (ND x 4
      // multiplies per lane) would only multiply by 1: skipped, bitwise the same result.
      if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
        for (int d = 0; d < ND; ++d) o[d][0] *= alpha[0], o[d][1] *= alpha[0], o[d][2] *= alpha[1], o[d][3] *= alpha[1];
      }
      // O += P V: the S accumulators are the A fragment of this 16-key step.
      const unsigned pa[4] = {attn::Mma<T>::pack(s[0][0], s[0][1]), attn::Mma<T>::pack(s[0][2], s[0][3]),
                              attn::Mma<T>::pack(s[1][0], s[1][1]), attn::Mma<T>::pack(s[1][2], s[1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        unsigned vb[4];
        attn::ldsm_x4_trans(vb, cV + a_row * LD + dp * 16 + a_col);
        attn::Mma<T>::run(o[2 * dp], pa, vb[0], vb[1]);
        attn::Mma<T>::run(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
      __syncwarp();  // this stage may be refilled next iteration
    }
    attn::cp_async_wait_all();
    __syncwarp();
    // The warp's state over its own area (the stages are drained).
    float* ws = reinterpret_cast<float*>(area);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float lt = l[hh];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      const int r = (lane >> 2) + 8 * hh;
      if (t4 == 0) ws[r] = m[hh], ws[RB + r] = lt;
#pragma unroll
      for (int d = 0; d < ND; ++d)
        *reinterpret_cast<float2*>(ws + 2 * RB + r * D + d * 8 + 2 * t4) = make_float2(o[d][2 * hh], o[d][2 * hh + 1]);
    }
  }
};

// ---- CUDA-core segment loop (any float dtype, D <= 256, any strides) ----------------------------

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
struct GenericCore {
  static constexpr int RB = 8;                                     // rows per block
  static constexpr int NK = 32;                                    // keys per warp step: one per lane
  static constexpr int kMaxI = 8;                                  // output columns per lane: D <= 256
  static int warp_bytes(int D) { return NK * ((D | 1) + D) * 4; }  // K rows padded to an odd stride
  static int q_bytes(int D) { return RB * D * 4; }

  static __device__ void load_q(const Params& p, unsigned char* smem, int b, int h, int mt) {
    float* sq = reinterpret_cast<float*>(smem + p.off_q);
    for (int e = threadIdx.x; e < RB * p.D; e += blockDim.x) {
      const int r = e / p.D, d = e % p.D, row = mt * RB + r;
      float v = 0.0f;
      if (row < p.rows) {
        const int t = row / p.group, qh = h * p.group + row % p.group;
        v = kc::load_f(p.q, b * p.q_sb + t * p.q_st + (static_cast<i64>(qh) * p.D + d) * p.q_se, p.q_dt);
      }
      sq[e] = v * p.scale_log2;
    }
  }

  static __device__ void prefetch(const Params&, unsigned char*, int, int, i64, i64) {}

  static __device__ void run(const Params& p, unsigned char* smem, int b, int h, int mt, i64 k0, i64 k1, i64 len) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, D = p.D, KS = D | 1;
    float* sk = warp_state(p, smem, w);
    float* sv = sk + NK * KS;
    const float* sq = reinterpret_cast<const float*>(smem + p.off_q);
    const T* kh = static_cast<const T*>(p.k) + h * p.k_sh;
    const T* vh = static_cast<const T*>(p.v) + h * p.v_sh;
    const int nrow = block_rows(p, mt, RB);
    i64 lim[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) lim[r] = r < nrow ? last_visible(p, len, mt * RB + r) : -1;
    float m[RB], l[RB], o[RB][kMaxI];
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxI; ++i) o[r][i] = 0.0f;
    }
    for (i64 j0 = k0 + static_cast<i64>(w) * NK; j0 < k1; j0 += static_cast<i64>(p.nw) * NK) {
      for (int r = 0; r < NK; ++r) {  // K and V rows as f32 (coalesced along d)
        const i64 j = j0 + r;
        i64 ko = 0, vo = 0;
        const bool ok = j < k1 && key_offsets(p, b, j, ko, vo);
        for (int d = lane; d < D; d += 32) {
          sk[r * KS + d] = ok ? to_f(kh[ko + d * p.k_se]) : 0.0f;
          sv[r * D + d] = ok ? to_f(vh[vo + d * p.v_se]) : 0.0f;
        }
      }
      __syncwarp();
      const i64 j = j0 + lane;  // this lane's key
      float s[RB];
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        float acc = 0.0f;
        if (r < nrow)
          for (int d = 0; d < D; ++d) acc += sq[r * D + d] * sk[lane * KS + d];
        s[r] = (j < k1 && j <= lim[r]) ? acc : -INFINITY;
      }
      float alpha[RB];
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        if (r >= nrow) break;  // warp-uniform
        const float m_new = fmaxf(m[r], kc::warp_max(s[r]));
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        alpha[r] = exp2f(m[r] - m_use);
        s[r] = exp2f(s[r] - m_use);
        l[r] = l[r] * alpha[r] + kc::warp_sum(s[r]);
        m[r] = m_new;
#pragma unroll
        for (int i = 0; i < kMaxI; ++i) o[r][i] *= alpha[r];
      }
      for (int c = 0; c < NK; ++c) {
        float vv[kMaxI];
#pragma unroll
        for (int i = 0; i < kMaxI; ++i) vv[i] = lane + 32 * i < D ? sv[c * D + lane + 32 * i] : 0.0f;
#pragma unroll
        for (int r = 0; r < RB; ++r) {
          if (r >= nrow) break;
          const float pr = __shfl_sync(0xffffffffu, s[r], c);
#pragma unroll
          for (int i = 0; i < kMaxI; ++i) o[r][i] += pr * vv[i];
        }
      }
      __syncwarp();
    }
    float* ws = warp_state(p, smem, w);  // overwrites the K rows: all reads above are done
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      if (lane == 0) ws[r] = m[r], ws[RB + r] = l[r];
#pragma unroll
      for (int i = 0; i < kMaxI; ++i)
        if (lane + 32 * i < D) ws[2 * RB + r * D + lane + 32 * i] = o[r][i];
    }
  }
};

// ---- CTA state: merge of the warp states, output, partial slots ---------------------------------

/// Merges the warps' states in warp order into the Stat rows and warp 0's O (in place).
template <int RB>
__device__ void merge_warps(const Params& p, unsigned char* smem, int nrow) {
  Stat<RB>* st = reinterpret_cast<Stat<RB>*>(smem + p.off_stat);
  __syncthreads();
  for (int r = threadIdx.x; r < nrow; r += blockDim.x) {
    float M = -INFINITY;
    for (int w = 0; w < p.nw; ++w) M = fmaxf(M, warp_state(p, smem, w)[r]);
    float L = 0.0f;
    for (int w = 0; w < p.nw; ++w) {
      const float* ws = warp_state(p, smem, w);
      const float wt = ws[r] == -INFINITY ? 0.0f : exp2f(ws[r] - M);
      st->w[w][r] = wt;
      L += wt * ws[RB + r];
    }
    st->m[r] = M, st->l[r] = L;
  }
  __syncthreads();
  float* o0 = warp_state(p, smem, 0) + 2 * RB;
  for (int e = threadIdx.x; e < nrow * p.D; e += blockDim.x) {
    const int r = e / p.D;
    float acc = 0.0f;
    for (int w = 0; w < p.nw; ++w) acc += st->w[w][r] * warp_state(p, smem, w)[2 * RB + e];
    o0[e] = acc;
  }
  __syncthreads();
}

/// Writes O / l of the merged state as the output rows of (b, h, mt).
template <int RB>
__device__ void store_state(const Params& p, unsigned char* smem, int b, int h, int mt, int nrow) {
  const Stat<RB>* st = reinterpret_cast<const Stat<RB>*>(smem + p.off_stat);
  const float* o0 = warp_state(p, smem, 0) + 2 * RB;
  for (int e = threadIdx.x; e < nrow * p.D; e += blockDim.x) {
    const int r = e / p.D, d = e % p.D;
    const float L = st->l[r];
    kc::store_f(p.y, y_offset(p, b, h, mt * RB + r, d), p.y_dt, softmax_row_kept(L) ? o0[e] / L : 0.0f);
  }
}

/// Zeros the output rows of (b, h, mt) (a sequence without keys).
__device__ __forceinline__ void zero_rows(const Params& p, int b, int h, int mt, int rb) {
  const int nrow = block_rows(p, mt, rb);
  for (int e = threadIdx.x; e < nrow * p.D; e += blockDim.x)
    kc::store_f(p.y, y_offset(p, b, h, mt * rb + e / p.D, e % p.D), p.y_dt, 0.0f);
}

/// Writes the merged state to partial slot `slot` (through L2: other CTAs read it).
template <int RB>
__device__ void write_partial(const Params& p, unsigned char* smem, i64 slot, int nrow) {
  const Stat<RB>* st = reinterpret_cast<const Stat<RB>*>(smem + p.off_stat);
  float* dst = p.ws + slot * p.slot_floats;
  const float* o0 = warp_state(p, smem, 0) + 2 * RB;
  for (int r = threadIdx.x; r < nrow; r += blockDim.x) __stcg(dst + r, st->m[r]), __stcg(dst + RB + r, st->l[r]);
  for (int e = threadIdx.x; e < nrow * p.D; e += blockDim.x) __stcg(dst + 2 * RB + e, o0[e]);
}

/// Partial states in the global slots: contributor i in slot slot_of(i), read through L2.
template <int RB, typename SlotOf>
struct GlobalSlots {
  const Params& p;
  SlotOf slot_of;
  __device__ __forceinline__ const float* base(int i) const { return p.ws + static_cast<i64>(slot_of(i)) * p.slot_floats; }
  __device__ __forceinline__ float m(int i, int r) const { return __ldcg(base(i) + r); }
  __device__ __forceinline__ float l(int i, int r) const { return __ldcg(base(i) + RB + r); }
  __device__ __forceinline__ float o(int i, i64 e) const { return __ldcg(base(i) + 2 * RB + e); }
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/// Loads the float at this CTA's shared address `local` from the CTA of cluster rank `rank`.
__device__ __forceinline__ float ld_cluster(const float* local, int rank) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(local));
  unsigned ra;
  float v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(a), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(ra) : "memory");
  return v;
}
/// Every thread of every CTA of the cluster: writes to shared memory before it are visible to
/// the cluster's reads after it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
#else
__device__ __forceinline__ float ld_cluster(const float*, int) {
  __trap();  // the host launches clusters only for sm_90 code
  return 0.0f;
}
__device__ __forceinline__ void cluster_sync() { __trap(); }
#endif

/// Partial states in the shared memory of the cluster's CTAs: contributor i is the CTA of rank i,
/// its merged state where merge_warps left it (the Stat rows and warp 0's O).
template <int RB>
struct ClusterSlots {
  const float *m_, *l_, *o_;  // this CTA's addresses; the same offsets in every CTA
  __device__ __forceinline__ float m(int i, int r) const { return ld_cluster(m_ + r, i); }
  __device__ __forceinline__ float l(int i, int r) const { return ld_cluster(l_ + r, i); }
  __device__ __forceinline__ float o(int i, i64 e) const { return ld_cluster(o_ + e, i); }
};

/// Merges n partial states (contributor order 0..n-1, read through `src`: GlobalSlots or
/// ClusterSlots) of (b, h, mt) over output elements [e0, e1) of the block's nrow x D, and stores
/// them. Every caller computes each row's max and sum from all n states in the same order, so
/// slices merged by different CTAs agree bitwise. `scratch` holds 2 * n * RB floats. Contains
/// __syncthreads.
template <int RB, typename Src>
__device__ void merge_partials(const Params& p, const Src& src, int n, int b, int h, int mt, i64 e0, i64 e1,
                               float* scratch, float* inv_l) {
  if (e0 >= e1) return;
  const int D = p.D, r0 = static_cast<int>(e0 / D), r1 = static_cast<int>((e1 - 1) / D), nr = r1 - r0 + 1;
  float* mw = scratch;           // [n][RB]: m, then the weights
  float* lw = scratch + n * RB;  // [n][RB]: l
  for (int idx = threadIdx.x; idx < n * nr; idx += blockDim.x) {
    const int i = idx / nr, r = r0 + idx % nr;
    mw[i * RB + r] = src.m(i, r);
    lw[i * RB + r] = src.l(i, r);
  }
  __syncthreads();
  // One warp per row: lane-strided max and sum, fixed butterfly order.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int r = r0 + warp; r <= r1; r += nwarps) {
    float M = -INFINITY;
    for (int i = lane; i < n; i += 32) M = fmaxf(M, mw[i * RB + r]);
    M = kc::warp_max(M);
    float L = 0.0f;
    for (int i = lane; i < n; i += 32) {
      const float m = mw[i * RB + r], wt = m == -INFINITY ? 0.0f : exp2f(m - M);
      mw[i * RB + r] = wt;
      L += wt * lw[i * RB + r];
    }
    L = kc::warp_sum(L);
    if (lane == 0) inv_l[r] = softmax_row_scale(L);
  }
  __syncthreads();
  // tpe threads per element (a power of two <= 32) split the contributors, then a butterfly sum.
  const i64 ne = e1 - e0;
  int tpe = 1;
  while (tpe < 32 && ne * tpe * 2 <= blockDim.x) tpe *= 2;
  const int sub = threadIdx.x % tpe, per_pass = blockDim.x / tpe;
  for (i64 base = 0; base < ne; base += per_pass) {
    const i64 e = e0 + base + threadIdx.x / tpe;
    const bool live = e < e1;
    const int r = live ? static_cast<int>(e / D) : r0;
    float acc = 0.0f;
    if (live) {
#pragma unroll 4
      for (int i = sub; i < n; i += tpe) acc += mw[i * RB + r] * src.o(i, e);
    }
    for (int o = 1; o < tpe; o *= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (live && sub == 0)
      kc::store_f(p.y, y_offset(p, b, h, mt * RB + r, static_cast<int>(e % D)), p.y_dt, acc * inv_l[r]);
  }
  __syncthreads();
}

}  // namespace encore::cuda::dec
