// Softmax and log-softmax along any axis on CUDA (f32/f16/bf16 in and out, f32 math).
//
// A line along the axis is handled by one block (the line cached in shared memory as f32 when it
// fits, else re-read) when the axis is contiguous or lines are few, and by one thread otherwise
// (lines then sit next to each other in memory, so loads coalesce across threads).
// Semantics follow torch and the CPU kernel: NaN is ignored by the max but poisons the sum (the
// row becomes NaN); a row of float-lowest values becomes uniform; a row of -inf becomes NaN.
#include <cmath>

#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda {

using namespace kc;

namespace {

struct SoftmaxParams {
  Lines<2> L;
  const void* x = nullptr;
  void* y = nullptr;
  int tx = 0, ty = 0;
  bool log = false, per_thread = false, cache = false;
};

constexpr i64 kCacheFloats = 11 * 1024;  // lines up to 44 KiB of f32 stay in shared memory (+ static: < 48 KiB)

__device__ __forceinline__ float out_value(float x, float m, float inv_or_logsum, bool log) {
  // log: (x - max) - log(sum), subtracting the max first keeps small results exact.
  return log ? (x - m) - inv_or_logsum : expf(x - m) * inv_or_logsum;
}

__global__ void softmax_thread_kernel(const SoftmaxParams p) {
  pdl::begin();
  for (i64 line = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; line < p.L.count;
       line += static_cast<i64>(gridDim.x) * blockDim.x) {
    i64 off[2];
    p.L.ix.offsets(line, off);
    const i64 sx = p.L.step[0], sy = p.L.step[1];
    float m = -INFINITY;
    for (i64 i = 0; i < p.L.len; ++i) m = fmaxf(m, load_f(p.x, off[0] + i * sx, p.tx));
    float s = 0.0f;
    for (i64 i = 0; i < p.L.len; ++i) s += expf(load_f(p.x, off[0] + i * sx, p.tx) - m);
    const float k = p.log ? logf(s) : 1.0f / s;
    for (i64 i = 0; i < p.L.len; ++i)
      store_f(p.y, off[1] + i * sy, p.ty, out_value(load_f(p.x, off[0] + i * sx, p.tx), m, k, p.log));
  }
}

__global__ void softmax_block_kernel(const SoftmaxParams p) {
  extern __shared__ float cache[];
  __shared__ float red[32];
  pdl::begin();
  const i64 n = p.L.len, sx = p.L.step[0], sy = p.L.step[1];
  for (i64 line = blockIdx.x; line < p.L.count; line += gridDim.x) {
    i64 off[2];
    p.L.ix.offsets(line, off);
    auto x_at = [&](i64 i) { return p.cache ? cache[i] : load_f(p.x, off[0] + i * sx, p.tx); };
    float m = -INFINITY;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = load_f(p.x, off[0] + i * sx, p.tx);
      if (p.cache) cache[i] = v;
      m = fmaxf(m, v);
    }
    m = block_max(m, red);  // also publishes the cache (it synchronises)
    float s = 0.0f;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) s += expf(x_at(i) - m);
    s = block_sum(s, red);
    const float k = p.log ? logf(s) : 1.0f / s;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) store_f(p.y, off[1] + i * sy, p.ty, out_value(x_at(i), m, k, p.log));
    __syncthreads();  // the cache is reused by the next line
  }
}

}  // namespace

void softmax(const Tensor& x, const SoftmaxAttrs& attrs, bool log, const Tensor& y, const CudaContext& ctx) {
  const char* op = log ? "log_softmax" : "softmax";
  check_float(op, "x", x);
  check_float(op, "y", y);
  check_shape(op, "y", y, x.shape());
  const int axis = normalize_axis(attrs.axis, x.rank(), "softmax axis");
  if (x.numel() == 0) return;
  Launch l(ctx, op);
  SoftmaxParams p;
  p.L = make_lines<2>({&x, &y}, axis);
  p.x = x.data(), p.y = y.data();
  p.tx = code(x.dtype()), p.ty = code(y.dtype());
  p.log = log;
  p.per_thread = p.L.step[0] != 1 && p.L.count >= 1024;
  if (p.per_thread) {
    l.kernel(op, softmax_thread_kernel, blocks_for(p.L.count), kThreads, 0, p);
  } else {
    p.cache = p.L.len <= kCacheFloats;
    const std::size_t smem = p.cache ? static_cast<std::size_t>(p.L.len) * sizeof(float) : 0;
    const unsigned blocks = static_cast<unsigned>(std::min<i64>(p.L.count, 1 << 20));
    l.kernel(op, softmax_block_kernel, blocks, threads_for_row(p.L.len, 4, 1024), smem, p);
  }
}

}  // namespace encore::cuda
