// encore — the key/value cache of a decoder: paged, preallocated, shared between beams.
//
// Each layer holds keys and values as [num_blocks, Hkv, block_size, D] in one preallocated
// tensor per layer: never grown, never concatenated. A sequence (a batch row or a beam) owns a list
// of blocks (its block table). Beam search reorders sequences by copying block-table rows and
// reference counts; only a partly filled last block that becomes shared is copied (copy-on-write),
// so a reorder moves at most one block per sequence and layer instead of the whole history.
// Only the Hkv key/value heads are stored (grouped-query heads are never expanded).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "encore/core/allocator.h"
#include "encore/core/tensor.h"

namespace encore {

struct KvCacheConfig {
  int num_layers = 1;
  int batch = 1;                    ///< sequences, beams included
  int num_kv_heads = 1;             ///< Hkv
  int head_dim = 64;                ///< D
  std::int64_t max_length = 1024;   ///< tokens per sequence
  int block_size = 64;              ///< tokens per block (1..1024)
  /// Extra blocks beyond batch * ceil(max_length / block_size). None are needed: the copies beam
  /// search makes of shared partial blocks always fit (src/decode/kv_cache.cpp says why); spares
  /// only widen that margin. -1 = one per sequence.
  int spare_blocks = 0;
  DType dtype = DType::F32;         ///< f32, f16 or bf16
  Device device = Device::cpu();
};

/// Bytes a cache with this configuration allocates (keys, values and block tables on
/// config.device, plus its host-side block bookkeeping), without allocating.
/// Throws Error(invalid_argument) for an invalid configuration (naming the field).
std::size_t kv_cache_bytes(const KvCacheConfig& config);

class KvCache {
 public:
  /// Validates and allocates everything up front. Throws Error(invalid_argument) for a bad
  /// configuration, Error(out_of_memory) when the storage cannot be allocated.
  explicit KvCache(const KvCacheConfig& config);
  // Not copyable: tensors are shared handles, so a copy would write the same blocks through a
  // second, independent free list. Movable; a moved-from cache has batch 0 and no layers (calls
  // naming a sequence or a layer throw Error(invalid_argument), as for out-of-range indices).
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&& other) noexcept;

  const KvCacheConfig& config() const noexcept { return config_; }
  std::int64_t num_blocks() const noexcept { return num_blocks_; }
  /// Keys/values of `layer`: [num_blocks, Hkv, block_size, D] on config().device.
  const Tensor& keys(int layer) const;
  const Tensor& values(int layer) const;
  /// i32 [batch, max_blocks]: physical block of each logical block (-1 where none yet).
  const Tensor& block_table() const noexcept { return block_table_; }
  /// i32 [batch]: tokens stored per sequence.
  const Tensor& lengths() const noexcept { return lengths_; }
  /// Host copy of lengths()[b].
  std::int64_t length(int b) const;

  /// Makes room for `n` more tokens in every sequence (allocating blocks, copying a shared partial
  /// last block). Throws Error(invalid_argument) when a sequence would exceed max_length.
  void reserve(std::int64_t n);
  /// Writes k/v [batch, n, Hkv*D] (any strides) of `layer` at positions lengths[b] .. + n - 1.
  /// reserve(n) must have been called; lengths are advanced by advance(n) once all layers are
  /// written.
  void write(int layer, const Tensor& k, const Tensor& v);
  /// Adds n to every sequence's length.
  void advance(std::int64_t n);
  /// Sets per-sequence lengths for a ragged batch (e.g. after a padded prompt); each must be <=
  /// the reserved room. Blocks past a new length are released.
  void set_lengths(std::span<const std::int64_t> lengths);
  /// Beam reorder: sequence b continues the history of sequence parent[b] (a permutation with
  /// repeats). Block tables are copied and blocks shared; no K/V is copied until a shared partial
  /// block is written to. Call reserve() after the step's last reorder: a reorder keeps only the
  /// room left in the partial last block, and only reserve() and write() copy a shared block
  /// (advance() does not), so a kernel writing through block_table() after advance() relies on it.
  void reorder(std::span<const int> parent);
  /// Forgets every sequence (lengths 0, all blocks free).
  void clear();

 private:
  int take_block();
  void release_block(int block);
  void copy_block(int from, int to);
  void flush_copies();
  void sync_tables(bool table, bool lengths);

  void take(KvCache& other) noexcept;  // the moves: all state from other, which is left empty

  KvCacheConfig config_;
  std::int64_t num_blocks_ = 0;
  std::int64_t max_blocks_per_seq_ = 0;
  std::vector<Tensor> keys_, values_;
  Tensor block_table_, lengths_;              // on config_.device
  std::vector<std::int32_t> host_table_;      // [batch * max_blocks]
  std::vector<std::int64_t> host_lengths_;    // [batch]
  std::vector<std::int64_t> host_reserved_;   // [batch]: tokens with a block behind them
  std::vector<int> refcount_;                 // per block
  std::vector<int> free_blocks_;
  std::vector<Allocator::Region> pending_copies_;  // block copies not yet issued
  std::vector<char> pending_sources_;              // per block: a pending copy reads it
};

}  // namespace encore
