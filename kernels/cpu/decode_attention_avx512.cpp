// AVX-512 segment loop of the CPU decode attention (head dim a multiple of 16). Compiled with
// -mavx512f/bw/vl/dq -mfma -mf16c; decode_attention.cpp calls it only after has_avx512().
//
// One segment = keys [k0, k1) of one (sequence, kv head) for all rows = g * Tq query rows of the
// head (GQA packing: every K/V byte is read once for the whole group). Per step of up to kChunk
// keys:
// - scores: 16 keys at a time; per row, 16 accumulators run over D (each key row is read once
//   from memory; extra rows re-read it from L1), then a transpose-add tree turns the 16
//   accumulators into one vector of 16 scores (45 shuffles/adds instead of 16 horizontal sums);
// - causal mask (only in the last Tq - 1 keys of the sequence), online softmax per row;
// - P·V: 4 rows x 64 dims of accumulators in registers, each value row loaded once per row group.
// 16-bit caches convert in registers when one or two rows share them, else the step's keys and
// values are converted once into f32 scratch so the extra rows do not convert again.
// The next step's K/V rows are prefetched in software (paged blocks defeat the hardware
// prefetchers at every block boundary): all at once for 1-2 rows, paced over the loops otherwise.
// GCC 12 reports false -Wmaybe-uninitialized inside its own AVX-512 headers (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/decode_attention_internal.h"
#include "kernels/cpu/simd_vec_math_avx512.h"

namespace encore::cpu::dec {
namespace {

namespace v512 = ewk::v512;
using i64 = std::int64_t;

// 16 consecutive elements as f32.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
struct Bf16 { std::uint16_t bits; };
struct F16 { std::uint16_t bits; };
inline __m512 load16(const Bf16* p) { return v512::load_bf16(reinterpret_cast<const std::uint16_t*>(p)); }
inline __m512 load16(const F16* p) { return v512::load_f16(reinterpret_cast<const std::uint16_t*>(p)); }

// exp(x) with results below FLT_MIN flushed to exactly 0 (-inf included): no denormals reach the
// P·V FMAs, where they would cost microcode assists. NaN stays NaN (the mask is true for unordered
// inputs, and v512::exp propagates it): a NaN score makes its row NaN, as in torch.
inline __m512 exp_flush(__m512 x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_NLT_UQ);
  return _mm512_maskz_mov_ps(keep, v512::exp(x));
}

// Lane c of the result = sum of the lanes of a[c].
inline __m512 hsum16(const __m512 a[16]) {
  __m512 t[8], u[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: (a0+a2, b0+b2, a1+a3, b1+b3)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: partial sums of a[4i .. 4i+3] in order
    const __m512d x = _mm512_castps_pd(t[2 * i]), y = _mm512_castps_pd(t[2 * i + 1]);
    u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // Sum the four 128-bit lanes of u[i] into lane i of the result.
  const __m512 x0 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 x1 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(x0, x1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(x0, x1, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Rows of the next step to prefetch while this one computes, spread over the work so the loads
// overlap the arithmetic (a burst of prefetches stalls once the fill buffers are full).
struct Ahead {
  const char* const* rows;  // nullptr: nothing
  int n, lines;             // rows, 64-byte lines per row
  void fetch(int a, int b) const {
    for (int k = a; k < b && k < n; ++k)
      for (int l = 0; l < lines; ++l) _mm_prefetch(rows[k] + 64 * l, _MM_HINT_T0);
  }
};

// S[r][0 .. 16) = q_r . k_c for 16 key rows (missing keys point at a valid row; the caller masks
// their lanes). Row r also prefetches its share of `ahead`.
template <class T>
void scores16(const T* const* krow, const float* Q, int rows, int D, float* S, const Ahead& ahead) {
  for (int r = 0; r < rows; ++r) {
    if (ahead.rows) ahead.fetch(r * 16 / rows, (r + 1) * 16 / rows);
    __m512 acc[16];
    for (int c = 0; c < 16; ++c) acc[c] = _mm512_setzero_ps();
    const float* q = Q + static_cast<i64>(r) * D;
    for (int d = 0; d < D; d += 16) {
      const __m512 qv = _mm512_loadu_ps(q + d);
      for (int c = 0; c < 16; ++c) acc[c] = _mm512_fmadd_ps(load16(krow[c] + d), qv, acc[c]);
    }
    _mm512_storeu_ps(S + static_cast<i64>(r) * kChunk, hsum16(acc));
  }
}

// O[i][d0 .. d0 + 16 NV) = alpha_i O[i][..] + sum_c P[i][c] V[c][..] for NR rows.
template <class T, int NR, int NV>
void pv_micro(const float* P, const float* alpha, int nc, const T* const* vrow, int d0, float* O, int D,
              const Ahead& ahead) {
  __m512 acc[NR][NV];
  for (int i = 0; i < NR; ++i) {
    const __m512 a = _mm512_set1_ps(alpha[i]);
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_mul_ps(a, _mm512_loadu_ps(O + static_cast<i64>(i) * D + d0 + 16 * v));
  }
  for (int c = 0; c < nc; ++c) {
    if (ahead.rows) ahead.fetch(c, c + 1);
    __m512 vv[NV];
    for (int v = 0; v < NV; ++v) vv[v] = load16(vrow[c] + d0 + 16 * v);
    for (int i = 0; i < NR; ++i) {
      const __m512 pb = _mm512_set1_ps(P[static_cast<i64>(i) * kChunk + c]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(pb, vv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(O + static_cast<i64>(i) * D + d0 + 16 * v, acc[i][v]);
}

// The next step's value rows are prefetched during the first pass over the keys.
template <class T, int NR>
void pv_rows(const float* P, const float* alpha, int nc, const T* const* vrow, float* O, int D, Ahead ahead) {
  for (int d0 = 0; d0 < D; d0 += 64, ahead.rows = nullptr) {
    switch (std::min(4, (D - d0) / 16)) {
      case 1: pv_micro<T, NR, 1>(P, alpha, nc, vrow, d0, O, D, ahead); break;
      case 2: pv_micro<T, NR, 2>(P, alpha, nc, vrow, d0, O, D, ahead); break;
      case 3: pv_micro<T, NR, 3>(P, alpha, nc, vrow, d0, O, D, ahead); break;
      default: pv_micro<T, NR, 4>(P, alpha, nc, vrow, d0, O, D, ahead); break;
    }
  }
}

template <class T>
void pv(const float* P, const float* alpha, int rows, int nc, const T* const* vrow, float* O, int D, Ahead ahead) {
  int r = 0;
  for (; r + 4 <= rows; r += 4, ahead.rows = nullptr)
    pv_rows<T, 4>(P + r * kChunk, alpha + r, nc, vrow, O + static_cast<i64>(r) * D, D, ahead);
  const float* Pr = P + r * kChunk;
  float* Or = O + static_cast<i64>(r) * D;
  switch (rows - r) {
    case 1: pv_rows<T, 1>(Pr, alpha + r, nc, vrow, Or, D, ahead); break;
    case 2: pv_rows<T, 2>(Pr, alpha + r, nc, vrow, Or, D, ahead); break;
    case 3: pv_rows<T, 3>(Pr, alpha + r, nc, vrow, Or, D, ahead); break;
    default: break;
  }
}

// Online-softmax update of every row over the nc scores of this step (lanes >= nc hold -inf).
void softmax_step(int rows, int nc, const Scratch& ws) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int nv = (nc + 15) / 16;
  for (int r = 0; r < rows; ++r) {
    float* s = ws.s + static_cast<i64>(r) * kChunk;
    __m512 x[kChunk / 16];
    __m512 mx = _mm512_set1_ps(neg_inf);
    for (int v = 0; v < nv; ++v) mx = _mm512_max_ps(mx, x[v] = _mm512_loadu_ps(s + 16 * v));
    const float m_new = std::max(ws.m[r], _mm512_reduce_max_ps(mx));
    if (m_new == neg_inf) {  // every key so far is masked for this row: nothing contributes
      __mmask16 nan = 0;      // ... but a NaN score makes the row NaN
      for (int v = 0; v < nv; ++v) nan |= _mm512_cmp_ps_mask(x[v], x[v], _CMP_UNORD_Q);
      if (nan != 0) ws.l[r] = std::numeric_limits<float>::quiet_NaN();
      ws.alpha[r] = 1.0f;
      for (int v = 0; v < nv; ++v) _mm512_storeu_ps(s + 16 * v, _mm512_setzero_ps());
      continue;
    }
    const __m512 mb = _mm512_set1_ps(m_new);
    __m512 sum = _mm512_setzero_ps();
    for (int v = 0; v < nv; ++v) {
      const __m512 e = exp_flush(_mm512_sub_ps(x[v], mb));
      _mm512_storeu_ps(s + 16 * v, e);
      sum = _mm512_add_ps(sum, e);
    }
    const float alpha = ws.m[r] == neg_inf ? 0.0f : std::exp(ws.m[r] - m_new);
    ws.alpha[r] = alpha;
    ws.l[r] = ws.l[r] * alpha + _mm512_reduce_add_ps(sum);
    ws.m[r] = m_new;
  }
}

// Rows of the step converted to f32 scratch [nc][D].
template <class T>
void convert_rows(const T* const* src, int nc, int D, float* dst, const float** out) {
  for (int c = 0; c < nc; ++c) {
    float* d = dst + static_cast<i64>(c) * D;
    for (int e = 0; e < D; e += 16) _mm512_storeu_ps(d + e, load16(src[c] + e));
    out[c] = d;
  }
}

template <class T>
void run_segment(const Problem& p, int b, int h, i64 k0, i64 k1, const Scratch& ws) {
  const int rows = p.rows, D = p.D, bs = p.block_size;
  const i64 len = p.lens[b];
  const std::int32_t* table = p.table + b * p.max_blocks;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < rows; ++r) {
    ws.m[r] = neg_inf, ws.l[r] = 0.0f;
    std::fill(ws.o + static_cast<i64>(r) * D, ws.o + static_cast<i64>(r + 1) * D, 0.0f);
  }
  const T* kbase = static_cast<const T*>(p.k) + h * p.k_sh;
  const T* vbase = static_cast<const T*>(p.v) + h * p.v_sh;
  const bool convert = !std::is_same_v<T, float> && rows > 2;
  const i64 first_masked_pos = len - p.Tq + 1;  // keys at or past this are masked for some row
  const int row_bytes = D * static_cast<int>(sizeof(T));
  const T* krow[kChunk + 16];
  const T* vrow[kChunk];
  const float* kf[kChunk + 16];
  const float* vf[kChunk];
  const char* knext[kChunk];
  const char* vnext[kChunk];
  for (i64 j0 = k0; j0 < k1; j0 += kChunk) {
    const int nc = static_cast<int>(std::min<i64>(kChunk, k1 - j0));
    for (i64 c = 0, bi = j0 / bs, off = j0 % bs; c < nc; ++c) {  // row addresses through the table
      krow[c] = kbase + table[bi] * p.k_sn + off * p.k_st;
      vrow[c] = vbase + table[bi] * p.v_sn + off * p.v_st;
      if (++off == bs) off = 0, ++bi;
    }
    // The next step's rows, fetched in software while this step computes: blocks are scattered,
    // so the hardware prefetchers lose the stream at every block (and 4 KiB page) boundary.
    const int nn = static_cast<int>(std::clamp<i64>(k1 - j0 - kChunk, 0, kChunk));
    for (i64 c = 0, bi = (j0 + kChunk) / bs, off = (j0 + kChunk) % bs; c < nn; ++c) {
      knext[c] = reinterpret_cast<const char*>(kbase + table[bi] * p.k_sn + off * p.k_st);
      vnext[c] = reinterpret_cast<const char*>(vbase + table[bi] * p.v_sn + off * p.v_st);
      if (++off == bs) off = 0, ++bi;
    }
    // One row (or two) is memory-bound: fetch the whole next step at once, a step ahead. More rows
    // compute longer per byte: spread the fetches over the score and P.V loops so they overlap.
    const int lines = (row_bytes + 63) / 64;
    const bool burst = rows <= 2;
    for (int c = 0; burst && c < nn; ++c)
      for (int l = 0; l < lines; ++l) _mm_prefetch(knext[c] + 64 * l, _MM_HINT_T0), _mm_prefetch(vnext[c] + 64 * l, _MM_HINT_T0);
    const int ng = (nc + 15) / 16;
    for (int c = nc; c < ng * 16; ++c) krow[c] = krow[nc - 1];  // padding lanes, masked below
    for (int gi = 0; gi < ng; ++gi) {
      const Ahead ahead{burst ? nullptr : knext + 16 * gi, nn - 16 * gi, lines};
      if (convert) {  // 16 keys at a time, so the converted rows stay in L1 for every query row
        convert_rows(krow + 16 * gi, std::min(16, nc - 16 * gi), D, ws.kc + static_cast<i64>(16 * gi) * D, kf + 16 * gi);
        for (int c = nc; c < 16 * (gi + 1); ++c) kf[c] = kf[nc - 1];
        scores16<float>(kf + 16 * gi, ws.q, rows, D, ws.s + 16 * gi, ahead);
      } else {
        scores16<T>(krow + 16 * gi, ws.q, rows, D, ws.s + 16 * gi, ahead);
      }
    }
    const bool tail = j0 + nc > first_masked_pos;
    for (int r = 0; r < rows; ++r) {
      float* s = ws.s + static_cast<i64>(r) * kChunk;
      // Causal: row r (token t = r / g) sits at position len - Tq + t and sees keys up to it.
      const i64 visible = tail ? std::min<i64>(nc, len - p.Tq + r / p.g + 1 - j0) : nc;
      for (int c = static_cast<int>(std::max<i64>(visible, 0)); c < ng * 16; ++c) s[c] = neg_inf;
    }
    softmax_step(rows, nc, ws);
    if (convert) {
      convert_rows(vrow, nc, D, ws.vc, vf);
      pv<float>(ws.s, ws.alpha, rows, nc, vf, ws.o, D, Ahead{burst ? nullptr : vnext, nn, lines});
    } else {
      pv<T>(ws.s, ws.alpha, rows, nc, vrow, ws.o, D, Ahead{burst ? nullptr : vnext, nn, lines});
    }
  }
}

}  // namespace

void run_segment_avx512(const Problem& p, int b, int h, std::int64_t k0, std::int64_t k1, const Scratch& ws) {
  // Queries of the head, scaled once: row r = token r / g, query head h * g + r % g.
  for (int r = 0; r < p.rows; ++r) {
    const i64 off = b * p.q_sb + (r / p.g) * p.q_st + static_cast<i64>(h * p.g + r % p.g) * p.D;
    float* dst = ws.q + static_cast<i64>(r) * p.D;
    const __m512 sc = _mm512_set1_ps(p.scale);
    for (int d = 0; d < p.D; d += 16) {
      __m512 x;
      if (p.q_type == Elem::f32) x = load16(static_cast<const float*>(p.q) + off + d);
      else if (p.q_type == Elem::bf16) x = load16(static_cast<const Bf16*>(p.q) + off + d);
      else x = load16(static_cast<const F16*>(p.q) + off + d);
      _mm512_storeu_ps(dst + d, _mm512_mul_ps(x, sc));
    }
  }
  switch (p.kv_type) {
    case Elem::f32: return run_segment<float>(p, b, h, k0, k1, ws);
    case Elem::bf16: return run_segment<Bf16>(p, b, h, k0, k1, ws);
    case Elem::f16: return run_segment<F16>(p, b, h, k0, k1, ws);
  }
}

}  // namespace encore::cpu::dec
