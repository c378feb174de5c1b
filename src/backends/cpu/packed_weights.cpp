#include "backends/cpu/packed_weights.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "backends/cpu/onednn_context.h"
#include "core/check.h"
#include "kernels/cpu/linear_rows.h"

namespace encore::cpu {

namespace {
struct Entry {
  std::weak_ptr<Storage> storage;  // weak: a packed copy must not keep a dead model's weights alive
  dnnl::memory packed;
};

// `tag`, then the weight's identity: its storage, byte offset, dtype, shape and strides.
onednn::KeyBuilder identity_key(std::string_view tag, const Tensor& w) {
  onednn::KeyBuilder kb(tag);
  kb.add(static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(w.storage().get())))
      .add(static_cast<std::int64_t>(w.offset_bytes()))
      .add(static_cast<std::int64_t>(w.dtype()));
  for (auto d : w.shape()) kb.add(d);
  for (auto s : w.strides()) kb.add(s);
  return kb;
}

// Block b, row k, lane j of the rows layout = W(k, 32 b + j) (0 past N).
void pack_rows(const float* w, std::int64_t s_k, std::int64_t s_n, std::int64_t K, std::int64_t N, float* dst,
               int threads) {
  constexpr std::int64_t B = rows::kRowsBlock;
  const std::int64_t blocks = (N + B - 1) / B;
#pragma omp parallel for num_threads(std::max(threads, 1)) schedule(static)
  for (std::int64_t b = 0; b < blocks; ++b) {
    float* out = dst + b * K * B;
    for (std::int64_t j = 0; j < B; ++j) {
      const std::int64_t n = b * B + j;
      for (std::int64_t k = 0; k < K; ++k)
        out[k * B + j] = n < N ? w[k * s_k + n * s_n] : 0.0f;
    }
  }
}
// Once packed, a weight of a file mapping is only read through its packed copy, so its pages go
// back to the OS: the resident set then holds the model once, not twice (~0.9 GiB less for
// ViT-B/16 + GPT-2 in f32). A later use that reads the weight again (another layout) faults the
// pages back in. ENCORE_KEEP_MAPPED_WEIGHTS=1 keeps them resident.
bool keep_mapped_weights() {
  static const bool keep = [] {
    const char* env = std::getenv("ENCORE_KEEP_MAPPED_WEIGHTS");
    return env != nullptr && env[0] != '\0' && env[0] != '0';
  }();
  return keep;
}

void release_source_pages(const Tensor& w) {
  if (w.numel() == 0 || !w.storage()->is_file_mapping() || keep_mapped_weights()) return;
  std::int64_t lo = 0, hi = 0;  // element offsets of the lowest and highest element addressed
  for (int i = 0; i < w.rank(); ++i) {
    const std::int64_t e = (w.dim(i) - 1) * w.strides()[i];
    (e < 0 ? lo : hi) += e;
  }
  const std::size_t item = dtype_size(w.dtype());
  const auto* first = static_cast<const std::byte*>(w.data()) + lo * static_cast<std::int64_t>(item);
  w.storage()->release_pages(first, static_cast<std::size_t>(hi - lo + 1) * item);
}
}  // namespace

struct PackedWeights::Impl {
  onednn::OnceLruCache<Entry> cache{65536};

  // The packed copy of `w` under `key`, made by pack() on the first call. An entry left by a dead
  // tensor at the same address (a recycled allocation) is dropped and packed afresh.
  template <typename Pack>
  dnnl::memory find_or_pack(const std::string& key, const Tensor& w, bool use_cache, Pack&& pack) {
    if (!use_cache) return pack();  // not a constant: its contents may differ from the last call
    auto make = [&] {
      // Forget packings of weights that no longer exist before adding one.
      cache.erase_if([](const Entry& e) { return e.storage.expired(); });
      Entry e;
      e.storage = w.storage();
      e.packed = pack();
      release_source_pages(w);
      return std::make_shared<const Entry>(std::move(e));
    };
    for (int attempt = 0;; ++attempt) {
      auto entry = cache.get(key, make);
      if (entry->storage.lock() == w.storage() || attempt > 0) return entry->packed;
      cache.erase(key);
    }
  }
};

PackedWeights::PackedWeights() : impl_(new Impl) {
  if (const char* env = std::getenv("ENCORE_PACKED_WEIGHTS_CAPACITY")) {
    const long n = std::atol(env);
    if (n > 0) impl_->cache.set_capacity(static_cast<std::size_t>(n));
  }
}

PackedWeights& PackedWeights::instance() {
  static PackedWeights* p = new PackedWeights();  // never destroyed: oneDNN memory outlives statics
  return *p;
}

dnnl::memory PackedWeights::get(const Tensor& w, const dnnl::memory::desc& user_md, const dnnl::memory::desc& packed_md,
                                int threads, bool cache) {
  onednn::KeyBuilder kb = identity_key("pack", w);
  kb.add(user_md).add(packed_md);
  return impl_->find_or_pack(kb.str(), w, cache, [&] {
    dnnl::memory packed(packed_md, onednn::engine());
    onednn::reorder(user_md, w.data(), packed_md, packed.get_data_handle(), threads);
    return packed;
  });
}

dnnl::memory PackedWeights::rows_layout(const Tensor& w, bool out_in, int threads, bool cache) {
  ENCORE_CHECK(w.rank() == 2 && w.dtype() == DType::F32, invalid_argument,
               "PackedWeights::rows_layout: weight {} {} must be a 2-D f32 tensor", w.shape().str(),
               dtype_name(w.dtype()));
  const std::int64_t K = out_in ? w.dim(1) : w.dim(0), N = out_in ? w.dim(0) : w.dim(1);
  const std::int64_t s_k = out_in ? w.strides()[1] : w.strides()[0], s_n = out_in ? w.strides()[0] : w.strides()[1];
  onednn::KeyBuilder kb = identity_key("rows", w);
  kb.add(out_in ? 1 : 0);
  return impl_->find_or_pack(kb.str(), w, cache, [&] {
    const std::int64_t floats = (N + rows::kRowsBlock - 1) / rows::kRowsBlock * rows::kRowsBlock * K;
    // oneDNN's allocation: 64-byte aligned, and one kind of entry for the cache.
    dnnl::memory m(dnnl::memory::desc({floats}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a),
                   onednn::engine());
    pack_rows(w.data_ptr<float>(), s_k, s_n, K, N, static_cast<float*>(m.get_data_handle()), threads);
    return m;
  });
}

void PackedWeights::evict(const Tensor& w) {
  const Storage* s = w.storage().get();
  impl_->cache.erase_if([s](const Entry& e) {
    auto alive = e.storage.lock();
    return !alive || alive.get() == s;
  });
}

void PackedWeights::clear() { impl_->cache.clear(); }
std::size_t PackedWeights::size() const { return impl_->cache.size(); }
std::size_t PackedWeights::packs() const { return impl_->cache.creations(); }
void PackedWeights::set_capacity(std::size_t entries) { impl_->cache.set_capacity(entries); }

}  // namespace encore::cpu
