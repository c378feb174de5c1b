// AVX-512 tile kernel of the fused attention (head dim a multiple of 16). Compiled with
// -mavx512f/bw/vl/dq -mfma; attention.cpp calls run_avx512 only after has_avx512().
//
// Per tile of kTile = 64 keys, for blocks of more than 4 rows:
// - scores are computed transposed, S[key][row]: the block's queries are transposed once into
//   Qt[D][rows], and an 8-key x 48-row register micro-kernel broadcasts k[c][d] straight from the
//   key rows and FMAs it with Qt[d][:]. Nothing per tile needs transposing.
// - softmax update: lanes are query rows, so the running max and sum are vertical ops over keys
//   (no horizontal reductions); exp512 below.
// - P·V: a 6-row x 64-dim micro-kernel (broadcast p[c][r], FMA with v[c][d..d+63]).
// Decode-sized blocks (<= 4 rows) use direct dot products on the key rows and row-major scores.
// GCC 12 reports false -Wmaybe-uninitialized inside its own AVX-512 headers (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "kernels/cpu/attention_internal.h"

namespace encore::cpu::attn {
namespace {

// exp(x) for x <= 0-ish scores. n = round(x / ln 2), r = x - n ln 2 (Cody-Waite, two constants),
// exp(r) by its degree-7 Taylor polynomial on |r| <= ln2/2 (truncation error < 6e-9 relative, so
// the result is within ~1-2 ulp), times 2^n via scalef. Inputs below -87.3 (results under
// FLT_MIN, including -inf and masked `lowest` scores) give exactly 0: no denormals reach the FMAs.
// NaN stays NaN (a NaN score makes its row NaN, as in torch): the clamps take x as their second
// operand, which max/min return when it is NaN, and the keep mask is true for unordered inputs.
inline __m512 exp512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3f);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);
  x = _mm512_max_ps(lo, x);
  x = _mm512_min_ps(_mm512_set1_ps(88.7f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2 high part: exact n*hi
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);      // ln2 low part
  __m512 poly = _mm512_set1_ps(1.0f / 5040.0f);
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 720.0f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 120.0f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 24.0f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 6.0f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(0.5f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(poly, n));
}

inline __m512 bf16x16_to_f32(const std::uint16_t* src) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 16 elements at element offset `off` of q/k/v as f32.
inline __m512 load16(const void* base, std::int64_t off, bool bf16) {
  if (bf16) return bf16x16_to_f32(static_cast<const std::uint16_t*>(base) + off);
  return _mm512_loadu_ps(static_cast<const float*>(base) + off);
}

// In-register 16x16 transpose: o[c] lane i = r[i] lane c. Stage 1 interleaves 32-bit pairs,
// stage 2 64-bit pairs, after which u[4j+k] holds column 4L+k of rows 4j..4j+3 in 128-bit lane L;
// the last two stages gather lane L of u[k], u[4+k], u[8+k], u[12+k] with 128-bit shuffles.
inline void transpose16(const __m512 r[16], __m512 o[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512d a = _mm512_castps_pd(t[4 * j]), b = _mm512_castps_pd(t[4 * j + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * j + 2]), d = _mm512_castps_pd(t[4 * j + 3]);
    u[4 * j + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int k = 0; k < 4; ++k) {
    const __m512 w0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x44), w1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xEE);
    const __m512 w2 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x44),
                 w3 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xEE);
    o[k] = _mm512_shuffle_f32x4(w0, w2, 0x88);
    o[4 + k] = _mm512_shuffle_f32x4(w0, w2, 0xDD);
    o[8 + k] = _mm512_shuffle_f32x4(w1, w3, 0x88);
    o[12 + k] = _mm512_shuffle_f32x4(w1, w3, 0xDD);
  }
}

// Qt[d][r] = Qp[r][d]; rows nr.. up to the next multiple of 16 are zero (their scores are unused).
void pack_qt(const float* Qp, int nr, int D, float* Qt) {
  for (int r0 = 0; r0 < nr; r0 += 16)
    for (int d0 = 0; d0 < D; d0 += 16) {
      __m512 r[16], o[16];
      for (int i = 0; i < 16; ++i) r[i] = r0 + i < nr ? _mm512_loadu_ps(Qp + (r0 + i) * D + d0) : _mm512_setzero_ps();
      transpose16(r, o);
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(Qt + (d0 + i) * kMaxRows + r0, o[i]);
    }
}

// Transposed scores S[c][r] for NK keys x 16*NV rows: broadcast k[c][d], FMA with Qt[d][r..r+16).
// Keys are read straight from their rows, so no key tile is transposed; the queries were
// transposed once per block.
template <int NK, int NV>
void scores_t(const float* const* krow, const float* Qt, int D, float* S) {
  __m512 acc[NK][NV];
  for (int k = 0; k < NK; ++k)
    for (int v = 0; v < NV; ++v) acc[k][v] = _mm512_setzero_ps();
  for (int d = 0; d < D; ++d) {
    __m512 qv[NV];
    for (int v = 0; v < NV; ++v) qv[v] = _mm512_loadu_ps(Qt + d * kMaxRows + 16 * v);
    for (int k = 0; k < NK; ++k) {
      const __m512 kb = _mm512_set1_ps(krow[k][d]);
      for (int v = 0; v < NV; ++v) acc[k][v] = _mm512_fmadd_ps(kb, qv[v], acc[k][v]);
    }
  }
  for (int k = 0; k < NK; ++k)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(S + k * kMaxRows + 16 * v, acc[k][v]);
}

template <int NK>
void scores_t_rows(const float* const* krow, const float* Qt, int nrv, int D, float* S) {
  int v = 0;
  for (; v + 3 <= nrv; v += 3) scores_t<NK, 3>(krow, Qt + 16 * v, D, S + 16 * v);
  if (nrv - v == 2) scores_t<NK, 2>(krow, Qt + 16 * v, D, S + 16 * v);
  if (nrv - v == 1) scores_t<NK, 1>(krow, Qt + 16 * v, D, S + 16 * v);
}

constexpr int kAhead = 8;  // rows prefetched ahead on the decode path

// Direct dot products for NR <= 4 rows: each key row is loaded once for all rows.
template <int NR>
void qk_direct(const Problem& p, const Block& bl, std::int64_t j0, int nc, const float* Qp, float* S) {
  const std::int64_t base = bl.b * p.k_sb + j0 * p.k_st + static_cast<std::int64_t>(bl.unit) * p.D;
  const int esz = p.bf16_in ? 2 : 4;
  for (int c = 0; c < nc; ++c) {
    // Key rows of a fused QKV projection sit kilobytes apart: the hardware prefetchers do not
    // follow them, so fetch a few rows ahead (this path is memory-bound decode).
    if (j0 + c + kAhead < p.Tk) {
      const char* ahead = static_cast<const char*>(p.k) + (base + (c + kAhead) * p.k_st) * esz;
      for (int b = 0; b < p.D * esz; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    }
    __m512 acc[NR];
    for (int i = 0; i < NR; ++i) acc[i] = _mm512_setzero_ps();
    for (int d = 0; d < p.D; d += 16) {
      const __m512 kv = load16(p.k, base + c * p.k_st + d, p.bf16_in);
      for (int i = 0; i < NR; ++i) acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(Qp + i * p.D + d), kv, acc[i]);
    }
    for (int i = 0; i < NR; ++i) S[i * kTile + c] = _mm512_reduce_add_ps(acc[i]);
  }
}

// O[r][0..16 NV) += sum_c P(r, c) V[c][0..16 NV) for NR rows (O was already rescaled by alpha).
// `avail` rows of V exist from V[0] on (bounds the prefetch).
template <int NR, int NV>
void pv_micro(const float* P, int prs, int pcs, int nc, const float* V, std::int64_t ldv, std::int64_t avail, float* O,
              int D) {
  __m512 acc[NR][NV];
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_loadu_ps(O + i * D + 16 * v);
  for (int c = 0; c < nc; ++c) {
    if constexpr (NR <= 4) {  // decode-sized: memory-bound on strided value rows, fetch ahead
      if (c + kAhead < avail)
        for (int v = 0; v < NV; ++v)
          _mm_prefetch(reinterpret_cast<const char*>(V + (c + kAhead) * ldv + 16 * v), _MM_HINT_T0);
    }
    __m512 vv[NV];
    for (int v = 0; v < NV; ++v) vv[v] = _mm512_loadu_ps(V + c * ldv + 16 * v);
    for (int i = 0; i < NR; ++i) {
      const __m512 pb = _mm512_set1_ps(P[i * prs + c * pcs]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(pb, vv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(O + i * D + 16 * v, acc[i][v]);
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

struct Avx512K {
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
        for (int d = 0; d < D; d += 16) _mm512_storeu_ps(ws.Kp + c * D + d, bf16x16_to_f32(src + c * p.k_st + d));
        krow[c] = ws.Kp + c * D;
      }
    } else {
      for (int c = 0; c < nc; ++c) krow[c] = static_cast<const float*>(p.k) + base + c * p.k_st;
    }
    const int nrv = (nr + 15) / 16;
    int c = 0;
    for (; c + 8 <= nc; c += 8) scores_t_rows<8>(krow + c, ws.Qt, nrv, D, ws.S + c * kMaxRows);
    for (; c < nc; ++c) scores_t_rows<1>(krow + c, ws.Qt, nrv, D, ws.S + c * kMaxRows);
  }

  static void softmax_update(int nr, int nc, Workspace& ws) {
    if (ws.cs == 1) return softmax_rows(nr, nc, ws);
    // Transposed scores: lanes are rows, so max and sum are plain vertical ops over keys.
    const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int r0 = 0; r0 < nr; r0 += 16) {
      float* s = ws.S + r0;
      const __m512 m_old = _mm512_loadu_ps(ws.m + r0);
      // Four independent chains: a single max/add chain over 64 keys would be latency-bound.
      __m512 mq[4] = {m_old, neg_inf, neg_inf, neg_inf};
      for (int c = 0; c < nc; ++c) mq[c & 3] = _mm512_max_ps(mq[c & 3], _mm512_loadu_ps(s + c * kMaxRows));
      const __m512 mx = _mm512_max_ps(_mm512_max_ps(mq[0], mq[1]), _mm512_max_ps(mq[2], mq[3]));
      // Rows still at -inf subtract 0 instead, so -inf scores give exp(-inf) = 0 and no NaN.
      const __m512 msub = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mx, neg_inf, _CMP_EQ_OQ), mx, _mm512_setzero_ps());
      const __m512 alpha = exp512(_mm512_sub_ps(m_old, msub));
      __m512 sq[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int c = 0; c < nc; ++c) {
        const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(s + c * kMaxRows), msub));
        _mm512_storeu_ps(s + c * kMaxRows, e);
        sq[c & 3] = _mm512_add_ps(sq[c & 3], e);
      }
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(sq[0], sq[1]), _mm512_add_ps(sq[2], sq[3]));
      _mm512_storeu_ps(ws.alpha + r0, alpha);
      _mm512_storeu_ps(ws.l + r0, _mm512_fmadd_ps(_mm512_loadu_ps(ws.l + r0), alpha, sum));
      _mm512_storeu_ps(ws.m + r0, mx);
    }
  }

  static void softmax_rows(int nr, int nc, Workspace& ws) {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    const int nv = (nc + 15) / 16;
    const __mmask16 tail = static_cast<__mmask16>(nc % 16 == 0 ? 0xFFFF : (1u << (nc % 16)) - 1);
    for (int r = 0; r < nr; ++r) {
      float* s = ws.S + r * kTile;
      __m512 x[kTile / 16];
      __m512 mx = _mm512_set1_ps(neg_inf);
      for (int v = 0; v < nv; ++v) {
        x[v] = v == nv - 1 ? _mm512_mask_loadu_ps(_mm512_set1_ps(neg_inf), tail, s + 16 * v) : _mm512_loadu_ps(s + 16 * v);
        mx = _mm512_max_ps(mx, x[v]);
      }
      const float m_new = std::max(ws.m[r], _mm512_reduce_max_ps(mx));
      if (m_new == neg_inf) {  // only -inf so far: nothing contributes (but a NaN makes the row NaN)
        __mmask16 nan = 0;
        for (int v = 0; v < nv; ++v) nan |= _mm512_cmp_ps_mask(x[v], x[v], _CMP_UNORD_Q);
        if (nan != 0) ws.l[r] = std::numeric_limits<float>::quiet_NaN();
        ws.alpha[r] = 1.0f;
        for (int v = 0; v < nv; ++v) _mm512_storeu_ps(s + 16 * v, _mm512_setzero_ps());
        continue;
      }
      ws.alpha[r] = std::exp(ws.m[r] - m_new);
      const __m512 mb = _mm512_set1_ps(m_new);
      __m512 sum = _mm512_setzero_ps();
      for (int v = 0; v < nv; ++v) {
        const __m512 e = exp512(_mm512_sub_ps(x[v], mb));  // tail lanes: exp(-inf) = 0
        _mm512_storeu_ps(s + 16 * v, e);
        sum = _mm512_add_ps(sum, e);
      }
      ws.l[r] = ws.l[r] * ws.alpha[r] + _mm512_reduce_add_ps(sum);
      ws.m[r] = m_new;
    }
  }

  static void accumulate_pv(const Problem& p, const Block& bl, std::int64_t j0, int nc, Workspace& ws) {
    const int nr = bl.rows(), D = p.D;
    for (int r = 0; r < nr; ++r) {
      if (ws.alpha[r] == 1.0f) continue;
      const __m512 a = _mm512_set1_ps(ws.alpha[r]);
      float* o = ws.O + r * D;
      for (int d = 0; d < D; d += 16) _mm512_storeu_ps(o + d, _mm512_mul_ps(a, _mm512_loadu_ps(o + d)));
    }
    const std::int64_t base = bl.b * p.v_sb + j0 * p.v_st + static_cast<std::int64_t>(bl.unit) * D;
    const float* V;
    std::int64_t ldv, avail;
    if (p.bf16_in) {  // convert the tile once; every row chunk reuses it
      const auto* src = static_cast<const std::uint16_t*>(p.v) + base;
      for (int c = 0; c < nc; ++c)
        for (int d = 0; d < D; d += 16) _mm512_storeu_ps(ws.Vp + c * D + d, bf16x16_to_f32(src + c * p.v_st + d));
      V = ws.Vp, ldv = D, avail = nc;
    } else {
      V = static_cast<const float*>(p.v) + base, ldv = p.v_st, avail = p.Tk - j0;
    }
    for (int d0 = 0; d0 < D; d0 += 64) {
      switch (std::min(4, (D - d0) / 16)) {
        case 1: pv_rows<1>(ws.S, ws.rs, ws.cs, nr, nc, V + d0, ldv, avail, ws.O + d0, D); break;
        case 2: pv_rows<2>(ws.S, ws.rs, ws.cs, nr, nc, V + d0, ldv, avail, ws.O + d0, D); break;
        case 3: pv_rows<3>(ws.S, ws.rs, ws.cs, nr, nc, V + d0, ldv, avail, ws.O + d0, D); break;
        default: pv_rows<4>(ws.S, ws.rs, ws.cs, nr, nc, V + d0, ldv, avail, ws.O + d0, D); break;
      }
    }
  }
};

}  // namespace

void run_avx512(const Problem& p) { run<Avx512K>(p); }

}  // namespace encore::cpu::attn
