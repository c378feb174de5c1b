// Decode-sized linear on the CPU: y = act(x W + bias) for a few rows of f32 x, streaming every
// weight byte once for all rows; an AVX-512 loop, and an AVX2 one for CPUs without AVX-512. On the
// AVX-512 development machine (2 cores, 31 GB/s read) oneDNN's matmul streams its packed weights at
// ~29 GB/s for one row, 21-25 GB/s for 4-8 rows and 12 GB/s for 32; the AVX-512 loop at 30, 25-26
// and 13 GB/s (bench_cpu_linear BM_DecodeLinear, docs/benchmarks.md, also for the AVX2 loop).
//
// The weight is packed once (PackedWeights::rows_layout) into blocks of kRowsBlock columns: block
// b holds, for k = 0 .. K-1, the kRowsBlock weights W(k, b kRowsBlock + j) contiguously (zeros
// past N), so one block is one contiguous stream of K * 128 bytes. A thread owns a contiguous run
// of blocks and, per block, keeps up to 8 rows (AVX2: 2) x 32 columns of sums in registers; more rows take
// further passes over the block, which is then in L2. One sequential stream per core does not keep
// enough lines in flight, so the loop prefetches a few KiB ahead (worth 20-40 % at 1-8 rows).
//
// Only plain declarations here: inline code shared with the AVX-512 file could be merged by the
// linker into portable callers (see attention_internal.h).
#pragma once

#include <cstdint>

#include "encore/graph/op_attrs.h"

namespace encore::cpu::rows {

/// Columns per packed block (two 16-float vectors; four 8-float ones on AVX2).
inline constexpr std::int64_t kRowsBlock = 32;

/// y[m * N + n] = act(sum_k x[m * ldx + k] * W(k, n) + bias[n]) for m < M, n < N; `packed` in the
/// layout above (64-byte aligned), `bias` dense f32 or null. Runs on `threads` OpenMP threads
/// (blocks split evenly). AVX-512 F/BW/VL/DQ only: call after has_avx512().
void linear_rows_avx512(const float* x, std::int64_t ldx, std::int64_t M, std::int64_t K, std::int64_t N,
                        const float* packed, const float* bias, Activation act, float* y, int threads);
/// The same for CPUs with AVX2 + FMA (linear_rows_avx2.cpp): call after has_avx2().
void linear_rows_avx2(const float* x, std::int64_t ldx, std::int64_t M, std::int64_t K, std::int64_t N,
                      const float* packed, const float* bias, Activation act, float* y, int threads);

}  // namespace encore::cpu::rows
