// AVX-512 row statistics and normalisation for layer/rms/group norm and softmax.
// Called only after has_avx512() (see simd_avx512.h).
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*: GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/simd_vec_math_avx512.h"

namespace encore::cpu::ewk::avx512 {

using namespace v512;

namespace {

// Sums f(vector) over a row with four independent accumulators (64 partial sums: better rounding
// than one running sum, and no dependency chain on the adds).
template <typename F>
inline float accumulate(const float* x, i64 n, F f) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  i64 i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, f(_mm512_loadu_ps(x + i)));
    s1 = _mm512_add_ps(s1, f(_mm512_loadu_ps(x + i + 16)));
    s2 = _mm512_add_ps(s2, f(_mm512_loadu_ps(x + i + 32)));
    s3 = _mm512_add_ps(s3, f(_mm512_loadu_ps(x + i + 48)));
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_add_ps(s0, f(_mm512_loadu_ps(x + i)));
  if (i < n) {  // masked lanes must contribute 0 after f
    const __mmask16 m = tail_mask(n - i);
    s1 = _mm512_add_ps(s1, _mm512_maskz_mov_ps(m, f(_mm512_maskz_loadu_ps(m, x + i))));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

template <typename F>
inline void map(const float* x, float* y, i64 n, F f) {
  i64 i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, f(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, f(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

}  // namespace

float sum_dev(const float* x, i64 n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  return accumulate(x, n, [&](__m512 v) { return _mm512_sub_ps(v, s); });
}

float sum_sq_dev(const float* x, i64 n, float mean) {
  const __m512 m = _mm512_set1_ps(mean);
  return accumulate(x, n, [&](__m512 v) {
    const __m512 d = _mm512_sub_ps(v, m);
    return _mm512_mul_ps(d, d);
  });
}

float sum_sq(const float* x, i64 n) {
  return accumulate(x, n, [](__m512 v) { return _mm512_mul_ps(v, v); });
}

void normalize(const float* x, float* y, i64 n, float mean, float rstd, const float* g, const float* b) {
  const __m512 m = _mm512_set1_ps(mean), r = _mm512_set1_ps(rstd);
  i64 i = 0;
  auto one = [&](i64 at, __mmask16 k) {
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + at), m), r);
    if (g) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, g + at));
    if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + at));
    _mm512_mask_storeu_ps(y + at, k, v);
  };
  for (; i + 16 <= n; i += 16) one(i, static_cast<__mmask16>(0xffff));
  if (i < n) one(i, tail_mask(n - i));
}

void add(const float* a, const float* b, float* s, i64 n) {
  i64 i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(s + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(s + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
  }
}

float max(const float* x, i64 n) {
  const __m512 lowest = _mm512_set1_ps(-__builtin_inff());
  __m512 m0 = lowest, m1 = lowest;
  i64 i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + i + 16));
  }
  for (; i + 16 <= n; i += 16) m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
  if (i < n) m1 = _mm512_mask_max_ps(m1, tail_mask(n - i), m1, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

float exp_shift_sum(const float* x, float* y, i64 n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  i64 i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 e0 = v512::exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
    const __m512 e1 = v512::exp(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), s));
    _mm512_storeu_ps(y + i, e0);
    _mm512_storeu_ps(y + i + 16, e1);
    a0 = _mm512_add_ps(a0, e0);
    a1 = _mm512_add_ps(a1, e1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 e = _mm512_maskz_mov_ps(m, v512::exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s)));
    _mm512_mask_storeu_ps(y + i, m, e);
    a0 = _mm512_add_ps(a0, e);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

void mul_scalar(const float* x, float* y, i64 n, float s) {
  const __m512 v = _mm512_set1_ps(s);
  map(x, y, n, [&](__m512 u) { return _mm512_mul_ps(u, v); });
}

void sub_scalar(const float* x, float* y, i64 n, float s) {
  const __m512 v = _mm512_set1_ps(s);
  map(x, y, n, [&](__m512 u) { return _mm512_sub_ps(u, v); });
}

}  // namespace encore::cpu::ewk::avx512
