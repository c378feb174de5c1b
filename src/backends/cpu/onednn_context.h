// Shared plumbing of the oneDNN-backed CPU kernels (linear, matmul, conv, int8): the engine, a
// stream per thread, the thread-count scope, a process-wide LRU cache of primitives (created once
// per key, even under concurrent first calls), per-thread scratch buffers and cached reorders.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <list>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "backends/cpu/kernels.h"

namespace encore::cpu::onednn {

/// The CPU engine (created on first use).
dnnl::engine& engine();
/// The calling thread's stream. CPU streams are cheap; one per thread avoids sharing one.
dnnl::stream& stream();

/// oneDNN's data type for an encore dtype; throws Error(unsupported) for F16/I64/Bool.
dnnl::memory::data_type to_dnnl(DType t);

/// Threads a call of `work` (see call_work) uses: ctx.num_threads, or OpenMP's default when it is
/// <= 0; one below kOneDnnParallelMin, where the call takes a few microseconds on one thread and
/// OpenMP's fork and join would cost as much (and, on a machine shared with other processes, a
/// barrier can wait a whole scheduler time slice for a descheduled thread: a tiny model then
/// took ~1 s per caption instead of ~2 ms).
int resolve_threads(const CpuContext& ctx, std::int64_t work) noexcept;
inline constexpr std::int64_t kOneDnnParallelMin = std::int64_t{1} << 18;

/// A call's work for resolve_threads: its multiply-adds plus 8 per element it reads or writes, so
/// that memory-bound calls (one-row products streaming a large weight) count as large too.
/// In double, clamped: the products of valid (e.g. broadcast, stride-0) shapes may exceed int64.
inline std::int64_t call_work(double macs, double elements) noexcept {
  const double w = macs + 8 * elements;
  return w < 9.0e18 ? static_cast<std::int64_t>(w) : std::int64_t{9'000'000'000'000'000'000};
}

/// Sets OpenMP's max-threads ICV of the calling thread for the scope and restores it after.
/// oneDNN (OpenMP runtime) reads omp_get_max_threads() both when a primitive is created (to plan
/// its partitioning) and when it runs, so creation and execution both happen inside one scope.
class ThreadScope {
 public:
  explicit ThreadScope(int n);
  ~ThreadScope();
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int saved_;
};

/// Builds a cache key as raw bytes (fast to build and hash; never printed).
class KeyBuilder {
 public:
  explicit KeyBuilder(std::string_view kind) {
    key_.reserve(512);  // one allocation for any key
    key_.append(kind).push_back('\0');
  }
  KeyBuilder& add(std::int64_t v) { return add_bytes(&v, sizeof v); }
  KeyBuilder& add(const dnnl::memory::desc& md);
  KeyBuilder& add_bytes(const void* p, std::size_t n) {
    key_.append(static_cast<const char*>(p), n);
    return *this;
  }
  const std::string& str() const noexcept { return key_; }

 private:
  std::string key_;
};

/// An LRU map from key to an immutable value that is built at most once per key: concurrent
/// first lookups of one key wait for a single construction (std::call_once); a construction that
/// throws leaves the key to be retried. Evicted values stay alive while a caller holds them.
template <class V>
class OnceLruCache {
 public:
  explicit OnceLruCache(std::size_t capacity) : capacity_(capacity) {}

  template <class F>
  std::shared_ptr<const V> get(const std::string& key, F&& make) {
    std::shared_ptr<Slot> slot;
    {
      std::lock_guard lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second.second);
        slot = it->second.first;
      } else {
        slot = std::make_shared<Slot>();
        lru_.push_front(key);
        map_.emplace(key, std::make_pair(slot, lru_.begin()));
        trim_locked();
      }
    }
    std::call_once(slot->once, [&] {
      auto value = make();  // outside the lock: builds may take long and use the cache themselves
      std::lock_guard lock(mu_);  // erase_if reads slot values under the lock
      slot->value = std::move(value);
      ++creations_;
    });
    return slot->value;  // written once, before call_once returned to any caller
  }

  /// Drops one key (the next get builds it again).
  void erase(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return;
    lru_.erase(it->second.second);
    map_.erase(it);
  }
  /// Drops every entry whose built value satisfies `pred`.
  template <class P>
  void erase_if(P&& pred) {
    std::lock_guard lock(mu_);
    for (auto it = map_.begin(); it != map_.end();) {
      const auto& v = it->second.first->value;  // null while under construction: kept
      if (v && pred(*v)) {
        lru_.erase(it->second.second);
        it = map_.erase(it);
      } else {
        ++it;
      }
    }
  }
  void clear() {
    std::lock_guard lock(mu_);
    map_.clear();
    lru_.clear();
  }
  void set_capacity(std::size_t n) {
    std::lock_guard lock(mu_);
    capacity_ = n < 1 ? 1 : n;
    trim_locked();
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return map_.size();
  }
  /// Values built since the cache was made (tests check steady state builds nothing).
  std::size_t creations() const {
    std::lock_guard lock(mu_);
    return creations_;
  }

 private:
  struct Slot {
    std::once_flag once;
    std::shared_ptr<const V> value;
  };
  void trim_locked() {
    while (map_.size() > capacity_) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
  }

  mutable std::mutex mu_;
  std::size_t capacity_;
  std::size_t creations_ = 0;
  std::list<std::string> lru_;  // front = most recently used
  std::unordered_map<std::string, std::pair<std::shared_ptr<Slot>, std::list<std::string>::iterator>> map_;
};

/// The process-wide cache of oneDNN primitives (and the facts decided with them). Keys start with
/// a kind tag naming the value type, so one cache holds every type.
class PrimitiveCache {
 public:
  static PrimitiveCache& instance();

  /// The value for `key`, built by make() (returning T) on first use.
  template <class T, class F>
  std::shared_ptr<const T> get(const std::string& key, F&& make) {
    auto v = cache_.get(key, [&] { return std::shared_ptr<const void>(std::make_shared<const T>(make())); });
    return std::static_pointer_cast<const T>(v);
  }
  void set_capacity(std::size_t n) { cache_.set_capacity(n); }
  std::size_t size() const { return cache_.size(); }
  std::size_t creations() const { return cache_.creations(); }
  void clear() { cache_.clear(); }

 private:
  PrimitiveCache();
  OnceLruCache<void> cache_;
};

/// A primitive with the descriptors it was made from.
struct CachedPrimitive {
  dnnl::primitive primitive;
  dnnl::memory::desc src, weights, dst;
  std::string impl;  ///< oneDNN's implementation name (e.g. "brg:avx512_core").
};

/// A per-thread reusable buffer of at least `bytes` bytes (64-byte aligned) for the lifetime of
/// the object. Buffers are pooled per thread, so steady-state calls neither allocate nor page
/// fault; nested Scratch objects get distinct buffers.
class Scratch {
 public:
  explicit Scratch(std::size_t bytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* data() const noexcept { return data_; }

 private:
  void* data_ = nullptr;
  int slot_ = -1;
};

/// The arguments of one execution, kept on the stack (no per-call hash map).
class Args {
 public:
  Args(std::initializer_list<std::pair<int, dnnl::memory>> args) {
    for (const auto& [k, m] : args) add(k, m);
  }
  void add(int key, const dnnl::memory& m);
  int size() const noexcept { return n_; }
  const std::pair<int, dnnl::memory>& operator[](int i) const noexcept { return args_[static_cast<std::size_t>(i)]; }

 private:
  std::array<std::pair<int, dnnl::memory>, 8> args_;
  int n_ = 0;
};

/// Runs `p` on the calling thread's stream and waits for it.
void execute(const dnnl::primitive& p, const Args& args);
/// Attributes with a caller-provided scratchpad (execute() supplies one per call and thread), so
/// one cached primitive can run on several threads at once.
dnnl::primitive_attr user_scratchpad_attr();

/// A memory object over caller memory (oneDNN wants non-const pointers even for inputs).
inline dnnl::memory wrap(const dnnl::memory::desc& md, const void* p) {
  return dnnl::memory(md, engine(), const_cast<void*>(p));
}

/// A memory object of `md` over `p`, reused by the calling thread for argument `slot` of `plan`
/// (creating dnnl::memory objects was a third of the instructions of a tiny linear call;
/// re-pointing one costs nothing). `plan` is a cached value and identifies the descriptor.
dnnl::memory wrap_cached(const std::shared_ptr<const void>& plan, int slot, const dnnl::memory::desc& md,
                         const void* p);

/// The descriptor of a tensor exactly as stored (its dims and element strides).
dnnl::memory::desc strided_md(const Tensor& t);
/// A dense row-major descriptor.
dnnl::memory::desc dense_md(const dnnl::memory::dims& dims, dnnl::memory::data_type dt);

/// Copies `from` (read at `src`) into `to` (written at `dst`) with a cached reorder primitive,
/// converting dtype and layout, on `threads` threads.
void reorder(const dnnl::memory::desc& from, const void* src, const dnnl::memory::desc& to, void* dst, int threads);
/// Copies any strided tensor into dense row-major memory of dtype `to` at `dst`.
void to_dense(const Tensor& t, DType to, void* dst, int threads);

/// How bf16 GEMMs are computed: natively (bf16 x bf16, f32 accumulation) or via f32 (bf16
/// weights packed once as f32, activations converted per call). Without AMX, oneDNN 2.6's native
/// bf16 kernels run at about half the f32 rate once M >= 16, but for M = 1 they are 2-4x faster
/// because such GEMMs are bound by reading the weights, which are half the bytes (measured,
/// docs/benchmarks.md). So `automatic` is native with AMX or for M < kNativeBf16MaxM, via f32
/// otherwise; a weight used at both kinds of M is packed twice. Results agree up to f32
/// rounding (native mode rounds an f32 x to bf16 first). On a CPU where oneDNN has no bf16
/// matmul at all (before AVX-512, e.g. AVX2 only) every mode computes via f32.
enum class Bf16Mode { automatic, native, via_f32 };
inline constexpr std::int64_t kNativeBf16MaxM = 8;
void set_bf16_mode(Bf16Mode mode) noexcept;
Bf16Mode bf16_mode() noexcept;
/// Whether a bf16 x bf16 GEMM with `m` rows runs natively now.
bool native_bf16(std::int64_t m) noexcept;

/// Appends the oneDNN eltwise post-op for `act` (nothing for none).
void append_activation(dnnl::post_ops& ops, Activation act);
/// The activation on one value, for degenerate shapes that never reach oneDNN (K = 0).
float apply_activation(float v, Activation act) noexcept;

/// Strategy switches, process-wide and unsynchronised: set them before kernels run. Benchmarks
/// and tests flip them to compare or cover paths (docs/benchmarks.md has the measurements).
struct Tuning {
  /// linear: hand x's rows to oneDNN with their row stride when they are not dense (true: no
  /// copy; oneDNN 2.6 then uses gemm:jit instead of brgemm), or copy them to a dense scratch
  /// first (false). Measured within noise of each other; no copy is the default.
  bool linear_strided_rows = true;
  /// linear: at most this many rows of f32 x (f32 weights and y) run on the weight-streaming kernel of
  /// kernels/cpu/linear_rows.h (AVX-512 or AVX2 machines), more on oneDNN's matmul; 0 sends all to
  /// oneDNN. The kernel keeps the batch-1 streaming rate up to 32 rows where oneDNN's drops.
  /// ENCORE_CPU_LINEAR_ROWS_MAX sets the initial value.
  std::int64_t linear_rows_max = 32;
  /// The same limit where the kernel runs its AVX2 loop (no AVX-512), within linear_rows_max:
  /// two rows per pass over the weights there, so oneDNN catches up sooner (AMD EPYC, AVX2, 2
  /// threads: 1.1-1.7x oneDNN's rate up to 16 rows, 0.7-0.8x at 32; docs/benchmarks.md).
  std::int64_t linear_rows_max_avx2 = 16;
  /// Tests and benchmarks: the AVX2 loop even where AVX-512 is there.
  bool linear_rows_force_avx2 = false;
  /// conv2d: run patch embeddings (kernel == stride, no padding, groups 1) as im2col + a linear
  /// on prepacked weights instead of oneDNN's convolution.
  bool conv_patch_as_linear = true;
  /// conv2d/conv1d activation layout: plain NCHW handed to oneDNN as is, or the layout oneDNN
  /// prefers (src/dst format `any`) with relayouts in and out; automatic picks per shape.
  enum class ConvLayout { automatic, plain, preferred };
  ConvLayout conv_layout = ConvLayout::automatic;
};
Tuning& tuning() noexcept;

/// Which loop of the weight-streaming kernel (kernels/cpu/linear_rows.h) an f32 linear of M rows
/// runs here under tuning(), or none (oneDNN's matmul).
enum class RowsLoop { none, avx2, avx512 };
RowsLoop linear_rows_loop(std::int64_t M) noexcept;

}  // namespace encore::cpu::onednn
