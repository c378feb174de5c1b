#include "backends/cpu/packed_weights.h"

#include <cstdlib>

#include "backends/cpu/onednn_context.h"

namespace encore::cpu {

namespace {
struct Entry {
  std::weak_ptr<Storage> storage;  // weak: a packed copy must not keep a dead model's weights alive
  dnnl::memory packed;
};
}  // namespace

struct PackedWeights::Impl {
  onednn::OnceLruCache<Entry> cache{65536};
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
                                int threads) {
  onednn::KeyBuilder kb("pack");
  kb.add(static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(w.storage().get())))
      .add(static_cast<std::int64_t>(w.offset_bytes()))
      .add(static_cast<std::int64_t>(w.dtype()));
  for (auto d : w.shape()) kb.add(d);
  for (auto s : w.strides()) kb.add(s);
  kb.add(user_md).add(packed_md);
  const std::string& key = kb.str();

  auto make = [&] {
    // Forget packings of weights that no longer exist before adding one.
    impl_->cache.erase_if([](const Entry& e) { return e.storage.expired(); });
    Entry e;
    e.storage = w.storage();
    e.packed = dnnl::memory(packed_md, onednn::engine());
    onednn::reorder(user_md, w.data(), packed_md, e.packed.get_data_handle(), threads);
    return std::make_shared<const Entry>(std::move(e));
  };
  for (int attempt = 0;; ++attempt) {
    auto entry = impl_->cache.get(key, make);
    if (entry->storage.lock() == w.storage() || attempt > 0) return entry->packed;
    impl_->cache.erase(key);  // a previous tensor at the same address: pack this one afresh
  }
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
