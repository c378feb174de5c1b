// Stream-K (LeanAttention) decode attention: the body of the persistent kernel. Included by
// decode_attention.cu after decode_attention_core.cuh.
//
// Grid: G persistent CTAs, all co-resident (G <= occupancy x SMs, launched as a cooperative kernel
// so the runtime refuses a grid that could not be). Each CTA:
// 1. Schedule, on the device from the lengths in device memory (one captured CUDA graph serves
//    every decode step): tiles per sequence = Hv * ceil(len / T), prefix sums in shared memory
//    (B <= kMaxLeanBatch), W = total, then lean_schedule.h's even split of W over G and the
//    worker's contiguous range [begin, end), which crosses head boundaries freely.
// 2. Per segment of the range: the segment loop (decode_attention_core.cuh), then by role:
//    - host and finishing (the whole head is here): normalise and store;
//    - otherwise publish the partial (m, l, O) to the slot lean_partial_slot gives and set its flag
//      to this launch's epoch; a worker whose range ends inside the head (the host, and workers
//      wholly inside it) then waits for all the head's flags and merges its slice of the outputs,
//      reading contributors in worker order (bitwise deterministic). The head's last worker only
//      publishes: its piece is its *first* segment, so no worker waits before publishing, and
//      nobody waits on a worker that is itself waiting (no deadlock given co-residency).
// 3. Epochs instead of resets (CUDA-graph replay needs no memset node): thread 0 reads
//    counters[0] at start, epoch = that + 1; flags are compared for equality with the epoch. At the
//    end every CTA increments counters[1]; the last one resets it and increments counters[0], so
//    the next launch on the stream sees a fresh epoch and no CTA of this launch can still read the
//    old one (each read it before arriving).
#pragma once

#include "kernels/cuda/decode_attention_core.cuh"

namespace encore::cuda::dec {

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void store_release(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}

/// Prefix sums of the sequences' tiles into sched[0..B] (B <= kMaxLeanBatch). Contains
/// __syncthreads.
__device__ __forceinline__ void lean_prefix_sums(const Params& p, i64* sched) {
  for (int b = threadIdx.x; b < p.B; b += blockDim.x) sched[b + 1] = sequence_tiles(seq_length(p, b), p.tile, p.Hv);
  if (threadIdx.x == 0) sched[0] = 0;
  __syncthreads();
  if (threadIdx.x < 32) {  // one warp scans in chunks of 32
    const int lane = threadIdx.x;
    i64 carry = 0;
    for (int base = 0; base < p.B; base += 32) {
      const int i = base + lane;
      i64 v = i < p.B ? sched[i + 1] : 0;
#pragma unroll
      for (int o = 1; o < 32; o *= 2) {
        const i64 u = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += u;
      }
      if (i < p.B) sched[i + 1] = carry + v;
      carry += __shfl_sync(0xffffffffu, v, 31);
    }
  }
  __syncthreads();
}

template <class Core>
__device__ void lean_body(const Params& p, unsigned char* smem) {
  constexpr int RB = Core::RB;
  unsigned* s_epoch = reinterpret_cast<unsigned*>(smem);
  i64* sched = reinterpret_cast<i64*>(smem + 16);
  const int worker = blockIdx.x;
  if (threadIdx.x == 0) s_epoch[0] = *reinterpret_cast<volatile unsigned*>(p.counters) + 1u;
  lean_prefix_sums(p, sched);
  const unsigned epoch = s_epoch[0];

  // Sequences without keys get zero outputs (the last worker holds the fewest tiles).
  if (worker == p.G - 1)
    for (int b = 0; b < p.B; ++b)
      if (sched[b + 1] == sched[b])
        for (int v = 0; v < p.Hv; ++v) zero_rows(p, b, v / p.MT, v % p.MT, RB);

  const lean::LeanSplit split = lean::make_lean_split(sched[p.B], p.G);
  i64 pos = lean::lean_begin(split, worker);
  const i64 end = lean::lean_end(split, worker);
  lean::LeanSegment sg;
  while (lean::lean_next_segment(sched, p.B, p.Hv, split, pos, end, sg)) {
    const i64 len = seq_length(p, sg.b);
    const LeanWork wk = lean_work(sg, worker, p.MT, p.tile, len);
    const int nrow = block_rows(p, wk.mt, RB);
    Core::prefetch(p, smem, wk.b, wk.h, wk.k0, wk.k1);
    Core::load_q(p, smem, wk.b, wk.h, wk.mt);
    __syncthreads();
    Core::run(p, smem, wk.b, wk.h, wk.mt, wk.k0, wk.k1, len);
    merge_warps<RB>(p, smem, nrow);
    if (wk.store) {
      store_state<RB>(p, smem, wk.b, wk.h, wk.mt, nrow);
      __syncthreads();
      continue;
    }
    write_partial<RB>(p, smem, wk.slot, nrow);
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      store_release(p.flags + wk.slot, epoch);
    }
    if (!wk.merge) continue;  // the head's last worker: on to its next head
    const int n = wk.last - wk.first + 1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const unsigned* f = p.flags + contributor_slot(wk.first, i);
      while (load_acquire(f) != epoch) __nanosleep(32);
    }
    __syncthreads();
    const i64 E = static_cast<i64>(nrow) * p.D;
    Stat<RB>* st = reinterpret_cast<Stat<RB>*>(smem + p.off_stat);
    auto slot_of = [&](int i) { return contributor_slot(wk.first, i); };
    merge_partials<RB>(
        p, GlobalSlots<RB, decltype(slot_of)>{p, slot_of}, n, wk.b, wk.h, wk.mt,
        slice_begin(E, wk.mergers, wk.merge_index), slice_begin(E, wk.mergers, wk.merge_index + 1),
        reinterpret_cast<float*>(smem + p.off_warps), st->l);
  }

  // Advance the epoch once every CTA is done with it.
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(p.counters + 1, 1u) == static_cast<unsigned>(p.G - 1)) {
      atomicExch(p.counters + 1, 0u);
      __threadfence();
      atomicAdd(p.counters, 1u);
    }
  }
}

}  // namespace encore::cuda::dec
