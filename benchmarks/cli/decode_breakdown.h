// Where a caption's time goes: the encoder alone; every projection of one decode step timed at its
// real shape (all layers' weights distinct, so they stream from memory as in the real step); the
// cross-attention of a step; and the search (generate() over a session that returns fixed logits).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "encore/core/dtype.h"
#include "encore/core/tensor.h"
#include "encore/decode/generation.h"
#include "encore/models/vit_gpt2.h"

namespace encore::bench {

/// One part of a decode step (e.g. the self-attention QKV projection of every layer).
struct StepPart {
  std::string name;       ///< "self qkv", "lm head", "cross attention", "search", ...
  std::string shape;      ///< "[768, 2304]" for a weight, "[rows, 197, 768]" for attention
  int per_step = 0;       ///< how many a step runs (layers, or 1)
  double bytes = 0;       ///< bytes it must read per step (weights or K/V); 0 for the search
  double ms_per_step = 0; ///< median time of all of them together
};

struct DecodeBreakdown {
  double encoder_only_ms = 0;  ///< median of VitGpt2::encode (no cross-attention K/V, no decode plan)
  std::vector<StepPart> parts;
};

/// Best-of-3 throughput (FLOP/s) of one large linear, [2048, 2048] x [2048, 2048] in `dtype` on
/// `device`: the compute ceiling used for the decode step's compute floor.
double measure_gemm_flops(Device device, DType dtype);

/// Times the encoder `iters` times on `pixels`, then each part of a decode step of `batch` × `beams`
/// rows `iters` times (parts interleaved so each finds its weights cold); `generation` are the
/// options the benchmark generates with (the search part replays them without a model).
DecodeBreakdown measure_decode_breakdown(const VitGpt2& model, const Tensor& pixels, DType dtype, int batch, int beams,
                                         const GenerationOptions& generation, int iters);

}  // namespace encore::bench
