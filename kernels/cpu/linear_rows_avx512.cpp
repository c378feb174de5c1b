// AVX-512 loop of the decode-sized CPU linear (kernels/cpu/linear_rows.h).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#include <omp.h>

#include <algorithm>

#include "kernels/cpu/linear_rows.h"
#include "kernels/cpu/linear_rows_driver.h"
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/simd_vec_math_avx512.h"

namespace encore::cpu::rows {
namespace {

using i64 = std::int64_t;

constexpr i64 kAhead = 8192;  // bytes

__m512 activate(__m512 v, Activation act) {
  switch (act) {
    case Activation::none: return v;
    case Activation::gelu: return ewk::v512::gelu(v);
    case Activation::gelu_tanh: return ewk::v512::gelu_tanh(v);
    case Activation::relu:  // max returns its second operand when one is NaN: NaN stays NaN
      return _mm512_max_ps(_mm512_setzero_ps(), v);
    case Activation::silu: return _mm512_mul_ps(v, ewk::v512::sigmoid(v));
    case Activation::sigmoid: return ewk::v512::sigmoid(v);
    case Activation::tanh: return ewk::v512::tanh(v);
  }
  return v;
}

// MB rows (x rows m0 .. m0 + MB) times one packed block (columns n0 .. n0 + 32, `valid` of them
// real): sums over k in order, then bias, activation and a masked store.
template <int MB>
void block_rows(const float* x, i64 ldx, i64 K, const float* block, const float* bias, Activation act, float* y,
                i64 N, i64 n0, int valid) {
  __m512 lo[MB], hi[MB];
  for (int m = 0; m < MB; ++m) lo[m] = hi[m] = _mm512_setzero_ps();
  const float* xr[MB];
  for (int m = 0; m < MB; ++m) xr[m] = x + m * ldx;
  for (i64 k = 0; k < K; ++k) {
    const __m512 w0 = _mm512_load_ps(block + k * kRowsBlock), w1 = _mm512_load_ps(block + k * kRowsBlock + 16);
    // One stream per core does not keep enough lines in flight on its own: fetch kAhead bytes
    // ahead into L2, and 1 KiB ahead on into L1 (into the next block at the end: a thread's blocks
    // are contiguous; a prefetch past the buffer does not fault). Measured: 8 KiB beats 2, 16 and
    // 32 KiB; the L2 hint and the L1 step add 5-15 % at 4-8 rows.
    _mm_prefetch(reinterpret_cast<const char*>(block + k * kRowsBlock) + kAhead, _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(block + k * kRowsBlock) + kAhead + 64, _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(block + k * kRowsBlock) + 1024, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(block + k * kRowsBlock) + 1024 + 64, _MM_HINT_T0);
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) {
      const __m512 xb = _mm512_set1_ps(xr[m][k]);
      lo[m] = _mm512_fmadd_ps(xb, w0, lo[m]);
      hi[m] = _mm512_fmadd_ps(xb, w1, hi[m]);
    }
  }
  const __mmask16 mask_lo = static_cast<__mmask16>(valid >= 16 ? 0xffffu : (1u << valid) - 1u);
  const __mmask16 mask_hi = static_cast<__mmask16>(valid >= 32 ? 0xffffu : valid <= 16 ? 0u : (1u << (valid - 16)) - 1u);
  __m512 b_lo = _mm512_setzero_ps(), b_hi = _mm512_setzero_ps();
  if (bias != nullptr) {
    b_lo = _mm512_maskz_loadu_ps(mask_lo, bias + n0);
    b_hi = _mm512_maskz_loadu_ps(mask_hi, bias + n0 + 16);
  }
  for (int m = 0; m < MB; ++m) {
    float* yr = y + m * N + n0;
    _mm512_mask_storeu_ps(yr, mask_lo, activate(_mm512_add_ps(lo[m], b_lo), act));
    _mm512_mask_storeu_ps(yr + 16, mask_hi, activate(_mm512_add_ps(hi[m], b_hi), act));
  }
}

void rows_of_block(const float* x, i64 ldx, i64 M, i64 K, const float* block, const float* bias, Activation act,
                   float* y, i64 N, i64 n0, int valid) {
  for (i64 m0 = 0; m0 < M; m0 += 8) {
    const float* xm = x + m0 * ldx;
    float* ym = y + m0 * N;
    switch (std::min<i64>(8, M - m0)) {
      case 1: block_rows<1>(xm, ldx, K, block, bias, act, ym, N, n0, valid); break;
      case 2: block_rows<2>(xm, ldx, K, block, bias, act, ym, N, n0, valid); break;
      case 3: block_rows<3>(xm, ldx, K, block, bias, act, ym, N, n0, valid); break;
      case 4: block_rows<4>(xm, ldx, K, block, bias, act, ym, N, n0, valid); break;
      case 5: block_rows<5>(xm, ldx, K, block, bias, act, ym, N, n0, valid); break;
      case 6: block_rows<6>(xm, ldx, K, block, bias, act, ym, N, n0, valid); break;
      case 7: block_rows<7>(xm, ldx, K, block, bias, act, ym, N, n0, valid); break;
      default: block_rows<8>(xm, ldx, K, block, bias, act, ym, N, n0, valid); break;
    }
  }
}

}  // namespace

void linear_rows_avx512(const float* x, std::int64_t ldx, std::int64_t M, std::int64_t K, std::int64_t N,
                        const float* packed, const float* bias, Activation act, float* y, int threads) {
  for_each_block(N, threads, [&](i64 b, i64 n0, int valid) {
    rows_of_block(x, ldx, M, K, packed + b * K * kRowsBlock, bias, act, y, N, n0, valid);
  });
}

}  // namespace encore::cpu::rows
