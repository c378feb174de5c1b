// Shared machinery of the CUDA kernels in kernels/cuda/*.cu: host-side checks and errors, runtime
// dtype loads/stores, strided index math, reductions and launch helpers.
//
// Design choices shared by every kernel file:
// - dtypes are dispatched at run time inside the kernels (a warp-uniform switch) rather than by
//   template instantiation: the kernels are memory-bound, and CI compiles them on 2 cores.
// - Strided operands go through Indexer<N>: up to kMaxDims dims, extent-1 dims dropped and
//   adjacent dims merged on the host, so contiguous tensors become one flat run (no division).
// - Messages are streamed, not fmt-formatted: fmt 9 does not compile under nvcc in C++20 mode.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <sstream>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "encore/core/tensor.h"
#include "kernels/cuda/pdl.cuh"

namespace encore::cuda::kc {

using i64 = std::int64_t;

// ---- host: errors and checks ----------------------------------------------------------------------

template <typename... A>
std::string str_cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}

template <typename... A>
[[noreturn]] void fail(ErrorCode code, const A&... a) {
  throw Error(code, str_cat(a...));
}

/// Throws Error(code, streamed message) when `cond` is false; the message is built only then.
#define ENCORE_CU_CHECK(cond, code, ...)                                                   \
  do {                                                                                     \
    if (!(cond)) ::encore::cuda::kc::fail(::encore::ErrorCode::code, __VA_ARGS__);          \
  } while (0)

/// Throws Error(backend) naming `what` when a CUDA call failed.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so later calls do not report it again
    fail(e == cudaErrorMemoryAllocation ? ErrorCode::out_of_memory : ErrorCode::backend, what, ": ",
         cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
}

/// Checks the launch just made (configuration errors; faults surface at the next sync).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline void check_dev(const char* op, const char* what, const Tensor& t) {
  ENCORE_CU_CHECK(t.defined(), invalid_argument, op, ": ", what, " is undefined");
  ENCORE_CU_CHECK(t.device().is_cuda(), invalid_argument, op, ": ", what, " is on ", t.device().str(),
                  ", expected a CUDA device");
}
inline void check_float(const char* op, const char* what, const Tensor& t) {
  check_dev(op, what, t);
  ENCORE_CU_CHECK(is_floating(t.dtype()), unsupported, op, ": ", what, " has dtype ", dtype_name(t.dtype()),
                  "; supported: f32, f16, bf16");
}
inline void check_shape(const char* op, const char* what, const Tensor& t, const Shape& want) {
  ENCORE_CU_CHECK(t.shape() == want, invalid_argument, op, ": ", what, " has shape ", t.shape().str(),
                  ", expected ", want.str());
}
inline void check_index_dtype(const char* op, const char* what, const Tensor& t) {
  check_dev(op, what, t);
  ENCORE_CU_CHECK(t.dtype() == DType::I32 || t.dtype() == DType::I64, unsupported, op, ": ", what,
                  " has dtype ", dtype_name(t.dtype()), "; expected i32 or i64");
}

/// `s` without dimension `axis`.
inline Shape drop_dim(const Shape& s, int axis) {
  Shape r = s;
  r.erase(axis);
  return r;
}

// ---- device: dtypes -------------------------------------------------------------------------------
// Codes are the DType values (kernels receive `int dt`).
enum : int { kF32 = 0, kF16 = 1, kBF16 = 2, kI8 = 3, kU8 = 4, kI32 = 5, kI64 = 6, kBool = 7 };
static_assert(static_cast<int>(DType::F32) == kF32 && static_cast<int>(DType::F16) == kF16 &&
              static_cast<int>(DType::BF16) == kBF16 && static_cast<int>(DType::I8) == kI8 &&
              static_cast<int>(DType::U8) == kU8 && static_cast<int>(DType::I32) == kI32 &&
              static_cast<int>(DType::I64) == kI64 && static_cast<int>(DType::Bool) == kBool);

inline int code(DType t) { return static_cast<int>(t); }

__host__ __device__ __forceinline__ bool is_float_code(int dt) { return dt <= kBF16; }

/// Element i of a floating or integer tensor as float.
__device__ __forceinline__ float load_f(const void* p, i64 i, int dt) {
  switch (dt) {
    case kF32: return static_cast<const float*>(p)[i];
    case kF16: return __half2float(static_cast<const __half*>(p)[i]);
    case kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case kI8: return static_cast<float>(static_cast<const std::int8_t*>(p)[i]);
    case kU8: return static_cast<float>(static_cast<const std::uint8_t*>(p)[i]);
    case kI32: return static_cast<float>(static_cast<const std::int32_t*>(p)[i]);
    case kI64: return static_cast<float>(static_cast<const i64*>(p)[i]);
    default: return static_cast<const std::uint8_t*>(p)[i] != 0 ? 1.0f : 0.0f;
  }
}

/// Element i of a floating tensor: v rounded to nearest even.
__device__ __forceinline__ void store_f(void* p, i64 i, int dt, float v) {
  switch (dt) {
    case kF16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case kBF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

/// Element i of an integer (or bool) tensor as int64.
__device__ __forceinline__ i64 load_i(const void* p, i64 i, int dt) {
  switch (dt) {
    case kI8: return static_cast<const std::int8_t*>(p)[i];
    case kU8: return static_cast<const std::uint8_t*>(p)[i];
    case kI32: return static_cast<const std::int32_t*>(p)[i];
    case kI64: return static_cast<const i64*>(p)[i];
    default: return static_cast<const std::uint8_t*>(p)[i] != 0;
  }
}

/// Element i as double: exact for every dtype but i64 beyond 2^53 (ordering comparisons).
__device__ __forceinline__ double load_d(const void* p, i64 i, int dt) {
  return is_float_code(dt) ? static_cast<double>(load_f(p, i, dt)) : static_cast<double>(load_i(p, i, dt));
}

/// Raw element move of `es` bytes (1, 2, 4 or 8).
__device__ __forceinline__ void move_elem(const void* src, i64 si, void* dst, i64 di, int es) {
  switch (es) {
    case 1: static_cast<std::uint8_t*>(dst)[di] = static_cast<const std::uint8_t*>(src)[si]; break;
    case 2: static_cast<std::uint16_t*>(dst)[di] = static_cast<const std::uint16_t*>(src)[si]; break;
    case 4: static_cast<std::uint32_t*>(dst)[di] = static_cast<const std::uint32_t*>(src)[si]; break;
    default: static_cast<std::uint64_t*>(dst)[di] = static_cast<const std::uint64_t*>(src)[si]; break;
  }
}

// ---- strided index math ---------------------------------------------------------------------------

/// N operands over one logical shape; offsets (in elements) of the i-th element in row-major order.
template <int N>
struct Indexer {
  int rank = 0;
  bool small = true;  // numel < 2^32: 32-bit divisions
  i64 size[kMaxDims] = {};
  i64 stride[N][kMaxDims] = {};

  __device__ __forceinline__ void offsets(i64 i, i64 (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    if (small) {
      std::uint32_t u = static_cast<std::uint32_t>(i);
      for (int d = rank - 1; d > 0; --d) {
        const std::uint32_t s = static_cast<std::uint32_t>(size[d]);
        const std::uint32_t q = u / s, r = u - q * s;
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += static_cast<i64>(r) * stride[k][d];
        u = q;
      }
      if (rank > 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += static_cast<i64>(u) * stride[k][0];
      }
    } else {
      for (int d = rank - 1; d > 0; --d) {
        const i64 q = i / size[d], r = i - q * size[d];
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += r * stride[k][d];
        i = q;
      }
      if (rank > 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += i * stride[k][0];
      }
    }
  }
};

/// Builds an Indexer over `shape` with one stride array per operand (extent-1 dims dropped,
/// mergeable neighbours merged).
template <int N>
Indexer<N> make_indexer(const Shape& shape, const std::array<const i64*, N>& strides) {
  Indexer<N> ix;
  int r = 0;
  for (int d = 0; d < shape.rank(); ++d) {
    if (shape[d] == 1) continue;
    if (r > 0) {
      bool merge = true;
      for (int k = 0; k < N; ++k) merge = merge && ix.stride[k][r - 1] == strides[k][d] * shape[d];
      if (merge) {
        ix.size[r - 1] *= shape[d];
        for (int k = 0; k < N; ++k) ix.stride[k][r - 1] = strides[k][d];
        continue;
      }
    }
    ix.size[r] = shape[d];
    for (int k = 0; k < N; ++k) ix.stride[k][r] = strides[k][d];
    ++r;
  }
  ix.rank = r;
  ix.small = shape.numel() < (i64{1} << 32);
  return ix;
}

template <int N>
Indexer<N> make_indexer(const Shape& shape, const std::array<Shape, N>& strides) {
  std::array<const i64*, N> p{};
  for (int k = 0; k < N; ++k) p[k] = strides[k].begin();
  return make_indexer<N>(shape, p);
}

/// Strides of `t` broadcast (NumPy rules) to `out`: 0 on new and extent-1 dims.
inline Shape broadcast_strides(const Tensor& t, const Shape& out) {
  Shape s;
  const int shift = out.rank() - t.rank();
  for (int d = 0; d < out.rank(); ++d) {
    const int td = d - shift;
    s.push_back(td < 0 || t.shape()[td] == 1 ? 0 : t.strides()[td]);
  }
  return s;
}

/// Lines along one axis: line l of operand k starts at the offset the indexer gives for l (over the
/// other dims) and steps by step[k] elements.
template <int N>
struct Lines {
  Indexer<N> ix;
  i64 count = 0, len = 0;
  i64 step[N] = {};
};

/// Lines along `axis` of tensors that share every other extent (the axis extent is ts[0]'s).
template <int N>
Lines<N> make_lines(const std::array<const Tensor*, N>& ts, int axis) {
  Lines<N> L;
  const Shape outer = drop_dim(ts[0]->shape(), axis);
  std::array<Shape, N> st;
  for (int k = 0; k < N; ++k) {
    st[k] = drop_dim(ts[k]->strides(), axis);
    L.step[k] = ts[k]->strides()[axis];
  }
  L.ix = make_indexer<N>(outer, st);
  L.count = outer.numel();
  L.len = ts[0]->shape()[axis];
  return L;
}

/// Rounds v to what a store in dtype dt and a reload would give.
__device__ __forceinline__ float round_to(float v, int dt) {
  if (dt == kF16) return __half2float(__float2half_rn(v));
  if (dt == kBF16) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

// ---- launch helpers ---------------------------------------------------------------------------------

inline constexpr int kThreads = 256;

/// Blocks for a grid-stride loop over n items.
inline unsigned blocks_for(i64 n, int threads = kThreads) {
  const i64 b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}

/// Raises the dynamic shared memory limit of `kernel` when a launch needs more than the default:
/// 48 KiB for static and dynamic together, so the kernel's static shared memory counts too (topk's
/// 512 bytes made some lengths just under 48 KiB of dynamic memory fail to launch).
/// The static shared memory of `kernel`, asked of the runtime once per kernel (launches of 32-48
/// KiB, e.g. row norms of wide rows, would otherwise make a driver query each).
inline std::size_t static_smem(const void* kernel) {
  static std::mutex mutex;
  static std::unordered_map<const void*, std::size_t> sizes;
  std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = sizes.find(kernel); it != sizes.end()) return it->second;
  cudaFuncAttributes attributes{};
  check_cuda(cudaFuncGetAttributes(&attributes, kernel), "cudaFuncGetAttributes");
  return sizes[kernel] = attributes.sharedSizeBytes;
}

/// Lets `kernel` launch with `bytes` of dynamic shared memory on the current device. The limit is
/// per kernel and device for the whole process, so it is only ever raised: lowering it for a small
/// launch would fail a larger launch of another thread, or a captured graph's replay.
template <typename K>
void allow_smem(K* kernel, std::size_t bytes) {
  if (bytes <= 32 * 1024) return;  // no kernel here has 16 KiB of static shared memory
  const auto* fn = reinterpret_cast<const void*>(kernel);
  if (bytes + static_smem(fn) <= 48 * 1024) return;
  static std::mutex mutex;
  static std::unordered_map<const void*, std::array<std::size_t, 64>> raised;  // per kernel, per ordinal
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mutex);
  std::size_t& limit = raised[fn][static_cast<std::size_t>(device) % 64];
  if (bytes <= limit) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
             "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  limit = bytes;
}

/// The most dynamic shared memory one block may use on the current device.
inline std::size_t max_smem_per_block() {
  int dev = 0, v = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute");
  return static_cast<std::size_t>(v);
}

// ---- device: reductions -------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ unsigned long long warp_sum(unsigned long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Sum over the block, returned to every thread. `sh` holds >= 32 values of T; blockDim.x must be a
/// multiple of 32. Contains __syncthreads(): call from every thread.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : T(0);
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : -INFINITY;
  return warp_max(v);
}

/// Threads for a block that walks `n` elements: a multiple of 32 in [32, max_threads].
inline int threads_for_row(i64 n, int per_thread, int max_threads) {
  i64 t = (n + per_thread - 1) / per_thread;
  t = (t + 31) / 32 * 32;
  return static_cast<int>(t < 32 ? 32 : (t > max_threads ? max_threads : t));
}

// ---- launches, scratch memory and index validation ---------------------------------------------------

/// What every host wrapper needs: the runtime, its device made current for the scope, its stream.
struct Launch {
  CudaRuntime& rt;
  DeviceGuard guard;
  cudaStream_t stream;
  Launch(const CudaContext& ctx, const char* op) : rt(runtime_checked(ctx, op)), guard(rt.ordinal()), stream(rt.stream()) {}

  /// Launches `fn`, a kernel that keeps the contract of kernels/cuda/pdl.cuh, on the stream: with
  /// programmatic dependent launch where the runtime enables it. Throws Error(backend) naming
  /// `what` when the launch fails.
  template <typename... P, typename... A>
  void kernel(const char* what, void (*fn)(P...), dim3 grid, dim3 block, std::size_t smem, A&&... args) {
    check_cuda(pdl::launch(rt.programmatic_launch(), fn, grid, block, smem, stream, std::forward<A>(args)...), what);
  }

 private:
  static CudaRuntime& runtime_checked(const CudaContext& ctx, const char* op) {
    ENCORE_CU_CHECK(ctx.runtime != nullptr, invalid_argument, op, ": called without a CudaRuntime");
    return *ctx.runtime;
  }
};

/// Device-side record of the first out-of-range index seen by a kernel: {flag, value, position}.
struct BadIndex {
  unsigned long long* slot = nullptr;  // null: not recorded (validation off)
  __device__ __forceinline__ void report(i64 value, i64 pos) const {
    if (slot != nullptr && atomicCAS(slot, 0ull, 1ull) == 0ull) {
      slot[1] = static_cast<unsigned long long>(value);
      slot[2] = static_cast<unsigned long long>(pos);
    }
  }
};

/// Validation of indices read on the device (embedding ids, gather/scatter indices). Kernels never
/// read out of bounds: for a bad index they write zeros (or skip the add) and report it; check()
/// then copies the record back, synchronises the stream and throws Error(invalid_argument) like the
/// CPU backend. Trade-off: one stream synchronisation per call (these ops are rare: the embedding at
/// the start of a step, beam reorders, MoE combines). It is skipped while the stream is captured
/// into a CUDA graph (synchronising is illegal there) and when the environment sets
/// ENCORE_CUDA_UNCHECKED_INDICES=1; bad indices then silently give zeros.
class IndexCheck {
 public:
  explicit IndexCheck(Launch& l);
  BadIndex device() const { return {buf_.as<unsigned long long>()}; }
  /// Throws "<op>: <what> <value> at position <pos> <tail>" when a bad index was reported.
  void check(const char* op, const char* what, const std::string& tail);

 private:
  Launch& l_;
  DeviceBuffer buf_;
};

}  // namespace encore::cuda::kc
