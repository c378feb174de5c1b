// The decode side of captioning: a DecoderSession over a paged KV cache, with cross-attention keys
// and values computed once per image and one planned step graph replayed for every token.
#pragma once

#include <memory>
#include <optional>

#include "encore/decode/kv_cache.h"
#include "encore/graph/plan.h"
#include "models/vit_gpt2_internal.h"

#ifdef ENCORE_HAVE_CUDA
#include "backends/cuda/fused_decoder_step.h"
#endif

namespace encore::vitgpt2 {

// Reusable: restart() begins a new caption over new encoder states of the same shape, keeping
// the planned (on CUDA: recorded) step and cross-attention graphs and the cache.
// On CUDA in f16/bf16 the step is the fused decoder step (backends/cuda/fused_decoder_step.h: one
// kernel instead of a ~200-node graph) unless ENCORE_CUDA_FUSED_STEP=0 or the model does not fit
// it; greedy decoding then also picks tokens on the device (chooses_greedy). On the CPU greedy
// choices are made on the step plan's output in place.
class Session final : public DecoderSession {
 public:
  /// `encoder_states` [B, T_enc, D] on the plan's device in the model dtype; rows = B * beams, where
  /// `beams` counts the consecutive rows of one image (its beams, or its samples when sampling
  /// several sequences: generation_rows_per_item).
  Session(const VitGpt2Config& config, const Weights& weights, DType dtype, const PlanOptions& plan_options,
          const Tensor& encoder_states, int beams, int max_length);

  /// True when restart() can take encoder states of this shape with these settings.
  bool fits(const Shape& encoder_shape, int beams, int max_length) const;
  /// Empties the cache and recomputes the cross-attention keys/values (in place: the step graph
  /// reads them where they are).
  void restart(const Tensor& encoder_states);

  int rows() const override { return rows_; }
  int vocab_size() const override { return static_cast<int>(config_.vocab_size); }
  Tensor step(std::span<const std::int32_t> tokens) override;
  void reorder(std::span<const int> parent) override;
  bool step_returns_log_probs() const override { return true; }
  /// With the fused CUDA step the choice is made on the device; with the step graph on the graph's
  /// log-probs (on the CPU in place: no copy of rows x vocab per step), as generate() would.
  bool chooses_greedy() const override { return true; }
  std::vector<GreedyChoice> step_greedy(std::span<const std::int32_t> tokens, std::int32_t eos_token_id) override;
  /// Whether steps run as the fused CUDA decoder step.
  bool fused_step() const noexcept;
#ifdef ENCORE_HAVE_CUDA
  /// The fused step (null when the session runs the graph), e.g. for profiling.
  cuda::FusedDecoderStep* fused() noexcept { return fused_.get(); }
#endif

 private:
  Plan build_cross_plan(const Tensor& encoder_states) const;
  void compute_cross_kv(const Tensor& encoder_states);
  Graph build_step_graph() const;
  /// Checks the tokens, makes room in the cache and returns (token, position) per row.
  Tensor begin_step(std::span<const std::int32_t> tokens);
  void try_fused_step();
#ifdef ENCORE_HAVE_CUDA
  /// Runs the fused step on `input` (begin_step's); false when there is none, or when it cannot
  /// launch in this GPU context, in which case the session switches to the step graph for good.
  bool run_fused(const Tensor& input, std::int32_t eos_token_id, bool log_probs);
#endif
  /// Runs the step graph on `input`: log-probs [rows, V] in host memory (on the CPU the plan's
  /// output itself, valid until the next step).
  Tensor graph_log_probs(const Tensor& input);

  const VitGpt2Config& config_;
  const Weights& weights_;
  DType dtype_;
  PlanOptions plan_options_;
  Shape encoder_shape_;
  int beams_, max_length_;
  int rows_;
  KvCache cache_;
  Plan cross_plan_;               // encoder states -> cross K/V of every layer
  std::vector<Tensor> cross_kv_;  // per layer: [images, T_enc, 2D], outputs of cross_plan_ (rewritten in place)
  std::optional<Plan> step_plan_;  // the step as a graph, when it is not fused
#ifdef ENCORE_HAVE_CUDA
  std::unique_ptr<cuda::FusedDecoderStep> fused_;
#endif
};

}  // namespace encore::vitgpt2
