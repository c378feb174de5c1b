#include "backends/cpu/onednn_context.h"

#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/cpu_features.h"

namespace encore::cpu::onednn {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

dnnl::memory::data_type to_dnnl(DType t) {
  using dt = dnnl::memory::data_type;
  switch (t) {
    case DType::F32:
      return dt::f32;
    case DType::BF16:
      return dt::bf16;
    case DType::I8:
      return dt::s8;
    case DType::U8:
      return dt::u8;
    case DType::I32:
      return dt::s32;
    default:
      break;
  }
  detail::fail(ErrorCode::unsupported, "oneDNN kernels do not take {} tensors (f32, bf16, i8, u8, i32 only)",
               dtype_name(t));
}

int resolve_threads(const CpuContext& ctx, std::int64_t work) noexcept {
  if (work < kOneDnnParallelMin) return 1;
  return ctx.num_threads > 0 ? ctx.num_threads : omp_get_max_threads();
}

ThreadScope::ThreadScope(int n) : saved_(omp_get_max_threads()) {
  if (n != saved_) omp_set_num_threads(n);
}

ThreadScope::~ThreadScope() {
  if (omp_get_max_threads() != saved_) omp_set_num_threads(saved_);
}

KeyBuilder& KeyBuilder::add(const dnnl::memory::desc& md) {
  // The fields that make two descriptors differ (the reserved bytes are left out).
  const dnnl_memory_desc_t& d = md.data;
  add(d.ndims).add(static_cast<std::int64_t>(d.data_type)).add(static_cast<std::int64_t>(d.format_kind));
  add(d.offset0);
  for (int i = 0; i < d.ndims; ++i) add(d.dims[i]).add(d.padded_dims[i]);
  if (d.format_kind == dnnl_blocked) {
    const auto& b = d.format_desc.blocking;
    for (int i = 0; i < d.ndims; ++i) add(b.strides[i]);
    add(b.inner_nblks);
    for (int i = 0; i < b.inner_nblks; ++i) add(b.inner_blks[i]).add(b.inner_idxs[i]);
  }
  add(static_cast<std::int64_t>(d.extra.flags)).add(d.extra.compensation_mask).add(d.extra.asymm_compensation_mask);
  return add_bytes(&d.extra.scale_adjust, sizeof d.extra.scale_adjust);
}

PrimitiveCache::PrimitiveCache() : cache_(1024) {
  if (const char* env = std::getenv("ENCORE_PRIMITIVE_CACHE_CAPACITY")) {
    const long n = std::atol(env);
    if (n > 0) cache_.set_capacity(static_cast<std::size_t>(n));
  }
}

PrimitiveCache& PrimitiveCache::instance() {
  static PrimitiveCache* cache = new PrimitiveCache();  // never destroyed: used from static dtors
  return *cache;
}

// ---- scratch -------------------------------------------------------------------------------------

namespace {

struct ScratchPool {
  struct Buffer {
    void* data = nullptr;
    std::size_t capacity = 0;
    bool in_use = false;
  };
  std::vector<Buffer> buffers;
  ~ScratchPool() {
    for (auto& b : buffers) std::free(b.data);
  }
};

ScratchPool& pool() {
  thread_local ScratchPool p;
  return p;
}

}  // namespace

Scratch::Scratch(std::size_t bytes) {
  auto& bufs = pool().buffers;
  int best = -1;
  for (int i = 0; i < static_cast<int>(bufs.size()); ++i) {
    const auto& b = bufs[static_cast<std::size_t>(i)];
    if (b.in_use) continue;
    if (b.capacity >= bytes && (best < 0 || b.capacity < bufs[static_cast<std::size_t>(best)].capacity)) best = i;
  }
  if (best < 0) {  // grow a free buffer, or add one
    for (int i = 0; i < static_cast<int>(bufs.size()) && best < 0; ++i)
      if (!bufs[static_cast<std::size_t>(i)].in_use) best = i;
    if (best < 0) {
      bufs.emplace_back();
      best = static_cast<int>(bufs.size()) - 1;
    }
    auto& b = bufs[static_cast<std::size_t>(best)];
    std::free(b.data);
    const std::size_t cap = (std::max<std::size_t>(bytes, 64) + 63) / 64 * 64;
    b.data = std::aligned_alloc(64, cap);
    b.capacity = b.data ? cap : 0;
    ENCORE_CHECK(b.data != nullptr, out_of_memory, "could not allocate {} bytes of GEMM scratch", cap);
  }
  auto& b = bufs[static_cast<std::size_t>(best)];
  b.in_use = true;
  data_ = b.data;
  slot_ = best;
}

Scratch::~Scratch() {
  if (slot_ >= 0) pool().buffers[static_cast<std::size_t>(slot_)].in_use = false;
}

// ---- execution, descriptors, reorders ------------------------------------------------------------

void Args::add(int key, const dnnl::memory& m) {
  ENCORE_CHECK(n_ < static_cast<int>(args_.size()), backend, "too many oneDNN arguments ({})", n_ + 1);
  args_[static_cast<std::size_t>(n_++)] = {key, m};
}

dnnl::primitive_attr user_scratchpad_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

void execute(const dnnl::primitive& p, const Args& args) {
  // The C entry point: the C++ wrapper would copy the arguments into a vector on every call.
  std::array<dnnl_exec_arg_t, 9> c_args{};
  int n = args.size();
  for (int i = 0; i < n; ++i) c_args[static_cast<std::size_t>(i)] = {args[i].first, args[i].second.get()};
  // Cached primitives are shared by every thread, and Debian's oneDNN (concurrent-exec build)
  // forbids running one primitive from two threads with a library-owned scratchpad: each call
  // brings its own scratchpad from this thread's pool instead (primitives use user mode).
  const_dnnl_primitive_desc_t pd = nullptr;
  dnnl::error::wrap_c_api(dnnl_primitive_get_primitive_desc(p.get(), &pd), "could not query a primitive");
  const dnnl_memory_desc_t* scratch_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  const std::size_t scratch_bytes = scratch_md != nullptr ? dnnl_memory_desc_get_size(scratch_md) : 0;
  std::optional<Scratch> scratch;
  dnnl::memory scratch_mem;
  if (scratch_bytes > 0) {
    scratch.emplace(scratch_bytes);
    scratch_mem = dnnl::memory(dnnl::memory::desc(*scratch_md), engine(), scratch->data());
    c_args[static_cast<std::size_t>(n++)] = {DNNL_ARG_SCRATCHPAD, scratch_mem.get()};
  }
  dnnl::stream& s = stream();
  dnnl::error::wrap_c_api(dnnl_primitive_execute(p.get(), s.get(), n, c_args.data()), "could not execute a primitive");
  s.wait();
}

namespace {

struct PlanSlot {
  const void* plan;
  int slot;
  bool operator==(const PlanSlot&) const = default;
};
struct PlanSlotHash {
  std::size_t operator()(const PlanSlot& k) const noexcept {
    return std::hash<const void*>()(k.plan) ^ (static_cast<std::size_t>(k.slot) * 0x9e3779b97f4a7c15ull);
  }
};
struct CachedMemory {
  std::weak_ptr<const void> plan;  // a recycled plan address must not reuse the old descriptor
  dnnl::memory memory;
};

}  // namespace

dnnl::memory wrap_cached(const std::shared_ptr<const void>& plan, int slot, const dnnl::memory::desc& md,
                         const void* p) {
  thread_local std::unordered_map<PlanSlot, CachedMemory, PlanSlotHash> cache;
  auto [it, inserted] = cache.try_emplace(PlanSlot{plan.get(), slot});
  CachedMemory& c = it->second;
  if (inserted || c.plan.lock() != plan) {
    if (cache.size() > 4096)  // forget the memory objects of evicted plans now and then
      std::erase_if(cache, [](const auto& kv) { return kv.second.plan.expired(); });
    auto& fresh = cache[PlanSlot{plan.get(), slot}];
    fresh.plan = plan;
    fresh.memory = wrap(md, p);
    return fresh.memory;
  }
  c.memory.set_data_handle(const_cast<void*>(p));
  return c.memory;
}

dnnl::memory::desc strided_md(const Tensor& t) {
  dnnl::memory::dims dims(t.shape().begin(), t.shape().end());
  dnnl::memory::dims strides(t.strides().begin(), t.strides().end());
  if (dims.empty()) dims = strides = {1};
  return dnnl::memory::desc(dims, to_dnnl(t.dtype()), strides);
}

dnnl::memory::desc dense_md(const dnnl::memory::dims& dims, dnnl::memory::data_type dt) {
  dnnl::memory::dims strides(dims.size(), 1);
  for (std::size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * std::max<dnnl::memory::dim>(dims[i], 1);
  return dnnl::memory::desc(dims, dt, strides);
}

void reorder(const dnnl::memory::desc& from, const void* src, const dnnl::memory::desc& to, void* dst, int threads) {
  ThreadScope scope(threads);
  const std::string key = KeyBuilder("reorder").add(from).add(to).add(threads).str();
  auto prim = PrimitiveCache::instance().get<dnnl::reorder>(key, [&] {
    return dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from, engine(), to, user_scratchpad_attr()));
  });
  execute(*prim, {{DNNL_ARG_FROM, wrap(from, src)}, {DNNL_ARG_TO, wrap(to, dst)}});
}

void to_dense(const Tensor& t, DType to, void* dst, int threads) {
  const dnnl::memory::desc from = strided_md(t);
  reorder(from, t.data(), dense_md(from.dims(), to_dnnl(to)), dst, threads);
}

// ---- bf16 policy, activations ----------------------------------------------------------------------

namespace {
std::atomic<Bf16Mode> g_bf16_mode{Bf16Mode::automatic};

// Whether oneDNN has a bf16 x bf16 matmul on this CPU, asked of oneDNN once rather than read off
// the ISA: its bf16 support depends on its version and build as much as on the CPU.
bool onednn_has_bf16_matmul() noexcept {
  static const bool has = [] {
    try {
      using md = dnnl::memory::desc;
      const auto bf16 = dnnl::memory::data_type::bf16;
      const auto ab = dnnl::memory::format_tag::ab;
      const dnnl::matmul::desc d(md({1, 16}, bf16, ab), md({16, 16}, bf16, ab), md({1, 16}, bf16, ab));
      const dnnl::matmul::primitive_desc pd(d, engine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return has;
}
}  // namespace

void set_bf16_mode(Bf16Mode mode) noexcept { g_bf16_mode.store(mode); }
Bf16Mode bf16_mode() noexcept { return g_bf16_mode.load(); }

bool native_bf16(std::int64_t m) noexcept {
  if (!onednn_has_bf16_matmul()) return false;
  switch (bf16_mode()) {
    case Bf16Mode::native:
      return true;
    case Bf16Mode::via_f32:
      return false;
    case Bf16Mode::automatic:
      break;
  }
  static const bool amx = dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx512_core_amx;
  return amx || m < kNativeBf16MaxM;
}

void append_activation(dnnl::post_ops& ops, Activation act) {
  using A = dnnl::algorithm;
  switch (act) {
    case Activation::none:
      return;
    case Activation::gelu:
      ops.append_eltwise(1.0f, A::eltwise_gelu_erf, 0.0f, 0.0f);
      return;
    case Activation::gelu_tanh:
      ops.append_eltwise(1.0f, A::eltwise_gelu_tanh, 0.0f, 0.0f);
      return;
    case Activation::relu:
      ops.append_eltwise(1.0f, A::eltwise_relu, 0.0f, 0.0f);
      return;
    case Activation::silu:
      ops.append_eltwise(1.0f, A::eltwise_swish, 1.0f, 0.0f);
      return;
    case Activation::sigmoid:
      ops.append_eltwise(1.0f, A::eltwise_logistic, 0.0f, 0.0f);
      return;
    case Activation::tanh:
      ops.append_eltwise(1.0f, A::eltwise_tanh, 0.0f, 0.0f);
      return;
  }
  detail::fail(ErrorCode::invalid_argument, "unknown activation {}", static_cast<int>(act));
}

float apply_activation(float v, Activation act) noexcept {
  switch (act) {
    case Activation::none:
      return v;
    case Activation::gelu:
      return 0.5f * v * (1.0f + std::erf(v * 0.70710678f));
    case Activation::gelu_tanh:
      return 0.5f * v * (1.0f + std::tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
    case Activation::relu:
      return v > 0.0f ? v : 0.0f;
    case Activation::silu:
      return v / (1.0f + std::exp(-v));
    case Activation::sigmoid:
      return 1.0f / (1.0f + std::exp(-v));
    case Activation::tanh:
      return std::tanh(v);
  }
  return v;
}

Tuning& tuning() noexcept {
  static Tuning t = [] {
    Tuning d;
    // A/B runs of whole models (encore-bench): ENCORE_CPU_LINEAR_ROWS_MAX=0 keeps every linear on oneDNN.
    if (const char* env = std::getenv("ENCORE_CPU_LINEAR_ROWS_MAX")) {
      char* end = nullptr;
      const long n = std::strtol(env, &end, 10);
      if (end != env && *end == '\0' && n >= 0) d.linear_rows_max = n;
    }
    return d;
  }();
  return t;
}

RowsLoop linear_rows_loop(std::int64_t M) noexcept {
  const Tuning& t = tuning();
  if (M > t.linear_rows_max) return RowsLoop::none;
  if (has_avx512() && !t.linear_rows_force_avx2) return RowsLoop::avx512;
  if (has_avx2() && M <= t.linear_rows_max_avx2) return RowsLoop::avx2;
  return RowsLoop::none;
}

}  // namespace encore::cpu::onednn
