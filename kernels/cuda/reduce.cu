// Reductions on CUDA: sum/mean over axes, argmax, topk, cumsum.
//
// Floating sums accumulate in double (H200 FP64 is fast enough for memory-bound reductions, and it
// matches the CPU kernel), integer sums in uint64 (wrapping like the integer type). Outputs are
// computed by a block each when the reduced run is contiguous (threads split it) and by a thread
// each otherwise (outputs are then adjacent in memory, so loads coalesce across threads).
// Ordering (argmax, topk): NaN above everything, then larger values, ties to the lower index.
#include <cmath>

#include "kernels/common/reduce_layout.h"
#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda {

using namespace kc;

namespace {

// ---- sum / mean ---------------------------------------------------------------------------------------

struct ReduceParams {
  Indexer<2> out;  // kept dims: x, y
  Indexer<1> box;  // reduced dims: x
  i64 M = 0, R = 0;
  const void* x = nullptr;
  void* y = nullptr;
  int dt = 0;
  bool mean = false, per_thread = false;
};

__device__ __forceinline__ void store_sum(const ReduceParams& p, i64 yo, double fs, unsigned long long is) {
  if (!is_float_code(p.dt)) {
    if (p.dt == kI32) static_cast<std::int32_t*>(p.y)[yo] = static_cast<std::int32_t>(is);
    else static_cast<i64*>(p.y)[yo] = static_cast<i64>(is);
  } else {
    store_f(p.y, yo, p.dt, static_cast<float>(p.mean ? fs / static_cast<double>(p.R) : fs));
  }
}

__global__ void reduce_kernel(const ReduceParams p) {
  __shared__ double red_f[32];
  __shared__ unsigned long long red_i[32];
  const bool fl = is_float_code(p.dt);
  const i64 first = p.per_thread ? blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x : blockIdx.x;
  const i64 step = p.per_thread ? static_cast<i64>(gridDim.x) * blockDim.x : gridDim.x;
  const i64 r0 = p.per_thread ? 0 : threadIdx.x, rs = p.per_thread ? 1 : blockDim.x;
  for (i64 o = first; o < p.M; o += step) {
    i64 off[2];
    p.out.offsets(o, off);
    double fs = 0.0;
    unsigned long long is = 0;
    for (i64 r = r0; r < p.R; r += rs) {
      i64 b[1];
      p.box.offsets(r, b);
      if (fl) fs += load_f(p.x, off[0] + b[0], p.dt);
      else is += static_cast<unsigned long long>(load_i(p.x, off[0] + b[0], p.dt));
    }
    if (!p.per_thread) {
      fs = block_sum(fs, red_f);
      is = block_sum(is, red_i);
      if (threadIdx.x != 0) continue;
    }
    store_sum(p, off[1], fs, is);
  }
}

// ---- argmax / topk ordering -----------------------------------------------------------------------------

/// True when (va, ia) comes before (vb, ib); an index < 0 marks "no candidate" (always last).
__device__ __forceinline__ bool before(double va, i64 ia, double vb, i64 ib) {
  if (ib < 0) return ia >= 0;
  if (ia < 0) return false;
  const bool na = va != va, nb = vb != vb;
  if (na != nb) return na;
  if (!na && va != vb) return va > vb;
  return ia < ib;
}

/// Block-wide best (value, index), returned to every thread. Contains __syncthreads().
__device__ __forceinline__ void block_best(double& v, i64& i, double* shv, i64* shi) {
  for (int o = 16; o > 0; o >>= 1) {
    const double ov = __shfl_xor_sync(0xffffffffu, v, o);
    const long long oi = __shfl_xor_sync(0xffffffffu, static_cast<long long>(i), o);
    if (before(ov, oi, v, i)) v = ov, i = oi;
  }
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) shv[w] = v, shi[w] = i;
  __syncthreads();
  for (int k = 0; k < nw; ++k)
    if (before(shv[k], shi[k], v, i)) v = shv[k], i = shi[k];
}

struct ArgParams {
  Indexer<3> ix;  // line starts: x, values/y, indices
  i64 count = 0, n = 0, k = 0;
  i64 step[3] = {};
  const void* x = nullptr;
  void* values = nullptr;
  void* indices = nullptr;
  int dt = 0, es = 0;
  bool i64_out = true, per_thread = false;
};

__device__ __forceinline__ void store_index(const ArgParams& p, i64 o, i64 v) {
  if (p.i64_out) static_cast<i64*>(p.indices)[o] = v;
  else static_cast<std::int32_t*>(p.indices)[o] = static_cast<std::int32_t>(v);
}

__global__ void argmax_kernel(const ArgParams p) {
  __shared__ double shv[32];
  __shared__ i64 shi[32];
  const i64 first = p.per_thread ? blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x : blockIdx.x;
  const i64 step = p.per_thread ? static_cast<i64>(gridDim.x) * blockDim.x : gridDim.x;
  const i64 t0 = p.per_thread ? 0 : threadIdx.x, ts = p.per_thread ? 1 : blockDim.x;
  for (i64 line = first; line < p.count; line += step) {
    i64 off[3];
    p.ix.offsets(line, off);
    double bv = 0.0;
    i64 bi = -1;
    for (i64 i = t0; i < p.n; i += ts) {
      const double v = load_d(p.x, off[0] + i * p.step[0], p.dt);
      if (before(v, i, bv, bi)) bv = v, bi = i;
    }
    if (!p.per_thread) {
      block_best(bv, bi, shv, shi);
      if (threadIdx.x != 0) continue;
    }
    store_index(p, off[2], bi);
  }
}

// One block per line and k selection rounds over the not-yet-taken elements (a bitmask in shared
// memory): O(k n / threads) per line, fine for the small k of beam search and MoE routing.
__global__ void topk_kernel(const ArgParams p) {
  extern __shared__ unsigned taken[];
  __shared__ double shv[32];
  __shared__ i64 shi[32];
  const i64 words = (p.n + 31) / 32;
  for (i64 line = blockIdx.x; line < p.count; line += gridDim.x) {
    i64 off[3];
    p.ix.offsets(line, off);
    for (i64 w = threadIdx.x; w < words; w += blockDim.x) taken[w] = 0u;
    __syncthreads();
    for (i64 j = 0; j < p.k; ++j) {
      double bv = 0.0;
      i64 bi = -1;
      for (i64 i = threadIdx.x; i < p.n; i += blockDim.x) {
        if ((taken[i >> 5] >> (i & 31)) & 1u) continue;
        const double v = load_d(p.x, off[0] + i * p.step[0], p.dt);
        if (before(v, i, bv, bi)) bv = v, bi = i;
      }
      block_best(bv, bi, shv, shi);
      if (threadIdx.x == 0) {
        taken[bi >> 5] |= 1u << (bi & 31);
        move_elem(p.x, off[0] + bi * p.step[0], p.values, off[1] + j * p.step[1], p.es);
        store_index(p, off[2] + j * p.step[2], bi);
      }
      __syncthreads();
    }
  }
}

// ---- cumsum ----------------------------------------------------------------------------------------------

struct CumsumParams {
  Lines<2> L;
  const void* x = nullptr;
  void* y = nullptr;
  int tx = 0, ty = 0;
  bool per_thread = false;
};

__device__ __forceinline__ void store_cum(const CumsumParams& p, i64 o, double fs, unsigned long long is) {
  if (is_float_code(p.ty)) store_f(p.y, o, p.ty, static_cast<float>(fs));
  else if (p.ty == kI32) static_cast<std::int32_t*>(p.y)[o] = static_cast<std::int32_t>(is);
  else static_cast<i64*>(p.y)[o] = static_cast<i64>(is);
}

template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T u = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += u;
  }
  return v;
}

// A thread per line (strided axis) or a warp per line scanning 32 elements at a time.
__global__ void cumsum_kernel(const CumsumParams p) {
  const bool fl = is_float_code(p.tx);
  const i64 sx = p.L.step[0], sy = p.L.step[1];
  const int lane = threadIdx.x & 31;
  const i64 unit = p.per_thread ? blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x
                                : (blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x) >> 5;
  const i64 units = p.per_thread ? static_cast<i64>(gridDim.x) * blockDim.x
                                 : (static_cast<i64>(gridDim.x) * blockDim.x) >> 5;
  for (i64 line = unit; line < p.L.count; line += units) {
    i64 off[2];
    p.L.ix.offsets(line, off);
    double fc = 0.0;
    unsigned long long ic = 0;
    if (p.per_thread) {
      for (i64 i = 0; i < p.L.len; ++i) {
        if (fl) fc += load_f(p.x, off[0] + i * sx, p.tx);
        else ic += static_cast<unsigned long long>(load_i(p.x, off[0] + i * sx, p.tx));
        store_cum(p, off[1] + i * sy, fc, ic);
      }
      continue;
    }
    for (i64 c0 = 0; c0 < p.L.len; c0 += 32) {
      const i64 i = c0 + lane;
      const bool in = i < p.L.len;
      if (fl) {
        double v = in ? static_cast<double>(load_f(p.x, off[0] + i * sx, p.tx)) : 0.0;
        v = warp_inclusive_scan(v, lane) + fc;
        if (in) store_cum(p, off[1] + i * sy, v, 0);
        fc = __shfl_sync(0xffffffffu, v, 31);
      } else {
        unsigned long long v = in ? static_cast<unsigned long long>(load_i(p.x, off[0] + i * sx, p.tx)) : 0ull;
        v = warp_inclusive_scan(v, lane) + ic;
        if (in) store_cum(p, off[1] + i * sy, 0.0, v);
        ic = __shfl_sync(0xffffffffu, v, 31);
      }
    }
  }
}

unsigned line_blocks(i64 count) { return static_cast<unsigned>(std::min<i64>(count, 1 << 20)); }

}  // namespace

void reduce(const Tensor& x, const ReduceAttrs& attrs, bool mean, const Tensor& y, const CudaContext& ctx) {
  const char* op = mean ? "reduce_mean" : "reduce_sum";
  check_dev(op, "x", x);
  check_dev(op, "y", y);
  const reduce_layout::Layout rl = reduce_layout::plan(op, x, attrs, mean, y);
  if (y.numel() == 0) return;
  Launch l(ctx, op);
  ReduceParams p;
  p.out = make_indexer<2>(rl.kept_shape, std::array<Shape, 2>{rl.kept_x, rl.kept_y});
  p.box = make_indexer<1>(rl.red_shape, std::array<Shape, 1>{rl.red_x});
  p.M = rl.kept_shape.numel();
  p.R = rl.red_shape.numel();
  p.x = x.data(), p.y = y.data();
  p.dt = code(x.dtype());
  p.mean = mean;
  const bool inner_contiguous = p.box.rank == 0 || p.box.stride[0][p.box.rank - 1] == 1;
  p.per_thread = !inner_contiguous && p.M >= 256;
  if (p.per_thread) reduce_kernel<<<blocks_for(p.M), kThreads, 0, l.stream>>>(p);
  else reduce_kernel<<<line_blocks(p.M), threads_for_row(p.R, 4, 512), 0, l.stream>>>(p);
  check_launch(op);
}

void argmax(const Tensor& x, const ArgMaxAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  check_dev("argmax", "x", x);
  check_dev("argmax", "y", y);
  ENCORE_CU_CHECK(x.dtype() != DType::Bool, unsupported, "argmax: x has dtype bool");
  ENCORE_CU_CHECK(y.dtype() == DType::I64, invalid_argument, "argmax: y must be i64, got ", dtype_name(y.dtype()));
  const int axis = normalize_axis(attrs.axis, x.rank(), "argmax axis");
  const i64 n = x.shape()[axis];
  ENCORE_CU_CHECK(n > 0, invalid_argument, "argmax: dimension ", axis, " of ", x.shape().str(), " is empty");
  Shape expected = x.shape();
  if (attrs.keepdims) expected[axis] = 1;
  else expected.erase(axis);
  check_shape("argmax", "y", y, expected);
  if (y.numel() == 0) return;
  Launch l(ctx, "argmax");
  std::vector<bool> reduced(static_cast<std::size_t>(x.rank()), false);
  reduced[static_cast<std::size_t>(axis)] = true;
  const Shape ys = reduce_layout::kept_strides(y, reduced, attrs.keepdims);
  ArgParams p;
  p.ix = make_indexer<3>(drop_dim(x.shape(), axis), std::array<Shape, 3>{drop_dim(x.strides(), axis), ys, ys});
  p.count = y.numel();
  p.n = n;
  p.step[0] = x.strides()[axis];
  p.x = x.data();
  p.indices = y.data();
  p.dt = code(x.dtype());
  p.per_thread = p.step[0] != 1 && p.count >= 1024;
  if (p.per_thread) argmax_kernel<<<blocks_for(p.count), kThreads, 0, l.stream>>>(p);
  else argmax_kernel<<<line_blocks(p.count), threads_for_row(n, 4, 1024), 0, l.stream>>>(p);
  check_launch("argmax");
}

void topk(const Tensor& x, const TopKAttrs& attrs, const Tensor& values, const Tensor& indices,
          const CudaContext& ctx) {
  check_dev("topk", "x", x);
  check_dev("topk", "values", values);
  check_dev("topk", "indices", indices);
  ENCORE_CU_CHECK(x.dtype() != DType::Bool, unsupported, "topk: x has dtype bool");
  ENCORE_CU_CHECK(values.dtype() == x.dtype(), invalid_argument, "topk: values are ", dtype_name(values.dtype()),
                  " but x is ", dtype_name(x.dtype()));
  ENCORE_CU_CHECK(indices.dtype() == DType::I64 || indices.dtype() == DType::I32, invalid_argument,
                  "topk: indices must be i64 (or i32), got ", dtype_name(indices.dtype()));
  const int axis = normalize_axis(attrs.axis, x.rank(), "topk axis");
  const i64 n = x.shape()[axis], k = attrs.k;
  ENCORE_CU_CHECK(k >= 0 && k <= n, invalid_argument, "topk: k = ", k, " is outside [0, ", n, "] (dimension ", axis,
                  " of ", x.shape().str(), ")");
  Shape expected = x.shape();
  expected[axis] = k;
  check_shape("topk", "values", values, expected);
  check_shape("topk", "indices", indices, expected);
  if (values.numel() == 0) return;
  Launch l(ctx, "topk");
  ArgParams p;
  p.ix = make_indexer<3>(drop_dim(x.shape(), axis), std::array<Shape, 3>{drop_dim(x.strides(), axis),
                                                                         drop_dim(values.strides(), axis),
                                                                         drop_dim(indices.strides(), axis)});
  p.count = drop_dim(x.shape(), axis).numel();
  p.n = n;
  p.k = k;
  p.step[0] = x.strides()[axis], p.step[1] = values.strides()[axis], p.step[2] = indices.strides()[axis];
  p.x = x.data(), p.values = values.data(), p.indices = indices.data();
  p.dt = code(x.dtype());
  p.es = static_cast<int>(dtype_size(x.dtype()));
  p.i64_out = indices.dtype() == DType::I64;
  const std::size_t smem = static_cast<std::size_t>((n + 31) / 32) * sizeof(unsigned);
  ENCORE_CU_CHECK(smem + static_smem(reinterpret_cast<const void*>(topk_kernel)) <= max_smem_per_block(), unsupported,
                  "topk: dimension ", axis, " of ", x.shape().str(), " is too long for the shared-memory selection");
  allow_smem(topk_kernel, smem);
  topk_kernel<<<line_blocks(p.count), threads_for_row(n, 8, 1024), smem, l.stream>>>(p);
  check_launch("topk");
}

void cumsum(const Tensor& x, const CumSumAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  check_dev("cumsum", "x", x);
  check_dev("cumsum", "y", y);
  check_shape("cumsum", "y", y, x.shape());
  const bool fl = is_floating(x.dtype());
  ENCORE_CU_CHECK(fl ? is_floating(y.dtype()) : (y.dtype() == DType::I32 || y.dtype() == DType::I64), unsupported,
                  "cumsum: ", dtype_name(x.dtype()), " -> ", dtype_name(y.dtype()),
                  " is not supported (floating -> floating, integer/bool -> i32/i64)");
  const int axis = normalize_axis(attrs.axis, x.rank(), "cumsum axis");
  if (x.numel() == 0) return;
  Launch l(ctx, "cumsum");
  CumsumParams p;
  p.L = make_lines<2>({&x, &y}, axis);
  p.x = x.data(), p.y = y.data();
  p.tx = code(x.dtype()), p.ty = code(y.dtype());
  p.per_thread = p.L.step[0] != 1 && p.L.count >= 1024;
  const i64 threads_needed = p.per_thread ? p.L.count : p.L.count * 32;
  cumsum_kernel<<<blocks_for(threads_needed), kThreads, 0, l.stream>>>(p);
  check_launch("cumsum");
}

}  // namespace encore::cuda
