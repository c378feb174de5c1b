// What the fused decoder step's kernel (kernels/cuda/fused_decoder_step.cu) and its host side
// (src/backends/cuda/fused_decoder_step.cpp) share: the launch geometry and the kernel's arguments.
#pragma once

#include <cstddef>

#include "backends/cuda/fused_decoder_step.h"

namespace encore::cuda::fused {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kSlots = 8;                 // slices in flight per CTA
constexpr int kMaxRows = FusedDecoderStep::kMaxRows;
constexpr int kMatrices = 6;              // projections per layer, in consumption order
constexpr int kMaxLayers = 48;            // layer arguments are kept in shared memory
constexpr int kMaxHidden = 4 * kThreads;  // LayerNorm parameters are prefetched, 4 per thread
constexpr int kMaxColumns = 64;           // a CTA's columns of one projection (biases are staged)
constexpr int kMaxTableBlocks = 128;      // block-table entries per row kept in shared memory
// Profiling, per barrier: arrival and departure (global timer, ns: comparable across SMs, but it
// ticks in 1.024 us steps), then on the SM's cycle counter: departure, arrival, cycles waited for
// weights, and the clock when the phase ending there had its inputs loaded, its LayerNorm done and
// its projection done.
enum TraceValue { kArriveNs, kLeaveNs, kLeaveClk, kArriveClk, kWaitedClk, kLoadedClk, kNormedClk, kProjectedClk };
constexpr int kTraceValues = 8;

struct LayerArgs {
  const void* ln1_w; const void* ln1_b; const void* qkv_b; const void* proj_b;
  const void* lnx_w; const void* lnx_b; const void* xq_b; const void* xproj_b;
  const void* ln2_w; const void* ln2_b; const void* fc_b; const void* fc2_b;
  const void* w[kMatrices];  // transposed [N, K]: qkv [3D, D], proj, xq, xproj [D, D], fc [F, D], fc2 [D, F]
  void* k_cache; void* v_cache;
  const void* cross_kv;
};

// Per-row statistics of a range of logits: max and sum of exp(l - max), with and without eos, and
// the argmax (ties -> lowest index, NaN counts as maximal: torch.argmax) with and without eos.
struct Partial {
  float m, s, m_ne, s_ne;
  int arg, arg_ne;
  float argv, arg_ne_v;
};

struct StepArgs {
  const LayerArgs* layers;
  int num_layers;
  const void* wte; const void* wpe; const void* lnf_w; const void* lnf_b;
  const int* tokens;       // [R, 2]: id, position
  const int* table;        // [R, max_blocks]
  const int* lengths;      // [R]
  int max_blocks, block_size;
  int rows, beams, d, heads, hd, ffn, vocab, t_enc;
  float eps, scale;
  int gelu_tanh;
  float* h; float* q; float* att; float* mlp;   // workspace, f32
  float* logits;           // [R, V]: log-probabilities when write_log_probs
  Partial* partial;        // [G, R]
  FusedGreedyPick* picks;  // [R]
  unsigned long long* barrier;  // arrivals since the buffer was zeroed (see grid_barrier)
  int eos, write_log_probs;
  int x_floats, max_keys, ring_bytes;
  unsigned long long* trace;  // profiling: [G][barriers][kTraceValues], or null
};

/// Grid barriers per step: one after the embeddings, 8 per layer, one before the final merge.
constexpr int barriers_per_step(int layers) { return 2 + 8 * layers; }

#if defined(__CUDACC__)
#define ENCORE_FUSED_HD __host__ __device__
#else
#define ENCORE_FUSED_HD
#endif

/// Placement of weight slices in the ring (a FIFO in shared memory): `head` is the next free offset
/// and `used` the bytes held, the gaps left by wrapping included. A slice never wraps: one that
/// does not fit before the end starts at offset 0 and the gap before it counts as held until the
/// slice is consumed. Shared by the kernel and the host test that sweeps it.
struct RingSpace {
  unsigned head = 0, used = 0;

  /// Places `bytes` (<= cap) if the ring has room now: sets `offset` (and `span`, the bytes to give
  /// back when the slice is consumed) and returns true.
  ENCORE_FUSED_HD bool place(unsigned bytes, unsigned cap, unsigned& offset, unsigned& span) {
    if (used == 0) head = 0;  // empty: start over, so that any slice <= cap fits
    const bool wrap = head + bytes > cap;
    const unsigned gap = wrap ? cap - head : 0u;
    if (used + gap + bytes > cap) return false;
    offset = wrap ? 0u : head;
    span = gap + bytes;
    used += span;
    head = offset + bytes;
    return true;
  }
  /// Gives back the oldest slice (slices are consumed in the order they were placed).
  ENCORE_FUSED_HD void release(unsigned span) { used -= span; }
};

/// Bytes of the kernel's fixed shared-memory header (ring bookkeeping, reduction scratch).
std::size_t shared_header_bytes();
/// The kernel for f16 or bf16 weights (for cudaLaunchKernelExC and the attribute calls).
const void* step_kernel(DType dtype);

}  // namespace encore::cuda::fused
