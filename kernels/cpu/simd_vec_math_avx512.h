// Inline AVX-512 math for the *_avx512.cpp kernels: exp, sigmoid, tanh, the GELUs, bf16/f16
// loads and stores. Include only from files compiled with -mavx512f/bw/vl/dq -mfma.
//
// Accuracy (checked against long double in test_elementwise.cpp): a few ulp over the whole f32
// range. The polynomial coefficients were fitted for this file (Chebyshev fits, mpmath).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace encore::cpu::ewk::v512 {

inline __m512 set1(float v) { return _mm512_set1_ps(v); }
inline __mmask16 tail_mask(std::int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

// max(a, x) / min(a, x) return x when x is NaN (the second operand wins on unordered inputs),
// which the clamps below rely on to propagate NaN.
inline __m512 clamp(__m512 x, float lo, float hi) {
  return _mm512_min_ps(set1(hi), _mm512_max_ps(set1(lo), x));
}

/// 1/d for d in [1, 1e8]: rcp14 plus one Newton step (~1 ulp; cheaper than vdivps).
inline __m512 rcp(__m512 d) {
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, set1(2.0f)));
}

/// e^x: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, scalef does the 2^n (over- and
/// underflow, subnormals included).
inline __m512 exp(__m512 x) {
  x = clamp(x, -150.0f, 150.0f);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, set1(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, set1(0.693145751953125f), x);  // ln2 split: hi has 16 bits
  r = _mm512_fnmadd_ps(n, set1(1.42860682030941723e-06f), r);
  __m512 p = set1(0.0013941108481958508f);
  p = _mm512_fmadd_ps(p, r, set1(0.00837512593716383f));
  p = _mm512_fmadd_ps(p, r, set1(0.04166635125875473f));
  p = _mm512_fmadd_ps(p, r, set1(0.16666415333747864f));
  p = _mm512_fmadd_ps(p, r, set1(0.5f));
  p = _mm512_fmadd_ps(p, r, set1(1.0f));
  p = _mm512_fmadd_ps(p, r, set1(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 abs(__m512 x) { return _mm512_abs_ps(x); }

/// 1 / (1 + e^-x) without overflow: e = e^-|x| <= 1; s = 1/(1+e); negative x gives e*s.
inline __m512 sigmoid(__m512 x) {
  const __m512 e = exp(_mm512_sub_ps(_mm512_setzero_ps(), abs(x)));
  const __m512 s = rcp(_mm512_add_ps(set1(1.0f), e));
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_mul_ps(s, neg, e, s);
}

/// tanh: odd polynomial below |x| = 0.6 (where 1 - 2/(e^2x + 1) would cancel), else that
/// formula on |x| clamped to 10 (tanh(10) rounds to 1 in f32).
inline __m512 tanh(__m512 x) {
  const __m512 a = abs(x);
  const __m512 s = _mm512_mul_ps(x, x);
  __m512 p = set1(-0.00584964407607913f);
  p = _mm512_fmadd_ps(p, s, set1(0.02075134962797165f));
  p = _mm512_fmadd_ps(p, s, set1(-0.05376798287034035f));
  p = _mm512_fmadd_ps(p, s, set1(0.1333167999982834f));
  p = _mm512_fmadd_ps(p, s, set1(-0.3333328366279602f));
  p = _mm512_fmadd_ps(p, s, set1(1.0f));
  const __m512 small = _mm512_mul_ps(p, x);
  const __m512 e = exp(_mm512_add_ps(_mm512_min_ps(set1(10.0f), a), _mm512_min_ps(set1(10.0f), a)));
  __m512 big = _mm512_fnmadd_ps(set1(2.0f), rcp(_mm512_add_ps(e, set1(1.0f))), set1(1.0f));
  // copy x's sign onto big (|big| has a clear sign bit)
  big = _mm512_castsi512_ps(_mm512_or_si512(
      _mm512_castps_si512(big), _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN))));
  const __mmask16 use_small = _mm512_cmp_ps_mask(a, set1(0.6f), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(use_small, big, small);
}

/// Phi(x) = P(N(0,1) <= x) = erfc(-x/sqrt2)/2, with erfc(z) = e^{-z^2} erfcx(z) for z >= 0 and
/// erfcx fitted as t * P(t), t = 1/(1 + z/2). The left tail keeps its relative accuracy (no
/// 1 + erf cancellation). e^{-z^2} = e^{-x^2/2} is computed from x^2 = hi + lo (FMA), so the
/// rounding of x/sqrt2 never reaches the exponent (it would cost 1e-5 relative at |x| = 13).
inline __m512 normal_cdf(__m512 x) {
  const __m512 xa = _mm512_min_ps(set1(14.0f), abs(x));  // Phi(-14) ~ 8e-45: the f32 end
  const __m512 z = _mm512_mul_ps(xa, set1(0.70710678118654752f));
  const __m512 t = rcp(_mm512_fmadd_ps(z, set1(0.5f), set1(1.0f)));
  __m512 p = set1(0.03239865228533745f);
  p = _mm512_fmadd_ps(p, t, set1(-0.1716289073228836f));
  p = _mm512_fmadd_ps(p, t, set1(0.3325686752796173f));
  p = _mm512_fmadd_ps(p, t, set1(-0.21899329125881195f));
  p = _mm512_fmadd_ps(p, t, set1(-0.08664944022893906f));
  p = _mm512_fmadd_ps(p, t, set1(0.07456794381141663f));
  p = _mm512_fmadd_ps(p, t, set1(0.039057519286870956f));
  p = _mm512_fmadd_ps(p, t, set1(0.18979546427726746f));
  p = _mm512_fmadd_ps(p, t, set1(0.24447910487651825f));
  p = _mm512_fmadd_ps(p, t, set1(0.2823184132575989f));
  p = _mm512_fmadd_ps(p, t, set1(0.2820858359336853f));
  const __m512 hi = _mm512_mul_ps(xa, xa);
  const __m512 lo = _mm512_fmsub_ps(xa, xa, hi);
  __m512 e = exp(_mm512_mul_ps(hi, set1(-0.5f)));
  e = _mm512_fnmadd_ps(_mm512_mul_ps(e, set1(0.5f)), lo, e);  // e^{-(hi+lo)/2} ~ e^{-hi/2}(1 - lo/2)
  __m512 half_erfc = _mm512_mul_ps(_mm512_mul_ps(e, set1(0.5f)), _mm512_mul_ps(t, p));
  half_erfc = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(abs(x), set1(14.0f), _CMP_NGE_UQ), half_erfc);
  // x <= 0: Phi = erfc(|x|/sqrt2)/2; x > 0: Phi = 1 - erfc(|x|/sqrt2)/2
  const __mmask16 upper = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
  return _mm512_mask_sub_ps(half_erfc, upper, set1(1.0f), half_erfc);
}

inline __m512 gelu(__m512 x) { return _mm512_mul_ps(x, normal_cdf(x)); }

/// 0.5 x (1 + tanh(u)) == x * sigmoid(2u): same function, no cancellation for negative x.
/// 2u = 2 sqrt(2/pi) (x + 0.044715 x^3) is formed in double and split into hi + lo floats: in f32
/// its rounding alone would cost 1e-5 relative in the left tail (|2u| ~ 60).
inline __m512 gelu_tanh(__m512 x) {
  auto arg = [](__m512d v) {
    const __m512d in = _mm512_fmadd_pd(_mm512_mul_pd(v, v), _mm512_set1_pd(0.044715), _mm512_set1_pd(1.0));
    return _mm512_mul_pd(_mm512_mul_pd(v, in), _mm512_set1_pd(1.5957691216057307117597842397375));
  };
  const __m512d v0 = arg(_mm512_cvtps_pd(_mm512_castps512_ps256(x)));
  const __m512d v1 = arg(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)));
  const __m256 h0 = _mm512_cvtpd_ps(v0), h1 = _mm512_cvtpd_ps(v1);
  const __m256 l0 = _mm512_cvtpd_ps(_mm512_sub_pd(v0, _mm512_cvtps_pd(h0)));
  const __m256 l1 = _mm512_cvtpd_ps(_mm512_sub_pd(v1, _mm512_cvtps_pd(h1)));
  const __m512 vh = _mm512_insertf32x8(_mm512_castps256_ps512(h0), h1, 1);
  __m512 vl = _mm512_insertf32x8(_mm512_castps256_ps512(l0), l1, 1);
  // sigmoid(vh + vl) as in sigmoid(), with e^{-|v|} = e^{-|vh|} (1 -+ vl)
  const __m512 a = abs(vh);
  const __mmask16 neg = _mm512_cmp_ps_mask(vh, _mm512_setzero_ps(), _CMP_LT_OQ);
  vl = _mm512_mask_sub_ps(vl, neg, _mm512_setzero_ps(), vl);
  vl = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, set1(1e4f), _CMP_LT_OQ), vl);  // inf - inf guard
  __m512 e = exp(_mm512_sub_ps(_mm512_setzero_ps(), a));
  e = _mm512_fnmadd_ps(e, vl, e);
  const __m512 s = rcp(_mm512_add_ps(set1(1.0f), e));
  return _mm512_mul_ps(x, _mm512_mask_mul_ps(s, neg, e, s));
}

// ---- 16-bit float loads and stores ----
inline __m512 load_bf16(const std::uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 load_bf16(const std::uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
/// Round to nearest even like float_to_bfloat16; NaN stays a quiet NaN.
inline __m256i to_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(r);
}
inline void store_bf16(std::uint16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16(v));
}
inline void store_bf16(std::uint16_t* p, __m512 v, __mmask16 m) { _mm256_mask_storeu_epi16(p, m, to_bf16(v)); }

inline __m512 load_f16(const std::uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load_f16(const std::uint16_t* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
inline void store_f16(std::uint16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline void store_f16(std::uint16_t* p, __m512 v, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

}  // namespace encore::cpu::ewk::v512
