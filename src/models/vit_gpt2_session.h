// The decode side of captioning: a DecoderSession over a paged KV cache, with cross-attention keys
// and values computed once per image and one planned step graph replayed for every token.
#pragma once

#include <optional>

#include "encore/decode/kv_cache.h"
#include "encore/graph/plan.h"
#include "models/vit_gpt2_internal.h"

namespace encore::vitgpt2 {

class Session final : public DecoderSession {
 public:
  /// `encoder_states` [B, T_enc, D] on the plan's device in the model dtype; rows = B * beams.
  Session(const VitGpt2Config& config, const Weights& weights, DType dtype, const PlanOptions& plan_options,
          const Tensor& encoder_states, int beams, int max_length);

  int rows() const override { return rows_; }
  int vocab_size() const override { return static_cast<int>(config_.vocab_size); }
  Tensor step(std::span<const std::int32_t> tokens) override;
  void reorder(std::span<const int> parent) override;

 private:
  void compute_cross_kv(const Tensor& encoder_states, int beams);
  Graph build_step_graph() const;

  const VitGpt2Config& config_;
  const Weights& weights_;
  DType dtype_;
  PlanOptions plan_options_;
  int rows_;
  KvCache cache_;
  std::vector<Tensor> cross_kv_;  // per layer: [rows, T_enc, 2D]
  std::optional<Plan> step_plan_;
};

}  // namespace encore::vitgpt2
