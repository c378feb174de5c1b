// Shared declarations of the CPU decode attention (kernels/cpu/decode_attention*.cpp).
//
// decode_attention.cpp validates, builds the work partition (kernels/common/lean_schedule.h) and
// merges partial results; the inner loop over one *segment* (keys [k0, k1) of one (sequence,
// kv head) for all g * Tq query rows of that head) is a plain function, portable in
// decode_attention.cpp and AVX-512 in decode_attention_avx512.cpp. The segment leaves the
// online-softmax state (m, l, unnormalised O) in the caller's scratch.
//
// Only plain aggregates (no default member initialisers, no inline functions) live here: inline
// code shared with a file compiled for AVX-512 could be merged by the linker into the portable
// path (see attention_internal.h).
#pragma once

#include <cstdint>

#include "backends/cpu/kernels.h"

namespace encore::cpu::dec {

/// Keys per online-softmax step (one score buffer of kChunk per query row).
inline constexpr int kChunk = 64;

/// Element types of q / the cache.
enum class Elem : std::uint8_t { f32, f16, bf16 };

/// Testing and benchmark knobs of decode_attention_impl (the public entry uses the defaults).
struct Options {
  bool force_portable;      ///< skip the AVX-512 loops even when usable
  std::int64_t tile_tokens; ///< > 0: tile size (rounded up to a multiple of the block size)
};

/// decode_attention() with knobs; validates like decode_attention().
void decode_attention_impl(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                           const Tensor& lengths, const DecodeAttentionAttrs& attrs, const Tensor& y,
                           const CpuContext& ctx, const Options& opts);

/// The strategy `automatic` resolves to, given the tiles per head of each sequence (exposed for
/// tests and benchmarks).
DecodeStrategy choose_strategy(const std::int64_t* tiles, int B, int Hkv, int threads);

/// Everything a segment loop needs. Strides are in elements; the head dim is contiguous.
struct Problem {
  const void* q;
  Elem q_type;
  std::int64_t q_sb, q_st;  // q [B, Tq, Hq*D]
  const void* k;
  const void* v;
  Elem kv_type;
  std::int64_t k_sn, k_sh, k_st;  // k_cache [num_blocks, Hkv, block_size, D]
  std::int64_t v_sn, v_sh, v_st;
  const std::int32_t* table;  // validated host copy [B, max_blocks], contiguous
  std::int64_t max_blocks;
  const std::int64_t* lens;   // [B]
  int B, Tq, Hq, Hkv, g, D, rows, block_size;  // rows = g * Tq: row r is token r / g, head r % g
  float scale;
};

/// Per-thread f32 scratch (64-byte aligned pieces).
struct Scratch {
  float* q;      // [rows][D] queries times the scale
  float* o;      // [rows][D] unnormalised output
  float* m;      // [rows] running max
  float* l;      // [rows] running sum
  float* alpha;  // [rows] rescale factor of the current step
  float* s;      // [rows][kChunk] scores, then probabilities
  float* kc;     // [kChunk][D] converted keys (16-bit caches)
  float* vc;     // [kChunk][D] converted values
};

/// AVX-512 segment loop; needs D % 16 == 0 and has_avx512().
void run_segment_avx512(const Problem& p, int b, int h, std::int64_t k0, std::int64_t k1, const Scratch& ws);

}  // namespace encore::cpu::dec
