// kv_cache_write on the GPU: scatters the newest keys/values into the paged cache. Positions come
// from lengths in device memory, so a captured decode step replays correctly as lengths grow. The
// block table is trusted to be valid here (KvCache keeps it so); an entry outside the cache is
// skipped rather than written out of bounds.
#include "kernels/common/decode_checks.h"
#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda {

using namespace kc;

namespace {

struct KvWriteParams {
  i64 n = 0;  // B * Tq * H * D elements per tensor
  i64 tq = 0, heads = 0, block_size = 0, d = 0, max_blocks = 0, num_blocks = 0;
  i64 ks[3] = {}, vs[3] = {};
  const void* k_new = nullptr;
  const void* v_new = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  const std::int32_t* table = nullptr;
  const std::int32_t* lengths = nullptr;
  int es = 0;
};

__global__ void kv_cache_write_kernel(const KvWriteParams p) {
  pdl::begin();
  for (i64 w = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; w < p.n;
       w += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 e = w % p.d, rest = w / p.d, h = rest % p.heads, bt = rest / p.heads, t = bt % p.tq, b = bt / p.tq;
    const i64 pos = static_cast<i64>(p.lengths[b]) - p.tq + t;
    if (pos < 0 || pos >= p.max_blocks * p.block_size) continue;
    const i64 block = p.table[b * p.max_blocks + pos / p.block_size];
    if (block < 0 || block >= p.num_blocks) continue;
    const i64 dst = ((block * p.heads + h) * p.block_size + pos % p.block_size) * p.d + e;
    move_elem(p.k_new, b * p.ks[0] + t * p.ks[1] + h * p.d + e, p.k_cache, dst, p.es);
    move_elem(p.v_new, b * p.vs[0] + t * p.vs[1] + h * p.d + e, p.v_cache, dst, p.es);
  }
}

}  // namespace

void kv_cache_write(const Tensor& k_new, const Tensor& v_new, const Tensor& k_cache, const Tensor& v_cache,
                    const Tensor& block_table, const Tensor& lengths, const CudaContext& ctx) {
  for (const Tensor* t : {&k_new, &v_new, &k_cache, &v_cache, &block_table, &lengths})
    check_dev("kv_cache_write", "operand", *t);
  decode_checks::check_kv_cache_write(k_new, v_new, k_cache, v_cache, block_table, lengths);
  KvWriteParams p;
  p.tq = k_new.dim(1), p.heads = k_cache.dim(1), p.block_size = k_cache.dim(2), p.d = k_cache.dim(3);
  p.max_blocks = block_table.dim(1), p.num_blocks = k_cache.dim(0);
  p.n = k_new.dim(0) * p.tq * p.heads * p.d;
  for (int i = 0; i < 3; ++i) p.ks[i] = k_new.strides()[i], p.vs[i] = v_new.strides()[i];
  p.k_new = k_new.data(), p.v_new = v_new.data(), p.k_cache = k_cache.data(), p.v_cache = v_cache.data();
  p.table = block_table.data_ptr<std::int32_t>(), p.lengths = lengths.data_ptr<std::int32_t>();
  p.es = static_cast<int>(dtype_size(k_new.dtype()));
  if (p.n == 0) return;
  Launch l(ctx, "kv_cache_write");
  l.kernel("kv_cache_write", kv_cache_write_kernel, blocks_for(p.n), kThreads, 0, p);
}

}  // namespace encore::cuda
