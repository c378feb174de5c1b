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
};

/// decode_attention() with knobs; validates like decode_attention().
LaunchInfo decode_attention_impl(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                 const Tensor& block_table, const Tensor& lengths, const DecodeAttentionAttrs& attrs,
                                 const Tensor& y, const CudaContext& ctx, const Options& opts);

/// The strategy `automatic` resolves to: plain when every sequence fits in one KV tile (the cache
/// capacity is at most `tile_tokens`: nothing to split, and lean's extra CTAs and merge only add
/// latency, e.g. GPT-2 captioning), when the (sequence, virtual head) items fill at least two
/// waves of the co-resident CTAs at >= 90 % wave efficiency, or when the batch is larger than the
/// in-kernel lean schedule holds; lean otherwise.
DecodeStrategy choose_strategy(std::int64_t batch, std::int64_t virtual_heads, int resident_ctas,
                               std::int64_t capacity_tokens, int tile_tokens);

/// Largest batch the lean kernel schedules (its prefix sums live in shared memory); larger batches
/// run plain.
inline constexpr int kMaxLeanBatch = 1024;

/// Benchmark ceiling: reads `bytes` (a multiple of 16, 16-byte aligned) once with 16-byte loads
/// on ctx's stream, writing only when an impossible checksum turns up (nothing is optimised away).
void read_stream(const void* data, std::size_t bytes, void* sink, const CudaContext& ctx);

}  // namespace encore::cuda::dec
