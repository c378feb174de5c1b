// Test and benchmark knobs of the CUDA decode attention (kernels/cuda/decode_attention.cu). Plain
// C++: tests and benchmarks include it without CUDA headers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backends/cuda/cuda_kernels.h"

namespace encore::cuda::dec {

/// Which segment kernel runs.
enum class Path : std::uint8_t {
  automatic,    ///< tensor cores when eligible (f16/bf16 cache, D 64 or 128, 16-byte aligned rows)
  tensor_core,  ///< tensor cores; throws Error(unsupported) when not eligible
  generic,      ///< CUDA cores (f32, f16, bf16; any D <= 256; any strides)
};

struct Options {
  Path path = Path::automatic;
  std::int64_t tile_tokens = 0;  ///< > 0: lean/split tile (rounded up to a multiple of the block size)
  int workers = 0;               ///< > 0: lean grid size (capped at what can be co-resident)
  /// Tests: > 0 launches lean with this many CTAs (must be more than can be co-resident), so the
  /// cooperative launch is refused as under MPS with an SM limit and the call runs split instead
  /// (during stream capture, a grid never launched before is not tried: split directly).
  int lean_grid_for_testing = 0;
  /// Split: merge the pieces in a second kernel (FlashDecoding's combine) instead of in the piece
  /// that finishes last. For A/B runs and tests; the separate kernel also runs whenever the merge
  /// scratch of s pieces does not fit the split kernel's shared memory.
  bool separate_combine = false;
  /// Split on sm_90: a head's pieces (up to 8) run as one thread-block cluster and merge through
  /// distributed shared memory. False: the piece that finishes last merges through global memory
  /// (for A/B runs and tests).
  bool cluster_merge = true;
};

/// What a call launched (for tests and benchmark counters).
struct LaunchInfo {
  DecodeStrategy strategy = DecodeStrategy::plain;  ///< resolved (never automatic)
  bool tensor_cores = false;
  int ctas = 0;                     ///< lean: G; split/plain: B * Hv * splits
  int ctas_per_sm = 0;              ///< co-resident CTAs per SM (occupancy API)
  int splits = 1;                   ///< split/plain: KV chunks per head
  std::int64_t tile = 0;            ///< tokens per tile
  int row_blocks = 1;               ///< virtual heads per kv head (MT)
  std::size_t smem_bytes = 0;       ///< dynamic shared memory per CTA
  std::size_t workspace_bytes = 0;  ///< partial-result slots this call may write
  bool combine_kernel = false;      ///< split: the pieces were merged by a second kernel
  bool cluster_merge = false;       ///< split: the pieces were merged inside their cluster
};

/// decode_attention() with knobs; validates like decode_attention().
LaunchInfo decode_attention_impl(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                 const Tensor& block_table, const Tensor& lengths, const DecodeAttentionAttrs& attrs,
                                 const Tensor& y, const CudaContext& ctx, const Options& opts);

/// What `automatic` sees of a call: only shapes, never the lengths (they live on the device, so
/// that one captured CUDA graph serves every decode step).
struct StrategyShape {
  std::int64_t batch = 1;
  std::int64_t virtual_heads = 1;  ///< kv heads x row blocks: the (sequence, head) items per sequence
  std::int64_t rows = 1;           ///< query rows per kv head (GQA group x query tokens)
  int resident_ctas = 1;           ///< co-resident split/plain CTAs on the device
  std::int64_t capacity_tokens = 0;  ///< block-table width x block size
  std::int64_t tile_tokens = 128;
  int resident_clusters = 0;  ///< co-resident clusters of kClusterSplit split CTAs (0: no cluster merge)
};

/// What `automatic` resolves to: the strategy, and for split a piece count when the rule fixes one
/// (0: FlashDecoding's heuristic picks it).
struct StrategyChoice {
  DecodeStrategy strategy = DecodeStrategy::plain;
  int splits = 0;
};

/// The strategy `automatic` resolves to, fitted on the H200 matrix of
/// docs/benchmarks/decode_attention.md (2026-11-30):
/// - plain when every sequence fits in one KV tile (nothing to split; e.g. GPT-2 captioning), when
///   the batch is larger than the in-kernel lean schedule holds, or when the items fill at least
///   two waves of the co-resident CTAs at >= 90 % wave efficiency;
/// - split for one sequence with one query row per kv head (MHA decode) and >= 8 heads, fewer than
///   0.8 x the co-resident CTAs (from there the split heuristic keeps one piece): 0.97-1.41x lean on
///   the measured cases, 1.17-1.41x up to 134 MB of cache. Only a batch of one is known not to be
///   ragged; with several sequences a long one among short ones leaves split's pieces unbalanced
///   (lean 2-5x ahead);
/// - plain when a head holds at most kShortCacheTiles tiles and the items fit one wave: one CTA
///   streams such a head in about the time lean's schedule, flags and merge cost (B 4, 12 heads,
///   1k tokens, 8 tiles: plain 12.2 us, lean 19.6), and that bound holds for ragged lengths too.
///   At 16 tiles it no longer does (B 1, GQA 8/1, 1k tokens of D 128: plain 19.6 us, lean 15.3);
/// - split into kClusterSplit pieces merged inside their cluster (sm_90) for one sequence with
///   several query rows per kv head (GQA, or several query tokens) whose heads' clusters are all
///   resident at once and whose cache holds at most kClusterSplitTokens tokens (at most 1024 per
///   piece); MHA keeps the rule above (not measured against it): B 1, D 128, GQA 8/1 at 1k tokens 11.8 us
///   against lean's 15.7, 32/8 at 4k 17.6 against 25.1, 64/8 at 8k 24.2 against 30.7 (session 12;
///   at 16k tokens lean is ahead again: 20.0 against 30.9 with only 8 CTAs);
/// - lean otherwise (few heads, GQA groups, several sequences of unknown lengths).
StrategyChoice choose_strategy(const StrategyShape& shape);

/// The cluster split rule's pieces per head and largest cache (tokens).
inline constexpr int kClusterSplit = 8;
inline constexpr std::int64_t kClusterSplitTokens = 8192;

/// Heads of at most this many tiles count as short for choose_strategy.
inline constexpr std::int64_t kShortCacheTiles = 8;

/// Largest batch the lean kernel schedules (its prefix sums live in shared memory); larger batches
/// run plain.
inline constexpr int kMaxLeanBatch = 1024;

/// Benchmark ceiling: reads `bytes` (a multiple of 16, 16-byte aligned) once with 16-byte loads
/// on ctx's stream, writing only when an impossible checksum turns up (nothing is optimised away).
void read_stream(const void* data, std::size_t bytes, void* sink, const CudaContext& ctx);

}  // namespace encore::cuda::dec
