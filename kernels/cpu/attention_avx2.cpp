// AVX2 + FMA tile kernel of the fused attention (head dim a multiple of 8), for CPUs without
// AVX-512 (most AMD Zen and Intel client parts): the structure of attention_avx512.cpp (read its
// comment first) with 8-lane vectors and register blocks sized for 16 ymm registers. Compiled with
// -mavx2 -mfma -mf16c; attention.cpp calls run_avx2 only after has_avx2().
//
// Blocks of more than 4 rows: transposed scores S[key][row] from Qt by a 4-key x 24-row
// micro-kernel (12 accumulators, 3 query vectors, 1 broadcast); P·V by a 6-row x 16-dim one (12
// accumulators). Every loop over accumulators is unrolled by pragma: otherwise GCC 12 kept
// pv_micro's in a stack array, a store per FMA (43 % of the kernel's time at 197 tokens).
// Decode-sized blocks (<= 4 rows): direct dot products and row-major scores.
#include <immintrin.h>

#include "kernels/cpu/attention_internal.h"

namespace encore::cpu::attn {
namespace {

// exp512 of attention_avx512.cpp (same reduction and polynomial) with 2^n put into the exponent
// field, as AVX2 has no scalef: inputs are clamped to [-87.3, 88.3] so that n + 127 stays in
// [1, 254] (attention only takes exp of x <= 0). Below -87.3, -inf included, the result is exactly
// 0; NaN stays NaN (the clamps return their second operand, x, for NaN; keep is true for it).
inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_NLT_UQ);
  x = _mm256_max_ps(lo, x);
  x = _mm256_min_ps(_mm256_set1_ps(88.3f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);  // ln2 high part: exact n*hi
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);      // ln2 low part
  __m256 poly = _mm256_set1_ps(1.0f / 5040.0f);
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 720.0f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 120.0f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 24.0f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 6.0f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(0.5f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(keep, _mm256_mul_ps(poly, _mm256_castsi256_ps(pow2n)));
}

inline __m256 bf16x8_to_f32(const std::uint16_t* src) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// 8 elements at element offset `off` of q/k/v as f32.
inline __m256 load8(const void* base, std::int64_t off, bool bf16) {
  if (bf16) return bf16x8_to_f32(static_cast<const std::uint16_t*>(base) + off);
  return _mm256_loadu_ps(static_cast<const float*>(base) + off);
}

inline float reduce_add(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

inline float reduce_max(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

// In-register 8x8 transpose: o[c] lane i = r[i] lane c. Unpacks pair rows, 64-bit shuffles give
// columns c (low half) and c + 4 (high half) of four rows, and the 128-bit permutes join the halves.
inline void transpose8(const __m256 r[8], __m256 o[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int j = 0; j < 2; ++j) {
    u[4 * j + 0] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
    u[4 * j + 1] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
    u[4 * j + 2] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
    u[4 * j + 3] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {
    o[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
    o[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
  }
}

// Qt[d][r] = Qp[r][d]; rows nr.. up to the next multiple of 8 are zero (their scores are unused).
void pack_qt(const float* Qp, int nr, int D, float* Qt) {
  for (int r0 = 0; r0 < nr; r0 += 8)
    for (int d0 = 0; d0 < D; d0 += 8) {
      __m256 r[8], o[8];
      for (int i = 0; i < 8; ++i) r[i] = r0 + i < nr ? _mm256_loadu_ps(Qp + (r0 + i) * D + d0) : _mm256_setzero_ps();
      transpose8(r, o);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(Qt + (d0 + i) * kMaxRows + r0, o[i]);
    }
}

// Transposed scores S[c][r] for NK keys x 8*NV rows: broadcast k[c][d], FMA with Qt[d][r..r+8).
template <int NK, int NV>
void scores_t(const float* const* krow, const float* Qt, int D, float* S) {
  __m256 acc[NK][NV];
  for (int k = 0; k < NK; ++k)
    for (int v = 0; v < NV; ++v) acc[k][v] = _mm256_setzero_ps();
  for (int d = 0; d < D; ++d) {
    __m256 qv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) qv[v] = _mm256_loadu_ps(Qt + d * kMaxRows + 8 * v);
#pragma GCC unroll 8
    for (int k = 0; k < NK; ++k) {
      const __m256 kb = _mm256_broadcast_ss(krow[k] + d);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[k][v] = _mm256_fmadd_ps(kb, qv[v], acc[k][v]);
    }
  }
  for (int k = 0; k < NK; ++k)
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(S + k * kMaxRows + 8 * v, acc[k][v]);
}

template <int NK>
void scores_t_rows(const float* const* krow, const float* Qt, int nrv, int D, float* S) {
  int v = 0;
  for (; v + 3 <= nrv; v += 3) scores_t<NK, 3>(krow, Qt + 8 * v, D, S + 8 * v);
  if (nrv - v == 2) scores_t<NK, 2>(krow, Qt + 8 * v, D, S + 8 * v);
  if (nrv - v == 1) scores_t<NK, 1>(krow, Qt + 8 * v, D, S + 8 * v);
}

constexpr int kAhead = 8;  // rows prefetched ahead on the decode path

// Direct dot products for NR <= 4 rows: each key row is loaded once for all rows.
template <int NR>
void qk_direct(const Problem& p, const Block& bl, std::int64_t j0, int nc, const float* Qp, float* S) {
  const std::int64_t base = bl.b * p.k_sb + j0 * p.k_st + static_cast<std::int64_t>(bl.unit) * p.D;
  const int esz = p.bf16_in ? 2 : 4;
  for (int c = 0; c < nc; ++c) {
    // (Key rows of a fused QKV projection sit kilobytes apart: fetched ahead, as on AVX-512.)
    if (j0 + c + kAhead < p.Tk) {
      const char* ahead = static_cast<const char*>(p.k) + (base + (c + kAhead) * p.k_st) * esz;
      for (int b = 0; b < p.D * esz; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    }
    __m256 acc[NR];
    for (int i = 0; i < NR; ++i) acc[i] = _mm256_setzero_ps();
    for (int d = 0; d < p.D; d += 8) {
      const __m256 kv = load8(p.k, base + c * p.k_st + d, p.bf16_in);
      for (int i = 0; i < NR; ++i) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(Qp + i * p.D + d), kv, acc[i]);
    }
    for (int i = 0; i < NR; ++i) S[i * kTile + c] = reduce_add(acc[i]);
  }
}

// O[r][0..8 NV) += sum_c P(r, c) V[c][0..8 NV) for NR rows (O was already rescaled by alpha).
// `avail` rows of V exist from V[0] on (bounds the prefetch).
template <int NR, int NV>
void pv_micro(const float* P, int prs, int pcs, int nc, const float* V, std::int64_t ldv, std::int64_t avail, float* O,
              int D) {
  __m256 acc[NR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < NR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_loadu_ps(O + i * D + 8 * v);
  for (int c = 0; c < nc; ++c) {
    if constexpr (NR <= 4) {  // decode-sized: memory-bound on strided value rows, fetch ahead
      if (c + kAhead < avail) _mm_prefetch(reinterpret_cast<const char*>(V + (c + kAhead) * ldv), _MM_HINT_T0);
    }
    __m256 vv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vv[v] = _mm256_loadu_ps(V + c * ldv + 8 * v);
#pragma GCC unroll 8
    for (int i = 0; i < NR; ++i) {
      const __m256 pb = _mm256_broadcast_ss(P + i * prs + c * pcs);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(pb, vv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < NR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(O + i * D + 8 * v, acc[i][v]);
}

template <int NV>
void pv_rows(const float* P, int prs, int pcs, int nr, int nc, const float* V, std::int64_t ldv, std::int64_t avail,
             float* O, int D) {
  int r = 0;
  for (; r + 6 <= nr; r += 6) pv_micro<6, NV>(P + r * prs, prs, pcs, nc, V, ldv, avail, O + r * D, D);
  const float* Pr = P + r * prs;
  float* Or = O + r * D;
  switch (nr - r) {
    case 1: pv_micro<1, NV>(Pr, prs, pcs, nc, V, ldv, avail, Or, D); break;
    case 2: pv_micro<2, NV>(Pr, prs, pcs, nc, V, ldv, avail, Or, D); break;
    case 3: pv_micro<3, NV>(Pr, prs, pcs, nc, V, ldv, avail, Or, D); break;
    case 4: pv_micro<4, NV>(Pr, prs, pcs, nc, V, ldv, avail, Or, D); break;
    case 5: pv_micro<5, NV>(Pr, prs, pcs, nc, V, ldv, avail, Or, D); break;
    default: break;
  }
}

struct Avx2K {
  // Decode-sized blocks keep row-major scores (direct dots); larger ones use transposed scores.
  static void prepare_block(const Problem& p, const Block& bl, Workspace& ws) {
    const int nr = bl.rows();
    if (nr <= 4) {
      ws.rs = kTile, ws.cs = 1;
    } else {
      ws.rs = 1, ws.cs = kMaxRows;
      pack_qt(ws.Qp, nr, p.D, ws.Qt);
    }
  }

  static void scores(const Problem& p, const Block& bl, std::int64_t j0, int nc, Workspace& ws) {
    const int nr = bl.rows();
    switch (nr) {
      case 1: return qk_direct<1>(p, bl, j0, nc, ws.Qp, ws.S);
      case 2: return qk_direct<2>(p, bl, j0, nc, ws.Qp, ws.S);
      case 3: return qk_direct<3>(p, bl, j0, nc, ws.Qp, ws.S);
      case 4: return qk_direct<4>(p, bl, j0, nc, ws.Qp, ws.S);
      default: break;
    }
    const int D = p.D;
    const std::int64_t base = bl.b * p.k_sb + j0 * p.k_st + static_cast<std::int64_t>(bl.unit) * D;
    const float* krow[kTile];
    if (p.bf16_in) {  // convert the tile once (row-major, no transpose)
      const auto* src = static_cast<const std::uint16_t*>(p.k) + base;
      for (int c = 0; c < nc; ++c) {
        for (int d = 0; d < D; d += 8) _mm256_storeu_ps(ws.Kp + c * D + d, bf16x8_to_f32(src + c * p.k_st + d));
        krow[c] = ws.Kp + c * D;
      }
    } else {
      for (int c = 0; c < nc; ++c) krow[c] = static_cast<const float*>(p.k) + base + c * p.k_st;
    }
    const int nrv = (nr + 7) / 8;
    int c = 0;
    for (; c + 4 <= nc; c += 4) scores_t_rows<4>(krow + c, ws.Qt, nrv, D, ws.S + c * kMaxRows);
    for (; c < nc; ++c) scores_t_rows<1>(krow + c, ws.Qt, nrv, D, ws.S + c * kMaxRows);
  }

  static void softmax_update(int nr, int nc, Workspace& ws) {
    if (ws.cs == 1) return softmax_rows(nr, nc, ws);
    // Transposed scores: lanes are rows, so max and sum are plain vertical ops over keys.
    const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    for (int r0 = 0; r0 < nr; r0 += 8) {
      float* s = ws.S + r0;
      const __m256 m_old = _mm256_loadu_ps(ws.m + r0);
      // Four independent chains: a single max/add chain over 64 keys would be latency-bound.
      __m256 mq[4] = {m_old, neg_inf, neg_inf, neg_inf};
      for (int c = 0; c < nc; ++c) mq[c & 3] = _mm256_max_ps(mq[c & 3], _mm256_loadu_ps(s + c * kMaxRows));
      const __m256 mx = _mm256_max_ps(_mm256_max_ps(mq[0], mq[1]), _mm256_max_ps(mq[2], mq[3]));
      // Rows still at -inf subtract 0 instead, so -inf scores give exp(-inf) = 0 and no NaN.
      const __m256 msub = _mm256_blendv_ps(mx, _mm256_setzero_ps(), _mm256_cmp_ps(mx, neg_inf, _CMP_EQ_OQ));
      const __m256 alpha = exp256(_mm256_sub_ps(m_old, msub));
      __m256 sq[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int c = 0; c < nc; ++c) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + c * kMaxRows), msub));
        _mm256_storeu_ps(s + c * kMaxRows, e);
        sq[c & 3] = _mm256_add_ps(sq[c & 3], e);
      }
      const __m256 sum = _mm256_add_ps(_mm256_add_ps(sq[0], sq[1]), _mm256_add_ps(sq[2], sq[3]));
      _mm256_storeu_ps(ws.alpha + r0, alpha);
      _mm256_storeu_ps(ws.l + r0, _mm256_fmadd_ps(_mm256_loadu_ps(ws.l + r0), alpha, sum));
      _mm256_storeu_ps(ws.m + r0, mx);
    }
  }

  static void softmax_rows(int nr, int nc, Workspace& ws) {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    const int nv = (nc + 7) / 8;
    // Lanes of the last vector past nc read -inf (the row has kTile floats, so the load stays in it).
    const __m256 tail = _mm256_cmp_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7),
                                      _mm256_set1_ps(static_cast<float>(nc - 8 * (nv - 1))), _CMP_LT_OQ);
    for (int r = 0; r < nr; ++r) {
      float* s = ws.S + r * kTile;
      __m256 x[kTile / 8];
      __m256 mx = _mm256_set1_ps(neg_inf);
      for (int v = 0; v < nv; ++v) {
        x[v] = _mm256_loadu_ps(s + 8 * v);
        if (v == nv - 1) x[v] = _mm256_blendv_ps(_mm256_set1_ps(neg_inf), x[v], tail);
        mx = _mm256_max_ps(mx, x[v]);
      }
      const float m_new = std::max(ws.m[r], reduce_max(mx));
      if (m_new == neg_inf) {  // only -inf so far: nothing contributes (but a NaN makes the row NaN)
        int nan = 0;
        for (int v = 0; v < nv; ++v) nan |= _mm256_movemask_ps(_mm256_cmp_ps(x[v], x[v], _CMP_UNORD_Q));
        if (nan != 0) ws.l[r] = std::numeric_limits<float>::quiet_NaN();
        ws.alpha[r] = 1.0f;
        for (int v = 0; v < nv; ++v) _mm256_storeu_ps(s + 8 * v, _mm256_setzero_ps());
        continue;
      }
      ws.alpha[r] = std::exp(ws.m[r] - m_new);
      const __m256 mb = _mm256_set1_ps(m_new);
      __m256 sum = _mm256_setzero_ps();
      for (int v = 0; v < nv; ++v) {
        const __m256 e = exp256(_mm256_sub_ps(x[v], mb));  // tail lanes: exp(-inf) = 0
        _mm256_storeu_ps(s + 8 * v, e);
        sum = _mm256_add_ps(sum, e);
      }
      ws.l[r] = ws.l[r] * ws.alpha[r] + reduce_add(sum);
      ws.m[r] = m_new;
    }
  }

  static void accumulate_pv(const Problem& p, const Block& bl, std::int64_t j0, int nc, Workspace& ws) {
    const int nr = bl.rows(), D = p.D;
    for (int r = 0; r < nr; ++r) {
      if (ws.alpha[r] == 1.0f) continue;
      const __m256 a = _mm256_set1_ps(ws.alpha[r]);
      float* o = ws.O + r * D;
      for (int d = 0; d < D; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(a, _mm256_loadu_ps(o + d)));
    }
    const std::int64_t base = bl.b * p.v_sb + j0 * p.v_st + static_cast<std::int64_t>(bl.unit) * D;
    const float* V;
    std::int64_t ldv, avail;
    if (p.bf16_in) {  // convert the tile once; every row chunk reuses it
      const auto* src = static_cast<const std::uint16_t*>(p.v) + base;
      for (int c = 0; c < nc; ++c)
        for (int d = 0; d < D; d += 8) _mm256_storeu_ps(ws.Vp + c * D + d, bf16x8_to_f32(src + c * p.v_st + d));
      V = ws.Vp, ldv = D, avail = nc;
    } else {
      V = static_cast<const float*>(p.v) + base, ldv = p.v_st, avail = p.Tk - j0;
    }
    for (int d0 = 0; d0 < D; d0 += 16) {
      if (D - d0 >= 16)
        pv_rows<2>(ws.S, ws.rs, ws.cs, nr, nc, V + d0, ldv, avail, ws.O + d0, D);
      else
        pv_rows<1>(ws.S, ws.rs, ws.cs, nr, nc, V + d0, ldv, avail, ws.O + d0, D);
    }
  }
};

}  // namespace

void run_avx2(const Problem& p) { run<Avx2K>(p); }

}  // namespace encore::cpu::attn
