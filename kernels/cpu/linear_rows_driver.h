// The part of linear_rows' ISA-specific loops that does not depend on the ISA: which thread streams
// which packed blocks. Included only by linear_rows_avx512.cpp and linear_rows_avx2.cpp, and all in
// an unnamed namespace, so that each keeps its own copy compiled for its ISA (see linear_rows.h).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/linear_rows.h"

namespace encore::cpu::rows {
namespace {

/// Calls block(b, n0, valid) for every packed block b of an N-column weight (its columns n0 ..
/// n0 + valid), giving each of up to `threads` OpenMP threads one contiguous run of blocks: each
/// thread streams one contiguous part of the weight.
template <typename Block>
void for_each_block(std::int64_t N, int threads, Block&& block) {
  const std::int64_t blocks = (N + kRowsBlock - 1) / kRowsBlock;
  const int nt = static_cast<int>(std::clamp<std::int64_t>(threads, 1, std::max<std::int64_t>(blocks, 1)));
  auto run = [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b)
      block(b, b * kRowsBlock, static_cast<int>(std::min<std::int64_t>(kRowsBlock, N - b * kRowsBlock)));
  };
  if (nt <= 1) return run(0, blocks);
#pragma omp parallel num_threads(nt)
  {
    const std::int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
    run(blocks * t / n, blocks * (t + 1) / n);
  }
}

}  // namespace
}  // namespace encore::cpu::rows
