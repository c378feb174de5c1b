// One decode step of a pre-LayerNorm Transformer decoder stack (GPT-2 layout: self-attention over
// a paged KV cache, cross-attention over cached encoder keys/values, GELU MLP, tied LM head) as a
// single persistent CUDA kernel (kernels/cuda/fused_decoder_step.cu).
//
// Why: as a graph, a GPT-2-small step is ~200 dependent kernels of a few µs each, so a step costs
// ~0.8 ms on an H200 while its weights stream in ~80 µs. The fused step runs one CTA per SM that
// walks the layers phase by phase (LN+QKV, self-attention, out-projection+residual, LN+cross-Q,
// cross-attention, out-projection+residual, LN+fc+GELU, fc2+residual; then LN+LM head and the
// log-softmax statistics), separated by grid-wide barriers. The weights do not depend on the
// activations, so each CTA streams the slices it will need (1-d bulk copies into a shared-memory
// ring) ahead of the barriers: memory keeps streaming while the phases wait on each other.
// Measured (H200, GPT-2 small, f16, batch 1): 0.62 ms per step against 0.86 ms for the graph. The
// weights arrive in time; what remains is latency: ~100 phases of ~1 µs dependent steps each
// (docs/benchmarks.md has the per-phase profile bench_cuda_fused_step prints).
//
// Numerics: activations, LayerNorm, attention and logits in f32; the KV cache stores keys/values
// in the model dtype, as the graph's kv_cache_write does. Results are deterministic (fixed
// reduction orders, no atomics on data).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "encore/core/tensor.h"

namespace encore::cuda {

/// One decoder layer's tensors on the device, in the model dtype (f16 or bf16). Projections are
/// [in, out] (GPT-2 Conv1D layout); they are repacked once, transposed, by FusedDecoderStep.
struct FusedDecoderLayer {
  Tensor ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b;       // self-attention: qkv_w [D, 3D]
  Tensor lnx_w, lnx_b, xq_w, xq_b, xproj_w, xproj_b;       // cross-attention
  Tensor ln2_w, ln2_b, fc_w, fc_b, fc2_w, fc2_b;           // MLP: fc_w [D, F], fc2_w [F, D]
  Tensor k_cache, v_cache;  ///< [blocks, H, block_size, D/H] (KvCache::keys/values of the layer)
  Tensor cross_kv;          ///< [images, T_enc, 2D]: keys in [..., :D], values in [..., D:]
};

struct FusedDecoderWeights {
  Tensor wte;           ///< [V, D]: token embeddings, also the LM head (tied)
  Tensor wpe;           ///< [P, D]: position embeddings
  Tensor ln_f_w, ln_f_b;
  std::vector<FusedDecoderLayer> layers;
  Tensor block_table;   ///< i32 [rows, max_blocks] of the KV cache (read on the device each step)
  Tensor lengths;       ///< i32 [rows]: tokens cached per row, the new one included
};

struct FusedDecoderShape {
  int rows = 1;         ///< sequences (images x beams)
  int beams = 1;        ///< consecutive rows that share an image's cross keys/values
  int heads = 12;
  float layer_norm_eps = 1e-5f;
  bool gelu_tanh = true;  ///< GPT-2's gelu_new; false = erf GELU
};

/// The greedy choice of one row, made on the device: the argmax of the logits (ties -> lowest
/// index) and its log-probability; the same with the eos token excluded (min-length masking), its
/// log-probability renormalised over the remaining tokens.
struct FusedGreedyPick {
  std::int32_t token = 0;
  float log_prob = 0.0f;
  std::int32_t token_without_eos = 0;
  float log_prob_without_eos = 0.0f;
};

/// The projections repacked (transposed) for the fused step. Made once per model and shared by
/// every FusedDecoderStep over those weights (sessions of other shapes): ~the decoder's weights
/// again in device memory, so not once per session.
struct FusedDecoderPack;

class FusedDecoderStep {
 public:
  static constexpr int kMaxRows = 8;

  /// Empty when the fused step can run this model on its device; otherwise the reason it cannot
  /// (so that callers fall back to the graph and can say why).
  static std::string unsupported_reason(const FusedDecoderShape& shape, const FusedDecoderWeights& weights);

  /// The transposed projections of `weights` (their caches and cross keys/values are not used).
  static std::shared_ptr<const FusedDecoderPack> pack(const FusedDecoderWeights& weights);

  /// Allocates the step's workspace over `pack` (made by pack() from these weights; null: packs
  /// here). Throws Error(unsupported) with unsupported_reason() when it cannot run,
  /// Error(invalid_argument) for a pack of other weights.
  FusedDecoderStep(const FusedDecoderShape& shape, FusedDecoderWeights weights,
                   std::shared_ptr<const FusedDecoderPack> pack = nullptr);
  ~FusedDecoderStep();
  FusedDecoderStep(const FusedDecoderStep&) = delete;
  FusedDecoderStep& operator=(const FusedDecoderStep&) = delete;

  /// Queues one step: `tokens` = (token id, position) per row, host memory. The KV cache must have
  /// room reserved and its lengths advanced (they count the new token). With `log_probs` the step
  /// also writes log_softmax(logits) of every row (log_probs()). Throws Error(unsupported), with
  /// nothing written on the device, when the GPU context cannot hold the grid's CTAs all at once
  /// (MPS with an SM limit, a green context): callers can then take another path.
  void run(std::span<const std::int32_t> tokens, int eos_token_id, bool log_probs);
  /// f32 [rows, V] on the device: the last run's log-probabilities (when it was asked for them).
  const Tensor& log_probs() const noexcept { return log_probs_; }
  /// Waits for the last run and returns its picks (one per row).
  std::vector<FusedGreedyPick> picks();

  /// Profiling (benchmarks): while on, every CTA records the device clock (ns) when it reaches
  /// and leaves each grid barrier of a step, and how long it waited for weights before it.
  void set_profiling(bool on);
  /// Waits for the last run; [CTA][barrier][kTraceValues] (kernels/cuda/fused_decoder_step_internal.h
  /// says what each value is) as one flat vector (empty when off).
  std::vector<std::uint64_t> profile();
  /// Grid barriers per step and CTAs per grid (the profile's dimensions).
  int barriers() const noexcept;
  int ctas() const noexcept;
  /// Tests: launch `ctas` (> 4 per SM: never co-resident) CTAs, so that run() fails as under MPS.
  void set_grid_for_testing(int ctas);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Tensor log_probs_;
};

}  // namespace encore::cuda
