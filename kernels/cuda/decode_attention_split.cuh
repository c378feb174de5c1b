// Split-KV (FlashDecoding) and plain decode attention: the body of the split kernel and the combine
// kernel. Included by decode_attention.cu after decode_attention_core.cuh.
//
// Grid: B x Hv x s CTAs (CTA = ((b * Hv) + v) * s + piece), fixed at launch so that a captured
// CUDA graph serves every length: each CTA reads its sequence's length from device memory and cuts
// the head into pieces = min(s, tiles) near-equal tile ranges (lean_schedule.h's split arithmetic);
// CTAs past the piece count exit. A head in one piece (always so for plain, s = 1) is stored
// directly; otherwise each piece writes its partial to slot CTA and the combine kernel merges the
// pieces in piece order (deterministic). Two launches, as FlashDecoding.
#pragma once

#include "kernels/cuda/decode_attention_core.cuh"

namespace encore::cuda::dec {

template <class Core>
__device__ void split_body(const Params& p, unsigned char* smem) {
  constexpr int RB = Core::RB;
  const i64 cta = blockIdx.x;
  const int b = static_cast<int>(cta / (static_cast<i64>(p.splits) * p.Hv));
  const i64 len = seq_length(p, b);
  const SplitWork sw = split_work(cta, p.Hv, p.MT, p.splits, p.tile, len);
  if (sw.pieces == 0) {  // no keys: zero outputs
    if (sw.piece == 0) zero_rows(p, sw.b, sw.h, sw.mt, RB);
    return;
  }
  if (sw.piece >= sw.pieces) return;
  const int nrow = block_rows(p, sw.mt, RB);
  Core::prefetch(p, smem, sw.b, sw.h, sw.k0, sw.k1);
  Core::load_q(p, smem, sw.b, sw.h, sw.mt);
  __syncthreads();
  Core::run(p, smem, sw.b, sw.h, sw.mt, sw.k0, sw.k1, len);
  merge_warps<RB>(p, smem, nrow);
  if (sw.pieces == 1)
    store_state<RB>(p, smem, sw.b, sw.h, sw.mt, nrow);
  else
    write_partial<RB>(p, smem, cta, nrow);
}

inline constexpr int kCombineThreads = 128;
inline constexpr int kCombineElements = 512;  // outputs per combine CTA

/// Combine: grid (B * Hv, ceil(RB * D / kCombineElements)); merges the pieces of one head's rows.
/// Shared memory: 2 * splits * RB + RB floats.
template <int RB>
__global__ void __launch_bounds__(kCombineThreads) split_combine_kernel(const Params p) {
  extern __shared__ __align__(16) float csm[];
  pdl::begin();
  const int head = blockIdx.x, b = head / p.Hv, v = head % p.Hv, h = v / p.MT, mt = v % p.MT;
  const i64 len = seq_length(p, b);
  const int pieces = static_cast<int>(lean::split_pieces(lean::tiles_for_length(len, p.tile), p.splits));
  if (pieces <= 1) return;  // stored by the split kernel (or zeroed)
  const i64 E = static_cast<i64>(block_rows(p, mt, RB)) * p.D;
  const i64 e0 = static_cast<i64>(blockIdx.y) * kCombineElements;
  const i64 e1 = e0 + kCombineElements < E ? e0 + kCombineElements : E;
  if (e0 >= E) return;
  const i64 first = static_cast<i64>(head) * p.splits;
  merge_partials<RB>(
      p, [&](int i) { return first + i; }, pieces, b, h, mt, e0, e1, csm, csm + 2 * p.splits * RB);
}

}  // namespace encore::cuda::dec
