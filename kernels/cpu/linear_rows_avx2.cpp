// AVX2 + FMA loop of the decode-sized CPU linear (kernels/cpu/linear_rows.h), for CPUs without
// AVX-512: the same packed blocks of 32 columns (4 ymm vectors per k), the same order of the sums
// and the same prefetches. Two rows per pass over a block (8 accumulators, the 4 weight vectors and
// a broadcast fit the 16 ymm registers); more rows take further passes, with the block then in L2.
// The activation runs on each finished row segment through the portable row function, as AVX2 has
// no vector math of ours.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>

#include "kernels/cpu/linear_rows.h"
#include "kernels/cpu/linear_rows_driver.h"

namespace encore::cpu {
namespace ewk {
// (elementwise.cpp, compiled for the baseline ISA; declared here rather than through
// simd_common.h, whose inline code must not be compiled for AVX2 in this file.)
void activation_row(const float* x, float* y, std::int64_t n, Activation act);
}  // namespace ewk

namespace rows {
namespace {

using i64 = std::int64_t;

constexpr i64 kAhead = 8192;  // bytes, as in linear_rows_avx512.cpp

template <int MB>
void block_rows(const float* x, i64 ldx, i64 K, const float* block, const float* bias, Activation act, float* y,
                i64 N, i64 n0, int valid) {
  __m256 acc[MB][4];
#pragma GCC unroll 2
  for (int m = 0; m < MB; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm256_setzero_ps();
  const float* xr[MB];
  for (int m = 0; m < MB; ++m) xr[m] = x + m * ldx;
  for (i64 k = 0; k < K; ++k) {
    const float* wk = block + k * kRowsBlock;
    const __m256 w0 = _mm256_load_ps(wk), w1 = _mm256_load_ps(wk + 8);
    const __m256 w2 = _mm256_load_ps(wk + 16), w3 = _mm256_load_ps(wk + 24);
    _mm_prefetch(reinterpret_cast<const char*>(wk) + kAhead, _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(wk) + kAhead + 64, _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(wk) + 1024, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(wk) + 1024 + 64, _MM_HINT_T0);
#pragma GCC unroll 2
    for (int m = 0; m < MB; ++m) {
      const __m256 xb = _mm256_broadcast_ss(xr[m] + k);
      acc[m][0] = _mm256_fmadd_ps(xb, w0, acc[m][0]);
      acc[m][1] = _mm256_fmadd_ps(xb, w1, acc[m][1]);
      acc[m][2] = _mm256_fmadd_ps(xb, w2, acc[m][2]);
      acc[m][3] = _mm256_fmadd_ps(xb, w3, acc[m][3]);
    }
  }
  alignas(32) float sums[kRowsBlock];
#pragma GCC unroll 2
  for (int m = 0; m < MB; ++m) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) _mm256_store_ps(sums + 8 * j, acc[m][j]);
    float* yr = y + m * N + n0;
    for (int j = 0; j < valid; ++j) yr[j] = sums[j] + (bias != nullptr ? bias[n0 + j] : 0.0f);
    if (act != Activation::none) ewk::activation_row(yr, yr, valid, act);
  }
}

void rows_of_block(const float* x, i64 ldx, i64 M, i64 K, const float* block, const float* bias, Activation act,
                   float* y, i64 N, i64 n0, int valid) {
  for (i64 m0 = 0; m0 < M; m0 += 2) {
    if (M - m0 >= 2)
      block_rows<2>(x + m0 * ldx, ldx, K, block, bias, act, y + m0 * N, N, n0, valid);
    else
      block_rows<1>(x + m0 * ldx, ldx, K, block, bias, act, y + m0 * N, N, n0, valid);
  }
}

}  // namespace

void linear_rows_avx2(const float* x, std::int64_t ldx, std::int64_t M, std::int64_t K, std::int64_t N,
                      const float* packed, const float* bias, Activation act, float* y, int threads) {
  for_each_block(N, threads, [&](i64 b, i64 n0, int valid) {
    rows_of_block(x, ldx, M, K, packed + b * K * kRowsBlock, bias, act, y, N, n0, valid);
  });
}

}  // namespace rows
}  // namespace encore::cpu
