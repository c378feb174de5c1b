// kv_cache_write: scatters the newest keys/values into the paged cache through the block table.
#include <algorithm>
#include <cstring>
#include <utility>

#include "backends/cpu/kernels.h"
#include "core/check.h"
#include "kernels/common/decode_checks.h"

namespace encore::cpu {

void kv_cache_write(const Tensor& k_new, const Tensor& v_new, const Tensor& k_cache, const Tensor& v_cache,
                    const Tensor& block_table, const Tensor& lengths, const CpuContext& ctx) {
  const char* op = "kv_cache_write";
  const std::pair<const char*, const Tensor*> all[] = {{"k_new", &k_new},     {"v_new", &v_new},
                                                       {"k_cache", &k_cache}, {"v_cache", &v_cache},
                                                       {"block_table", &block_table}, {"lengths", &lengths}};
  for (const auto& [name, t] : all) {  // before the shared checks, which read shapes and data
    ENCORE_CHECK(t->defined(), invalid_argument, "{}: {} is undefined", op, name);
    ENCORE_CHECK(t->device().is_cpu(), invalid_argument, "{}: {} is on {}, expected the CPU", op, name,
                 t->device().str());
  }
  decode_checks::check_kv_cache_write(k_new, v_new, k_cache, v_cache, block_table, lengths);
  const std::int64_t batch = k_new.dim(0), tq = k_new.dim(1);
  const std::int64_t heads = k_cache.dim(1), block_size = k_cache.dim(2), d = k_cache.dim(3);
  const auto* table = block_table.data_ptr<std::int32_t>();
  const auto* len = lengths.data_ptr<std::int32_t>();
  const std::int64_t max_blocks = block_table.dim(1), num_blocks = k_cache.dim(0);
  const std::size_t es = dtype_size(k_new.dtype()), row_bytes = static_cast<std::size_t>(d) * es;
  // Validate every destination first so a bad table never leaves a half-written cache.
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t first = static_cast<std::int64_t>(len[b]) - tq;
    ENCORE_CHECK(first >= 0 && len[b] <= max_blocks * block_size, invalid_argument,
                 "kv_cache_write: sequence {} has length {}, which cannot hold {} new tokens within {} positions", b,
                 len[b], tq, max_blocks * block_size);
    for (std::int64_t t = 0; t < tq; ++t) {
      const std::int32_t block = table[b * max_blocks + (first + t) / block_size];
      ENCORE_CHECK(block >= 0 && block < num_blocks, invalid_argument,
                   "kv_cache_write: sequence {} position {} maps to block {}, expected 0..{}", b, first + t, block,
                   num_blocks - 1);
    }
  }
  auto* kc = static_cast<std::byte*>(k_cache.data());
  auto* vc = static_cast<std::byte*>(v_cache.data());
  const auto* kn = static_cast<const std::byte*>(k_new.data());
  const auto* vn = static_cast<const std::byte*>(v_new.data());
#pragma omp parallel for collapse(2) num_threads(std::max(1, ctx.num_threads)) if (batch * tq * heads > 64)
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < tq; ++t) {
      const std::int64_t pos = static_cast<std::int64_t>(len[b]) - tq + t;
      const std::int64_t block = table[b * max_blocks + pos / block_size], slot = pos % block_size;
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::int64_t dst = ((block * heads + h) * block_size + slot) * d;
        const std::int64_t ksrc = b * k_new.strides()[0] + t * k_new.strides()[1] + h * d;
        const std::int64_t vsrc = b * v_new.strides()[0] + t * v_new.strides()[1] + h * d;
        std::memcpy(kc + dst * static_cast<std::int64_t>(es), kn + ksrc * static_cast<std::int64_t>(es), row_bytes);
        std::memcpy(vc + dst * static_cast<std::int64_t>(es), vn + vsrc * static_cast<std::int64_t>(es), row_bytes);
      }
    }
}

}  // namespace encore::cpu
