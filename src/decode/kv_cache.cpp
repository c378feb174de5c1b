// The paged KV cache (include/encore/decode/kv_cache.h).
//
// The host vectors (tables, lengths, reserved room, reference counts, free list) are the truth;
// block_table() and lengths() are mirrored from them after every change (sync_tables), on the
// cache's device. K/V live on the device; a CUDA cache is written through host staging buffers
// and Tensor::copy_from, one contiguous run of tokens per (sequence, head, block).
//
// Why the cache never runs out of blocks: every block in use appears in at least one sequence's
// table, and a table holds at most max_blocks = ceil(max_length / block_size) entries (reserve
// refuses to pass max_length). So the blocks in use never exceed batch * max_blocks, which is
// num_blocks minus the spare blocks. A copy-on-write takes a fresh block while the shared
// original stays in another table; at that moment the original is counted twice in the sum of
// table sizes, so the bound still holds. Beam search (reorder) only shares blocks, so it cannot
// break the bound either. So no spare block is needed (the default is none; spare_blocks adds a
// margin), and the out-of-blocks Error is kept as a defensive check.
#include "encore/decode/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/check.h"
#include "core/device_lock.h"

namespace encore {
namespace {

using i64 = std::int64_t;

struct Derived {
  i64 max_blocks = 0;  // per sequence
  i64 num_blocks = 0;
  std::size_t bytes = 0;
};

// Validates every field (messages name the field and its value) and sizes the cache.
Derived derive(const KvCacheConfig& c) {
  const char* who = "KvCacheConfig";
  ENCORE_CHECK(c.num_layers >= 1, invalid_argument, "{}.num_layers = {} must be >= 1", who, c.num_layers);
  ENCORE_CHECK(c.batch >= 1, invalid_argument, "{}.batch = {} must be >= 1", who, c.batch);
  ENCORE_CHECK(c.num_kv_heads >= 1, invalid_argument, "{}.num_kv_heads = {} must be >= 1", who, c.num_kv_heads);
  ENCORE_CHECK(c.head_dim >= 1, invalid_argument, "{}.head_dim = {} must be >= 1", who, c.head_dim);
  ENCORE_CHECK(c.max_length >= 1 && c.max_length <= std::numeric_limits<std::int32_t>::max(), invalid_argument,
               "{}.max_length = {} must be in [1, 2^31 - 1] (lengths are i32)", who, c.max_length);
  ENCORE_CHECK(c.block_size >= 1 && c.block_size <= 1024, invalid_argument, "{}.block_size = {} must be in [1, 1024]",
               who, c.block_size);
  ENCORE_CHECK(c.spare_blocks >= -1, invalid_argument, "{}.spare_blocks = {} must be >= 0, or -1 (one per sequence)",
               who, c.spare_blocks);
  ENCORE_CHECK(c.dtype == DType::F32 || c.dtype == DType::F16 || c.dtype == DType::BF16, invalid_argument,
               "{}.dtype = {} must be f32, f16 or bf16", who, dtype_name(c.dtype));
  ENCORE_CHECK(c.device.is_cpu() || (c.device.is_cuda() && c.device.index >= 0), invalid_argument,
               "{}.device = {} is not a valid device", who, c.device.str());
  Derived d;
  d.max_blocks = (c.max_length + c.block_size - 1) / c.block_size;
  const i64 spare = c.spare_blocks < 0 ? c.batch : c.spare_blocks;
  d.num_blocks = static_cast<i64>(c.batch) * d.max_blocks + spare;
  ENCORE_CHECK(d.num_blocks <= std::numeric_limits<std::int32_t>::max(), invalid_argument,
               "{}: batch {} x {} blocks per sequence + {} spare = {} blocks do not fit the i32 block table", who,
               c.batch, d.max_blocks, spare, d.num_blocks);
  // keys + values, then the two i32 tables; every product checked.
  std::size_t kv = 2 * dtype_size(c.dtype);
  bool overflow = false;
  for (const i64 f : {i64{c.num_layers}, d.num_blocks, i64{c.num_kv_heads}, i64{c.block_size}, i64{c.head_dim}})
    overflow |= __builtin_mul_overflow(kv, static_cast<std::size_t>(f), &kv);
  overflow |= __builtin_add_overflow(kv, static_cast<std::size_t>(c.batch) * (d.max_blocks + 1) * 4, &kv);
  // The host-side bookkeeping: table mirror, lengths and reserved room per sequence; reference
  // count, free-list entry and pending-copy flag per block.
  const std::size_t host = static_cast<std::size_t>(c.batch) * (static_cast<std::size_t>(d.max_blocks) * 4 + 16) +
                           static_cast<std::size_t>(d.num_blocks) * 9;
  overflow |= __builtin_add_overflow(kv, host, &kv);
  ENCORE_CHECK(!overflow, invalid_argument,
               "{}: {} layers x {} blocks x {} heads x {} tokens x {} dims is too large to address", who, c.num_layers,
               d.num_blocks, c.num_kv_heads, c.block_size, c.head_dim);
  d.bytes = kv;
  return d;
}

// dst[0..D) (cache dtype, contiguous) = src[0..D) (stride `st` elements, dtype `sd`).
void convert_row(const std::byte* src, DType sd, i64 st, std::byte* dst, DType dd, i64 D) {
  const std::size_t es = dtype_size(sd);
  if (sd == dd) {
    if (st == 1) return void(std::memcpy(dst, src, static_cast<std::size_t>(D) * es));
    for (i64 i = 0; i < D; ++i) std::memcpy(dst + i * es, src + i * st * static_cast<i64>(es), es);
    return;
  }
  // sd == F32 (checked by write): round to the cache dtype.
  for (i64 i = 0; i < D; ++i) {
    float f;
    std::memcpy(&f, src + i * st * 4, 4);
    if (dd == DType::F16) {
      const Half h = float_to_half(f);
      std::memcpy(dst + i * 2, &h, 2);
    } else {
      const BFloat16 h = float_to_bfloat16(f);
      std::memcpy(dst + i * 2, &h, 2);
    }
  }
}

// Tokens a sequence may hold: its blocks' room, but never past max_length (the last block may
// reach beyond it).
i64 room_end(i64 reserved, i64 max_length) { return std::min(reserved, max_length); }

}  // namespace

std::size_t kv_cache_bytes(const KvCacheConfig& config) { return derive(config).bytes; }

KvCache::KvCache(const KvCacheConfig& config) : config_(config) {
  const Derived d = derive(config);
  num_blocks_ = d.num_blocks;
  max_blocks_per_seq_ = d.max_blocks;
  const Shape shape{num_blocks_, config.num_kv_heads, config.block_size, config.head_dim};
  for (int l = 0; l < config.num_layers; ++l) {
    keys_.push_back(Tensor::empty(shape, config.dtype, config.device));
    values_.push_back(Tensor::empty(shape, config.dtype, config.device));
  }
  block_table_ = Tensor::empty({config.batch, max_blocks_per_seq_}, DType::I32, config.device);
  lengths_ = Tensor::empty({config.batch}, DType::I32, config.device);
  try {
    host_table_.assign(static_cast<std::size_t>(config.batch * max_blocks_per_seq_), -1);
    host_lengths_.assign(static_cast<std::size_t>(config.batch), 0);
    host_reserved_.assign(static_cast<std::size_t>(config.batch), 0);
    refcount_.assign(static_cast<std::size_t>(num_blocks_), 0);
    pending_sources_.assign(static_cast<std::size_t>(num_blocks_), 0);
    free_blocks_.reserve(static_cast<std::size_t>(num_blocks_));
  } catch (const std::bad_alloc&) {
    detail::fail(ErrorCode::out_of_memory, "KvCache: the host bookkeeping of {} blocks ({} bytes in all with the "
                 "cache) cannot be allocated", num_blocks_, d.bytes);
  }
  clear();
}

KvCache::KvCache(KvCache&& other) noexcept { take(other); }

KvCache& KvCache::operator=(KvCache&& other) noexcept {
  if (this != &other) take(other);
  return *this;
}

void KvCache::take(KvCache& other) noexcept {
  config_ = other.config_;
  other.config_.batch = 0, other.config_.num_layers = 0;  // every index check then refuses
  num_blocks_ = std::exchange(other.num_blocks_, 0);
  max_blocks_per_seq_ = std::exchange(other.max_blocks_per_seq_, 0);
  keys_ = std::move(other.keys_), values_ = std::move(other.values_);
  block_table_ = std::move(other.block_table_), lengths_ = std::move(other.lengths_);
  host_table_ = std::move(other.host_table_), host_lengths_ = std::move(other.host_lengths_);
  host_reserved_ = std::move(other.host_reserved_), refcount_ = std::move(other.refcount_);
  free_blocks_ = std::move(other.free_blocks_), pending_copies_ = std::move(other.pending_copies_);
  pending_sources_ = std::move(other.pending_sources_);
  for (auto* v : {&other.keys_, &other.values_}) v->clear();
  other.block_table_ = Tensor(), other.lengths_ = Tensor();
  other.host_table_.clear(), other.host_lengths_.clear(), other.host_reserved_.clear();
  other.refcount_.clear(), other.free_blocks_.clear(), other.pending_copies_.clear(), other.pending_sources_.clear();
}

const Tensor& KvCache::keys(int layer) const {
  ENCORE_CHECK(layer >= 0 && layer < config_.num_layers, invalid_argument,
               "KvCache::keys: layer {} is out of range [0, {})", layer, config_.num_layers);
  return keys_[static_cast<std::size_t>(layer)];
}

const Tensor& KvCache::values(int layer) const {
  ENCORE_CHECK(layer >= 0 && layer < config_.num_layers, invalid_argument,
               "KvCache::values: layer {} is out of range [0, {})", layer, config_.num_layers);
  return values_[static_cast<std::size_t>(layer)];
}

std::int64_t KvCache::length(int b) const {
  ENCORE_CHECK(b >= 0 && b < config_.batch, invalid_argument, "KvCache::length: sequence {} is out of range [0, {})",
               b, config_.batch);
  return host_lengths_[static_cast<std::size_t>(b)];
}

int KvCache::take_block() {
  ENCORE_CHECK(!free_blocks_.empty(), out_of_memory, "KvCache: all {} blocks are in use ({} sequences x {} + spare)",
               num_blocks_, config_.batch, max_blocks_per_seq_);
  const int blk = free_blocks_.back();
  free_blocks_.pop_back();
  refcount_[static_cast<std::size_t>(blk)] = 1;
  return blk;
}

void KvCache::release_block(int block) {
  if (--refcount_[static_cast<std::size_t>(block)] == 0) free_blocks_.push_back(block);
}

// Block copies are collected and issued together by flush_copies() (one batched device copy);
// a copy into a block that a pending copy reads from flushes first, so batch order never matters.
void KvCache::copy_block(int from, int to) {
  if (pending_sources_[static_cast<std::size_t>(to)] != 0) flush_copies();
  pending_sources_[static_cast<std::size_t>(from)] = 1;
  for (int l = 0; l < config_.num_layers; ++l)
    for (const Tensor* t : {&keys_[l], &values_[l]}) {
      const Tensor dst = t->select(0, to), src = t->select(0, from);
      pending_copies_.push_back(Allocator::Region{dst.data(), src.data(), dst.nbytes()});
    }
}

void KvCache::flush_copies() {
  if (pending_copies_.empty()) return;
  // Queued on the device's stream like any encore work there: under its lock (core/device_lock.h),
  // or it could land inside another thread's CUDA-graph capture.
  const auto lock = detail::lock_device(config_.device);
  allocator_for(config_.device.type).copy_within(pending_copies_, config_.device);
  pending_copies_.clear();
  std::fill(pending_sources_.begin(), pending_sources_.end(), 0);
}

// Each mirror update of a device cache is a host-to-device copy on the decode path: only what
// changed is copied.
void KvCache::sync_tables(bool table, bool lengths) {
  if (table) block_table_.copy_from(Tensor::from_blob(host_table_.data(), block_table_.shape(), DType::I32));
  if (lengths) {
    std::vector<std::int32_t> lens(host_lengths_.begin(), host_lengths_.end());
    lengths_.copy_from(Tensor::from_blob(lens.data(), lengths_.shape(), DType::I32));
  }
}

void KvCache::reserve(std::int64_t n) {
  ENCORE_CHECK(n >= 0, invalid_argument, "KvCache::reserve: n = {} must be >= 0", n);
  if (n == 0) return;  // no block receives a token: a shared partial block stays shared
  const i64 bs = config_.block_size;
  // Check everything first so a failed call changes nothing: room, then free blocks (new ones
  // plus copies of shared blocks that will be written).
  i64 needed = 0;
  std::unordered_map<int, int> writers;  // shared blocks that will receive tokens
  for (int b = 0; b < config_.batch; ++b) {
    const i64 len = host_lengths_[b];
    ENCORE_CHECK(n <= config_.max_length - len, invalid_argument,  // not len + n: n may be near 2^63
                 "KvCache::reserve({}): sequence {} holds {} tokens; {} more would exceed max_length {}", n, b, len, n,
                 config_.max_length);
    const i64 want = len + n;
    const i64 have = host_reserved_[b] / bs, need = (want + bs - 1) / bs;
    needed += std::max<i64>(need - have, 0);
    for (i64 i = len / bs; i < std::min(have, need); ++i) {
      const int blk = host_table_[b * max_blocks_per_seq_ + i];
      if (refcount_[blk] > 1) ++writers[blk];
    }
  }
  // Sequences write into a shared block one after the other; each copies until one holder is
  // left, so a block with R holders and W writers costs min(W, R - 1) copies.
  for (const auto& [blk, w] : writers) needed += std::min(w, refcount_[blk] - 1);
  ENCORE_CHECK(needed <= static_cast<i64>(free_blocks_.size()), out_of_memory,
               "KvCache::reserve({}): needs {} free blocks, {} of {} are free", n, needed, free_blocks_.size(),
               num_blocks_);
  bool changed = false;
  for (int b = 0; b < config_.batch; ++b) {
    std::int32_t* row = host_table_.data() + b * max_blocks_per_seq_;
    const i64 len = host_lengths_[b], want = len + n;
    const i64 have = host_reserved_[b] / bs, need = (want + bs - 1) / bs;
    // Copy-on-write: a shared block that will receive new tokens (the partly filled last block
    // after a reorder) becomes this sequence's own copy; full shared blocks stay shared.
    for (i64 i = len / bs; i < std::min(have, need); ++i) {
      if (refcount_[row[i]] <= 1) continue;
      const int copy = take_block();
      copy_block(row[i], copy);
      release_block(row[i]);
      row[i] = copy, changed = true;
    }
    for (i64 i = have; i < need; ++i) row[i] = take_block(), changed = true;
    host_reserved_[b] = std::max(have, need) * bs;
  }
  flush_copies();
  if (changed) sync_tables(true, false);
}

void KvCache::write(int layer, const Tensor& k, const Tensor& v) {
  ENCORE_CHECK(layer >= 0 && layer < config_.num_layers, invalid_argument,
               "KvCache::write: layer {} is out of range [0, {})", layer, config_.num_layers);
  ENCORE_CHECK(k.defined() && v.defined(), invalid_argument, "KvCache::write: k and v must be defined");
  const i64 width = static_cast<i64>(config_.num_kv_heads) * config_.head_dim;
  ENCORE_CHECK(k.rank() == 3 && k.dim(0) == config_.batch && k.dim(2) == width && v.shape() == k.shape(),
               invalid_argument, "KvCache::write: k {} and v {} must both be [{} (batch), n, {} (Hkv*D)]",
               k.shape().str(), v.shape().str(), config_.batch, width);
  for (const Tensor* t : {&k, &v})
    ENCORE_CHECK(t->dtype() == config_.dtype || t->dtype() == DType::F32, invalid_argument,
                 "KvCache::write: input dtype {} must be the cache dtype {} or f32", dtype_name(t->dtype()),
                 dtype_name(config_.dtype));
  for (const Tensor* t : {&k, &v})
    ENCORE_CHECK(t->device().is_cpu() || t->device() == config_.device, invalid_argument,
                 "KvCache::write: input on {} but the cache is on {}", t->device().str(), config_.device.str());
  const i64 n = k.dim(1), bs = config_.block_size, D = config_.head_dim;
  for (int b = 0; b < config_.batch; ++b)
    ENCORE_CHECK(n <= room_end(host_reserved_[b], config_.max_length) - host_lengths_[b], invalid_argument,
                 "KvCache::write: sequence {} has room for {} more tokens, {} given (call reserve({}) first)", b,
                 room_end(host_reserved_[b], config_.max_length) - host_lengths_[b], n, n);
  if (n == 0) return;
  // Copy-on-write here too, for callers that reorder between reserve and write.
  bool changed = false;
  for (int b = 0; b < config_.batch; ++b) {
    std::int32_t* row = host_table_.data() + b * max_blocks_per_seq_;
    for (i64 i = host_lengths_[b] / bs; i <= (host_lengths_[b] + n - 1) / bs; ++i) {
      if (refcount_[row[i]] <= 1) continue;
      const int copy = take_block();
      copy_block(row[i], copy);
      release_block(row[i]);
      row[i] = copy, changed = true;
    }
  }
  flush_copies();
  if (changed) sync_tables(true, false);

  const bool on_host = config_.device.is_cpu();
  const Tensor ks = k.device().is_cpu() ? k : k.to(Device::cpu());
  const Tensor vs = v.device().is_cpu() ? v : v.to(Device::cpu());
  const std::size_t es = dtype_size(config_.dtype);
  Tensor staging;  // device caches: one run of tokens [run, D] at a time
  for (const auto& [src, cache] : {std::pair{&ks, &keys_[layer]}, std::pair{&vs, &values_[layer]}}) {
    const auto* base = static_cast<const std::byte*>(src->data());
    const std::size_t ses = dtype_size(src->dtype());
    const i64 sb = src->strides()[0], st = src->strides()[1], sd = src->strides()[2];
    for (int b = 0; b < config_.batch; ++b) {
      const std::int32_t* row = host_table_.data() + b * max_blocks_per_seq_;
      for (int h = 0; h < config_.num_kv_heads; ++h) {
        for (i64 t = 0; t < n;) {  // runs of tokens inside one block
          const i64 pos = host_lengths_[b] + t, off = pos % bs, run = std::min(n - t, bs - off);
          const i64 blk = row[pos / bs];
          std::byte* out;
          if (on_host) {  // the cache is contiguous [num_blocks, Hkv, bs, D]
            out = static_cast<std::byte*>(cache->data()) + ((blk * config_.num_kv_heads + h) * bs + off) * D * static_cast<i64>(es);
          } else {
            staging = Tensor::empty({run, D}, config_.dtype);
            out = static_cast<std::byte*>(staging.data());
          }
          for (i64 r = 0; r < run; ++r)
            convert_row(base + ((b * sb + (t + r) * st + h * D * sd) * static_cast<i64>(ses)), src->dtype(), sd,
                        out + r * D * static_cast<i64>(es), config_.dtype, D);
          if (!on_host) cache->select(0, blk).select(0, h).slice(0, off, off + run).copy_from(staging);
          t += run;
        }
      }
    }
  }
}

void KvCache::advance(std::int64_t n) {
  ENCORE_CHECK(n >= 0, invalid_argument, "KvCache::advance: n = {} must be >= 0", n);
  for (int b = 0; b < config_.batch; ++b)
    ENCORE_CHECK(n <= room_end(host_reserved_[b], config_.max_length) - host_lengths_[b], invalid_argument,
                 "KvCache::advance({}): sequence {} holds {} tokens with room for {}", n, b, host_lengths_[b],
                 room_end(host_reserved_[b], config_.max_length));
  for (auto& len : host_lengths_) len += n;
  sync_tables(false, true);
}

void KvCache::set_lengths(std::span<const std::int64_t> lengths) {
  ENCORE_CHECK(static_cast<i64>(lengths.size()) == config_.batch, invalid_argument,
               "KvCache::set_lengths: {} lengths given for batch {}", lengths.size(), config_.batch);
  for (int b = 0; b < config_.batch; ++b)
    ENCORE_CHECK(lengths[b] >= 0 && lengths[b] <= room_end(host_reserved_[b], config_.max_length), invalid_argument,
                 "KvCache::set_lengths: lengths[{}] = {} must be in [0, {}] (the reserved room)", b, lengths[b],
                 room_end(host_reserved_[b], config_.max_length));
  const i64 bs = config_.block_size;
  for (int b = 0; b < config_.batch; ++b) {
    std::int32_t* row = host_table_.data() + b * max_blocks_per_seq_;
    const i64 keep = (lengths[b] + bs - 1) / bs;
    for (i64 i = keep; i < host_reserved_[b] / bs; ++i) release_block(row[i]), row[i] = -1;
    host_lengths_[b] = lengths[b];
    host_reserved_[b] = keep * bs;
  }
  sync_tables(true, true);
}

void KvCache::reorder(std::span<const int> parent) {
  ENCORE_CHECK(static_cast<i64>(parent.size()) == config_.batch, invalid_argument,
               "KvCache::reorder: {} parents given for batch {}", parent.size(), config_.batch);
  for (int b = 0; b < config_.batch; ++b)
    ENCORE_CHECK(parent[b] >= 0 && parent[b] < config_.batch, invalid_argument,
                 "KvCache::reorder: parent[{}] = {} is out of range [0, {})", b, parent[b], config_.batch);
  const i64 bs = config_.block_size, mb = max_blocks_per_seq_;
  const std::vector<std::int32_t> old_table = host_table_;
  const std::vector<i64> old_reserved = host_reserved_, old_lengths = host_lengths_;
  // New rows share the parents' blocks that hold tokens (reserved but unwritten room is not
  // inherited); take the new references before dropping the old ones so no shared block is freed.
  for (int b = 0; b < config_.batch; ++b) {
    const int p = parent[b];
    const i64 keep = (old_lengths[p] + bs - 1) / bs;
    std::int32_t* row = host_table_.data() + b * mb;
    std::fill(row, row + mb, -1);
    for (i64 i = 0; i < keep; ++i) row[i] = old_table[p * mb + i], ++refcount_[row[i]];
    host_lengths_[b] = old_lengths[p];
    host_reserved_[b] = keep * bs;
  }
  for (int b = 0; b < config_.batch; ++b)
    for (i64 i = 0; i < old_reserved[b] / bs; ++i) release_block(old_table[b * mb + i]);
  sync_tables(true, true);
}

void KvCache::clear() {
  std::fill(host_table_.begin(), host_table_.end(), -1);
  std::fill(host_lengths_.begin(), host_lengths_.end(), 0);
  std::fill(host_reserved_.begin(), host_reserved_.end(), 0);
  std::fill(refcount_.begin(), refcount_.end(), 0);
  free_blocks_.resize(static_cast<std::size_t>(num_blocks_));
  for (i64 i = 0; i < num_blocks_; ++i) free_blocks_[i] = static_cast<int>(num_blocks_ - 1 - i);  // 0 taken first
  sync_tables(true, true);
}

}  // namespace encore
