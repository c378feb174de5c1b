// The numbers of a captioning benchmark run, the decode memory floor derived from them, and their
// two outputs: a plain-text table and a JSON file (read by tools/bench/caption_table.py).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "decode_breakdown.h"
#include "encore/core/dtype.h"
#include "encore/models/vit_gpt2.h"

namespace encore::bench {

struct CaptionSettings {
  std::string model_dir;
  std::string model_label;  ///< the random size ("random-base") or the directory name
  std::string device = "cpu";
  DType dtype = DType::F32;
  int batch = 1, beams = 1, new_tokens = 16, threads = 0, warmup = 1, iters = 10;
  bool breakdown = false;
};

/// Bytes one decode step must read at least (averaged over the steps of a caption), and how far the
/// measured step is from reading them at the measured bandwidth.
struct DecodeFloor {
  double weight_bytes = 0;           ///< decoder weights used every step: blocks (self-attention, cross q/proj,
                                     ///< MLP, LayerNorms; not the cross K/V projection, applied once per image),
                                     ///< ln_f and the tied wte of the LM head
  double self_kv_bytes = 0;          ///< self-attention K/V of every row, mean cached length (N+1)/2
  double cross_kv_bytes = 0;         ///< cross-attention K/V, once per image (beams of an image share it)
  double cross_kv_bytes_as_run = 0;  ///< what a per-row copy reads (rows = batch × beams)
  double bytes = 0;                  ///< weight + self K/V + cross K/V (the memory floor)
  double bandwidth = 0;              ///< measured read bandwidth, bytes/s
  double floor_ms = 0;               ///< memory floor: bytes / bandwidth
  double flops = 0;                  ///< projections + LM head + attention, 2 per multiply-add
  double gemm_flops_per_s = 0;       ///< measured large-GEMM throughput
  double compute_floor_ms = 0;       ///< flops / gemm_flops_per_s
  double step_ms = 0;                ///< measured: median decode time / new tokens
  double ratio = 0;                  ///< step_ms / floor_ms (the issue's target: <= 1.25 at batch 1)
  double ratio_to_max_floor = 0;     ///< step_ms / max(floor_ms, compute_floor_ms)
};

struct CaptionResult {
  CaptionSettings settings;
  VitGpt2Config config;
  std::vector<double> total_ms, encode_ms, decode_ms;
  std::vector<double> step_interval_ms;  ///< time between consecutive tokens (on_token), all iterations
  std::vector<double> first_step_ms;     ///< decode time up to the first token (first step + search setup)
  std::uint64_t parameters = 0;
  double weight_bytes = 0;  ///< parameters in the compute dtype
  std::uint64_t peak_rss_bytes = 0;
  /// encore's allocator on the benchmark device over the timed captions (memory_usage): peak and
  /// reserved bytes (CUDA: weights, arenas, KV caches, scratch; CPU: tensors and arenas only, not
  /// memory-mapped weights or oneDNN's packed copies).
  std::uint64_t device_peak_bytes = 0, device_reserved_bytes = 0;
  double page_faults_per_caption = 0;  ///< minor faults per measured caption (fresh memory touched)
  std::optional<DecodeFloor> floor;  ///< CPU only
  std::optional<DecodeBreakdown> breakdown;
  std::string cpu, host, date;
};

/// Parameters of the whole model (the tied LM head counted once).
std::uint64_t parameter_count(const VitGpt2Config& c);

/// The floor for one decode step of `batch` images × `beams` producing `new_tokens` tokens.
DecodeFloor decode_floor(const VitGpt2Config& c, DType dtype, int batch, int beams, int new_tokens, double bandwidth,
                         double gemm_flops_per_s, double step_ms);

/// Median total time → batch × new tokens per second (beams do not multiply the tokens).
double tokens_per_second(const CaptionResult& r);

void print_caption_report(const CaptionResult& r);
/// Throws Error(io) when `path` cannot be written.
void write_caption_json(const CaptionResult& r, const std::filesystem::path& path);

}  // namespace encore::bench
