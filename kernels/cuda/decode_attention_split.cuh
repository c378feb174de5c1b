// Split-KV (FlashDecoding) and plain decode attention: the body of the split kernel and the combine
// kernel. Included by decode_attention.cu after decode_attention_core.cuh.
//
// Grid: B x Hv x s CTAs (CTA = ((b * Hv) + v) * s + piece), fixed at launch so that a captured
// CUDA graph serves every length: each CTA reads its sequence's length from device memory and cuts
// the head into pieces = min(s, tiles) near-equal tile ranges (lean_schedule.h's split arithmetic);
// CTAs past the piece count exit (in a cluster they take its barriers first). A head in one piece (always so for plain, s = 1) is stored
// directly; otherwise each piece writes its partial to slot CTA, and the pieces are merged in piece
// order (deterministic, whichever CTA merges):
// - fused (p.head_counters set): each piece takes a ticket from its head's counter once its partial
//   is visible; the piece that draws the last ticket merges all of them and sets the counter back
//   to 0, so the next launch (or graph replay) finds it armed without a memset. One launch: on
//   short caches the second kernel's launch and drain were a third of the call;
// - cluster (p.cluster > 1, sm_90): the pieces of a head are one thread-block cluster and merge
//   through distributed shared memory (cluster_merge below), nothing in global memory;
// - otherwise the combine kernel merges them, a second launch as in FlashDecoding.
#pragma once

#include "kernels/cuda/decode_attention_core.cuh"

namespace encore::cuda::dec {

/// The cluster merge (p.cluster > 1: the s pieces of a head are the s CTAs of one cluster, rank =
/// piece): once every piece's merged state is in its shared memory, each CTA merges a slice of the
/// head's outputs from all pieces' states through distributed shared memory, in piece order like
/// the other merges; then no CTA leaves before the others have read its state. Idle CTAs (piece >=
/// pieces) hold no state but merge a slice too. Versus the ticket: no partial round trip through
/// L2, no fence and atomic, and the merge spread over s CTAs instead of one.
template <int RB>
__device__ void cluster_merge(const Params& p, unsigned char* smem, const SplitWork& sw, int nrow) {
  const Stat<RB>* st = reinterpret_cast<const Stat<RB>*>(smem + p.off_stat);
  cluster_sync();
  const i64 E = static_cast<i64>(nrow) * p.D;
  const int rank = static_cast<int>(sw.piece), n = static_cast<int>(sw.pieces);
  float* scratch = reinterpret_cast<float*>(smem + p.off_cscratch);  // [2 n RB] + inv_l [RB]
  merge_partials<RB>(p, ClusterSlots<RB>{st->m, st->l, warp_state(p, smem, 0) + 2 * RB}, n, sw.b, sw.h, sw.mt,
                     slice_begin(E, p.cluster, rank), slice_begin(E, p.cluster, rank + 1), scratch,
                     scratch + 2 * n * RB);
  cluster_sync();
}

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
  // The same for every CTA of a cluster (one head): either all take the cluster barriers or none.
  const bool in_cluster = p.cluster > 1 && sw.pieces > 1;
  if (sw.piece >= sw.pieces && !in_cluster) return;
  const int nrow = block_rows(p, sw.mt, RB);
  if (sw.piece < sw.pieces) {
    Core::prefetch(p, smem, sw.b, sw.h, sw.k0, sw.k1);
    Core::load_q(p, smem, sw.b, sw.h, sw.mt);
    __syncthreads();
    Core::run(p, smem, sw.b, sw.h, sw.mt, sw.k0, sw.k1, len);
    merge_warps<RB>(p, smem, nrow);
  }
  if (sw.pieces == 1) {
    store_state<RB>(p, smem, sw.b, sw.h, sw.mt, nrow);
    return;
  }
  if (in_cluster) return cluster_merge<RB>(p, smem, sw, nrow);
  write_partial<RB>(p, smem, cta, nrow);
  if (p.head_counters == nullptr) return;  // the combine kernel merges
  __shared__ unsigned ticket;
  __threadfence();  // this thread's partial stores, before the ticket below
  __syncthreads();
  const i64 head = cta / p.splits;
  if (threadIdx.x == 0) ticket = atomicAdd(p.head_counters + head, 1u);
  __syncthreads();
  if (ticket != static_cast<unsigned>(sw.pieces - 1)) return;
  __threadfence();  // the other pieces' partials (read through L2 by merge_partials)
  Stat<RB>* st = reinterpret_cast<Stat<RB>*>(smem + p.off_stat);
  const i64 first = head * p.splits;
  auto slot_of = [first](int i) { return first + i; };
  merge_partials<RB>(p, GlobalSlots<RB, decltype(slot_of)>{p, slot_of}, sw.pieces, sw.b, sw.h, sw.mt, 0,
                     static_cast<i64>(nrow) * p.D, reinterpret_cast<float*>(smem + p.off_warps), st->l);
  if (threadIdx.x == 0) p.head_counters[head] = 0u;  // every piece has taken its ticket: re-armed
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
  auto slot_of = [first](int i) { return first + i; };
  merge_partials<RB>(p, GlobalSlots<RB, decltype(slot_of)>{p, slot_of}, pieces, b, h, mt, e0, e1, csm,
                     csm + 2 * p.splits * RB);
}

}  // namespace encore::cuda::dec
