// The normaliser of an attention row from its softmax sum l, shared by the CPU and CUDA attention
// kernels so that they agree on the two special rows: l = 0 (every key masked) gives 0, so the row
// comes out as zeros; l = NaN (a NaN score somewhere in the row) stays NaN, as in torch. (The
// Hopper kernel takes softmax_row_kept and its own hardware reciprocal, attention_hopper.cu.)
#pragma once

#if defined(__CUDACC__)
#define ENCORE_SOFTMAX_HD __host__ __device__
#else
#define ENCORE_SOFTMAX_HD
#endif

namespace encore {

/// Whether a row with softmax sum `l` is written from its accumulator (else zeros): l > 0 or NaN.
ENCORE_SOFTMAX_HD inline bool softmax_row_kept(float l) { return l > 0.0f || l != l; }

/// 1 / l for a kept row, 0 for a fully masked one (l == 0).
ENCORE_SOFTMAX_HD inline float softmax_row_scale(float l) { return softmax_row_kept(l) ? 1.0f / l : 0.0f; }

}  // namespace encore
