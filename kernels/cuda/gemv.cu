// Weight-streaming GEMV for decode-sized linears (M <= 16 rows of x), where cuBLASLt's GEMM tiles
// leave the H200 far from its memory bandwidth. Each weight element is read once, in 16-byte
// vectors, for all rows of x; x is staged in shared memory as f32; sums are f32 and y is rounded
// once, after the bias and the activation.
//
// Two kernels, by which dimension of the weight is contiguous:
// - N contiguous (Conv1D, in_out [K, N]): a CTA owns a tile of 8 column vectors (64 f16 or 32 f32
//   columns: a 128-byte run of each weight row) and a split of K; its 32 thread rows take every
//   32nd row of the split. Thread-row partials are summed in shared memory, in row order.
// - K contiguous (nn.Linear, out_in [N, K]): a warp owns 1, 2 or 4 columns (more for more rows of
//   x, so that each x value read from shared memory serves several columns); its lanes take every
//   32nd vector of the split's K range and a butterfly reduce-scatter sums them; without a split of
//   K the lanes holding the sums write y directly. CTAs loop over column tiles (grid-stride) so that
//   x is staged once per CTA, not once per tile, and each tile's first loads overlap the previous
//   tile's sums.
// Splits of K across CTAs (blockIdx.y) give small weights enough CTAs to keep HBM busy. On sm_90 the
// N-contiguous kernel keeps up to 8 splits of a tile in one thread-block cluster: each CTA leaves its
// partial sums in shared memory and, after a cluster barrier, sums a share of the tile's outputs
// over the splits' shared memory (DSMEM) in split order. Otherwise partials of a split go to a
// workspace; the last CTA to finish a column tile (an atomic counter) adds them in split order and
// applies the epilogue, and resets the counter for the next launch (stream order keeps launches
// apart). Either way results are bitwise reproducible. The cluster path saves the global round
// trips (partials out, fence, atomic, partials back in) that made a decode-sized GEMV ~2 µs slower
// than cuBLASLt.
//
// Instantiations: element type x row tile MT in {1, 2, 4, 8, 16} (M rounded up) per kernel; the
// rest (strides, bias type, activation, alignment) is run time.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cuda/gemm_activation.cuh"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/gemm_kernels.h"
#include "kernels/cuda/pdl.cuh"

namespace encore::cuda::kernels {
namespace {

using i64 = std::int64_t;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// N-contiguous kernel: column vectors per tile (threads across a row) and thread rows.
constexpr int kColVecs = 8;
constexpr int kThreadRows = kThreads / kColVecs;
// Largest split of K (in rows per thread row) of the N-contiguous kernel, and the shared memory
// (floats) the K-contiguous kernel may give to x.
constexpr int kMaxRowsPerThread = 16;
// Most splits of K one cluster holds (the portable cluster size).
constexpr int kMaxClusterSplits = 8;
constexpr int kMaxXFloats = 12288;  // 48 KiB

template <typename T> struct Elem;
template <> struct Elem<float> {
  using Bits = unsigned int;
  static constexpr int kVec = 4;
};
template <> struct Elem<__half> {
  using Bits = unsigned short;
  static constexpr int kVec = 8;
};
template <> struct Elem<__nv_bfloat16> {
  using Bits = unsigned short;
  static constexpr int kVec = 8;
};

// Columns a warp of the K-contiguous kernel owns for a row tile MT: enough that x reads from shared
// memory (MT floats per weight element and column) stay under the weight's HBM time.
__host__ __device__ constexpr int cols_per_warp(int MT) { return MT >= 16 ? 4 : (MT >= 4 ? 2 : 1); }

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ float load_bias(const void* b, FloatType t, i64 i) {
  switch (t) {
    case FloatType::f16: return __half2float(static_cast<const __half*>(b)[i]);
    case FloatType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(b)[i]);
    default: return static_cast<const float*>(b)[i];
  }
}

// 16 bytes of weight: the kVec elements from p[i] on, element j in the j-th lowest bytes (as a
// uint4 load would give them). Elements j >= valid read as 0 (nothing is read when valid <= 0).
// The vector load needs p + i 16-byte aligned, which `vec_ok` promises for every full vector.
template <typename T>
__device__ __forceinline__ uint4 load_vec(const T* p, i64 i, int valid, bool vec_ok) {
  constexpr int V = Elem<T>::kVec;
  if (vec_ok && valid >= V) return __ldg(reinterpret_cast<const uint4*>(p + i));
  using Bits = typename Elem<T>::Bits;
  const Bits* b = reinterpret_cast<const Bits*>(p + i);
  unsigned w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
  for (int j = 0; j < V; ++j) {
    if (j < valid) {
      const unsigned v = __ldg(b + j);
      if constexpr (V == 8) w[j / 2] |= v << (16 * (j % 2));
      else w[j] = v;
    }
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

template <typename T>
__device__ __forceinline__ void to_floats(const uint4& u, float (&f)[Elem<T>::kVec]) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if constexpr (std::is_same_v<T, float>) {
      f[j] = __uint_as_float(w[j]);
    } else if constexpr (std::is_same_v<T, __half>) {  // the lower half is the lower address
      f[2 * j] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[j] & 0xffffu)));
      f[2 * j + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[j] >> 16)));
    } else {  // bf16 is the upper half of an f32
      f[2 * j] = __uint_as_float(w[j] << 16);
      f[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
  }
}

struct Params {
  const void* x = nullptr;
  i64 sxr = 0, sxc = 0;
  const void* w = nullptr;
  i64 ldw = 0;
  const void* bias = nullptr;
  FloatType bias_type = FloatType::f32;
  i64 bias_stride = 0;
  void* y = nullptr;
  float* ws = nullptr;           // [S, M, N] partials (S > 1)
  unsigned* counters = nullptr;  // [tiles] CTAs done per column tile (S > 1), zero between launches
  int M = 0;
  i64 N = 0, K = 0;
  i64 KC = 0;     // K per split: split s covers [s KC, min(K, (s + 1) KC))
  int S = 1;      // splits (= gridDim.y)
  int tiles = 0;  // column tiles
  int R = 0;      // per split: rows per thread row (N contiguous), vectors per lane (K contiguous)
  Act act = Act::none;
  bool vec_ok = false;   // weight base and row stride are 16-byte aligned
  bool cluster = false;  // the S splits of a tile are one cluster (N-contiguous kernel, S > 1)
};

// One value of a tile: the final y (one split) or this split's partial.
template <typename T>
__device__ __forceinline__ void emit(const Params& p, int m, i64 n, float v) {
  if (p.S == 1) {
    if (p.bias != nullptr) v += load_bias(p.bias, p.bias_type, n * p.bias_stride);
    store(static_cast<T*>(p.y) + static_cast<i64>(m) * p.N + n, activate(v, p.act));
  } else {
    __stcg(p.ws + (static_cast<i64>(blockIdx.y) * p.M + m) * p.N + n, v);
  }
}

// Sum of the partials s = g, g + step, ... < S of output (m, n), in that order; loads go out eight
// at a time (they are independent; only the adds are ordered).
__device__ __forceinline__ float sum_partials(const Params& p, int m, i64 n, int g, int step) {
  const float* src = p.ws + static_cast<i64>(m) * p.N + n;
  const i64 split_stride = static_cast<i64>(p.M) * p.N;
  float v = 0.0f;
  int s = g;
  for (; s + 7 * step < p.S; s += 8 * step) {
    float t[8];
#pragma unroll
    for (int q = 0; q < 8; ++q) t[q] = __ldcg(src + (s + q * step) * split_stride);
#pragma unroll
    for (int q = 0; q < 8; ++q) v += t[q];
  }
  for (; s < p.S; s += step) v += __ldcg(src + s * split_stride);
  return v;
}

// After every emit of a tile (columns [n0, n0 + width)), with S > 1: the last CTA to get here sums
// the S partials in split order and writes y. Every thread of the CTA calls it. When the tile has
// few outputs, G threads share one: thread g sums splits g, g + G, ..., then one adds the G sums.
template <typename T>
__device__ void finish_splits(const Params& p, int tile, i64 n0, int width, unsigned* s_last, float* part) {
  if (p.S == 1) return;
  __threadfence();  // this CTA's partials are visible device-wide before it is counted
  __syncthreads();
  if (threadIdx.x == 0) *s_last = atomicAdd(p.counters + tile, 1u) == static_cast<unsigned>(p.S - 1) ? 1u : 0u;
  __syncthreads();
  if (*s_last == 0u) return;
  __threadfence();
  const int outs = p.M * width;
  const int G = std::max(1, std::min(p.S, kThreads / outs));  // uniform
  const auto finish = [&](int o, float v) {
    const int m = o / width;
    const i64 n = n0 + (o - m * width);
    if (p.bias != nullptr) v += load_bias(p.bias, p.bias_type, n * p.bias_stride);
    store(static_cast<T*>(p.y) + static_cast<i64>(m) * p.N + n, activate(v, p.act));
  };
  if (G == 1) {
    for (int o = threadIdx.x; o < outs; o += kThreads) {
      const int m = o / width;
      if (n0 + (o - m * width) < p.N) finish(o, sum_partials(p, m, n0 + (o - m * width), 0, 1));
    }
  } else {  // G * outs <= kThreads: one pass
    const int o = threadIdx.x % outs, g = threadIdx.x / outs, m = o / width;
    const i64 n = n0 + (o - m * width);
    if (g < G && n < p.N) part[g * outs + o] = sum_partials(p, m, n, g, G);
    __syncthreads();
    if (g == 0 && n < p.N) {
      float v = part[o];
      for (int q = 1; q < G; ++q) v += part[q * outs + o];
      finish(o, v);
    }
  }
  if (threadIdx.x == 0) p.counters[tile] = 0u;  // the next launch starts after this one ends
}

// With p.cluster: `mine` holds this CTA's partials [M][width] of the tile at n0. After the barrier,
// CTA (split) r sums the r-th share of the tile's outputs over all splits in split order and writes
// y; the second barrier keeps every CTA's shared memory alive until the others have read it.
template <typename T>
__device__ void finish_cluster(const Params& p, i64 n0, int width, const float* mine) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int outs = p.M * width, share = (outs + p.S - 1) / p.S;
  const int o0 = static_cast<int>(cluster.block_rank()) * share, o1 = std::min(outs, o0 + share);
  for (int o = o0 + static_cast<int>(threadIdx.x); o < o1; o += kThreads) {
    const int m = o / width;
    const i64 n = n0 + (o - m * width);
    if (n >= p.N) continue;
    float v = 0.0f;
    for (int s = 0; s < p.S; ++s) v += cluster.map_shared_rank(mine, static_cast<unsigned>(s))[o];
    if (p.bias != nullptr) v += load_bias(p.bias, p.bias_type, n * p.bias_stride);
    store(static_cast<T*>(p.y) + static_cast<i64>(m) * p.N + n, activate(v, p.act));
  }
  cluster.sync();
#endif
}

// ---- N contiguous: w(k, n) at w[k * ldw + n] ----------------------------------------------------------

template <typename T, int MT>
__global__ void __launch_bounds__(kThreads) gemv_n_kernel(const Params p) {
  constexpr int V = Elem<T>::kVec;
  constexpr int CW = kColVecs * V;        // columns per tile
  constexpr int U = MT >= 16 ? 2 : 4;      // rows per load batch (in flight while the last is used)
  constexpr int MC = MT < kThreads / CW ? MT : kThreads / CW;  // rows of x per reduction round
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);  // x [kc][MT], then the reduction [MC][32][CW]
  __shared__ unsigned s_last;
  __shared__ float s_part[kThreads];
  __shared__ float s_tile[MT * CW];  // this split's partials of the tile (cluster reduction)

  const int tid = threadIdx.x, cg = tid % kColVecs, kr = tid / kColVecs;
  const int tile = blockIdx.x;
  const i64 n0 = static_cast<i64>(tile) * CW, n = n0 + cg * V;
  const int valid = static_cast<int>(std::min<i64>(V, p.N - n));  // <= 0 past the last column
  const i64 kbeg = static_cast<i64>(blockIdx.y) * p.KC, kend = std::min(p.K, kbeg + p.KC);
  const int kc = p.R * kThreadRows;  // == KC
  const T* w = static_cast<const T*>(p.w);

  // The weight rows of this CTA (one 128-byte run each) head for L2 while the previous kernel ends.
  for (i64 k = kbeg + tid; k < kend; k += kThreads) pdl::prefetch_l2(w + k * p.ldw + n0);
  pdl::begin();

  // Row i of this thread is k = kbeg + kr + 32 i (i < R); rows past kend read as 0.
  const auto load_rows = [&](int i0, uint4 (&buf)[U]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const i64 k = kbeg + kr + static_cast<i64>(kThreadRows) * (i0 + u);
      buf[u] = i0 + u < p.R && k < kend ? load_vec(w, k * p.ldw + n, valid, p.vec_ok) : make_uint4(0u, 0u, 0u, 0u);
    }
  };

  uint4 cur[U];
  load_rows(0, cur);  // in flight while x is staged

  // x[:, kbeg:kbeg+kc) as f32, xs[kk * MT + m]; zeros past M and K so that padded rows add 0.
  const T* x = static_cast<const T*>(p.x);
  for (int i = tid; i < MT * kc; i += kThreads) {
    const int m = i / kc, kk = i - m * kc;
    const i64 k = kbeg + kk;
    smem[kk * MT + m] = m < p.M && k < kend ? to_f(x[m * p.sxr + k * p.sxc]) : 0.0f;
  }
  __syncthreads();

  float acc[MT][V];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int j = 0; j < V; ++j) acc[m][j] = 0.0f;

  for (int i0 = 0; i0 < p.R; i0 += U) {
    uint4 nxt[U];
    load_rows(i0 + U, nxt);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (i0 + u >= p.R) break;
      const int kk = kr + kThreadRows * (i0 + u);
      float wf[V];
      to_floats<T>(cur[u], wf);
      float xv[MT];
      if constexpr (MT % 4 == 0) {
#pragma unroll
        for (int q = 0; q < MT / 4; ++q) {
          const float4 t = reinterpret_cast<const float4*>(smem + kk * MT)[q];
          xv[4 * q] = t.x, xv[4 * q + 1] = t.y, xv[4 * q + 2] = t.z, xv[4 * q + 3] = t.w;
        }
      } else {
#pragma unroll
        for (int m = 0; m < MT; ++m) xv[m] = smem[kk * MT + m];
      }
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int j = 0; j < V; ++j) acc[m][j] = fmaf(xv[m], wf[j], acc[m][j]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) cur[u] = nxt[u];
  }

  // Sum the 32 thread rows per column, MC rows of x per round (the x area is free now).
  __syncthreads();
#pragma unroll
  for (int m0 = 0; m0 < MT; m0 += MC) {
    if (m0 >= p.M) break;
#pragma unroll
    for (int mm = 0; mm < MC; ++mm) {
      float4* dst = reinterpret_cast<float4*>(smem + (mm * kThreadRows + kr) * CW + cg * V);
#pragma unroll
      for (int q = 0; q < V / 4; ++q)
        dst[q] = make_float4(acc[m0 + mm][4 * q], acc[m0 + mm][4 * q + 1], acc[m0 + mm][4 * q + 2],
                             acc[m0 + mm][4 * q + 3]);
    }
    __syncthreads();
    for (int o = tid; o < MC * CW; o += kThreads) {
      const int mm = o / CW, c = o - mm * CW;
      float v = 0.0f;
#pragma unroll 8
      for (int r = 0; r < kThreadRows; ++r) v += smem[(mm * kThreadRows + r) * CW + c];
      if (m0 + mm < p.M && n0 + c < p.N) {
        if (p.cluster) s_tile[(m0 + mm) * CW + c] = v;
        else emit<T>(p, m0 + mm, n0 + c, v);
      }
    }
    __syncthreads();
  }
  if (p.cluster) finish_cluster<T>(p, n0, CW, s_tile);
  else finish_splits<T>(p, tile, n0, CW, &s_last, s_part);
}

// ---- K contiguous: w(k, n) at w[n * ldw + k] ----------------------------------------------------------

// Sums v over the 32 lanes, leaving each sum in some lanes: for C >= 32 lane l holds sums
// l * C / 32 + i in v[i] (i < C / 32); for C < 32 it holds sum l / (32 / C) in v[0]. Each step
// halves the values a lane keeps while they are more than one (C - 1 shuffles in all, not 5 C).
template <int C, int O, int NV>
__device__ __forceinline__ void butterfly(float (&v)[NV], int lane) {
  if constexpr (O >= 1) {
    if constexpr (C > 1) {
      constexpr int H = C / 2;
      const bool upper = (lane & O) != 0;
#pragma unroll
      for (int i = 0; i < H; ++i) {
        const float send = upper ? v[i] : v[i + H];
        const float keep = upper ? v[i + H] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
      }
      butterfly<H, O / 2>(v, lane);
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], O);
      butterfly<1, O / 2>(v, lane);
    }
  }
}

template <typename T, int MT>
__global__ void __launch_bounds__(kThreads) gemv_k_kernel(const Params p) {
  constexpr int V = Elem<T>::kVec;
  constexpr int H = V / 4;                  // float4s per vector
  constexpr int CPW = cols_per_warp(MT);  // columns per warp
  constexpr int CW = kWarps * CPW;          // columns per tile
  constexpr int NV = MT * CPW;              // sums per warp
  constexpr int U = MT <= 2 ? 4 : 2;         // vector positions per load batch (registers allowing)
  extern __shared__ float4 smem4[];
  __shared__ unsigned s_last;
  __shared__ float s_part[kThreads];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nvec = p.R * 32;  // vectors of one row in the split (KC = nvec * V)
  const i64 kbeg = static_cast<i64>(blockIdx.y) * p.KC, kend = std::min(p.K, kbeg + p.KC);
  // x as f32, vector-interleaved so that lanes reading consecutive vectors hit distinct banks:
  // float4 (m, h, j) holds elements 4h..4h+3 of vector j of row m. Then the warp sums [kWarps][NV].
  float4* xs = smem4;
  float* red = reinterpret_cast<float*>(smem4 + MT * H * nvec);
  const T* w = static_cast<const T*>(p.w);

  {  // The first tile's weight rows head for L2 while the previous kernel ends (later tiles overlap
     // this CTA's own work; all of them could overflow L2 for an LM head).
    const i64 n_first = static_cast<i64>(blockIdx.x) * CW;
    const i64 lines = ((kend - kbeg) * static_cast<i64>(sizeof(T)) + 127) / 128;
    for (i64 i = tid; i < CW * lines; i += kThreads) {
      const i64 n = n_first + i / lines;
      if (n < p.N) pdl::prefetch_l2(reinterpret_cast<const char*>(w + n * p.ldw + kbeg) + (i % lines) * 128);
    }
  }
  pdl::begin();

  // Position j of this lane is vector lane + 32 j of the split (j < R); columns past N read as 0.
  const auto load_batch = [&](int tile, int j0, uint4 (&buf)[U][CPW]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const i64 k = kbeg + static_cast<i64>(lane + 32 * (j0 + u)) * V;
      const int valid = j0 + u < p.R ? static_cast<int>(std::min<i64>(V, kend - k)) : 0;
#pragma unroll
      for (int c = 0; c < CPW; ++c) {
        const i64 n = static_cast<i64>(tile) * CW + warp * CPW + c;
        buf[u][c] = n < p.N && valid > 0 ? load_vec(w, n * p.ldw + k, valid, p.vec_ok) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
  };

  int tile = blockIdx.x;
  uint4 cur[U][CPW];
  load_batch(tile, 0, cur);  // in flight while x is staged (gridDim.x <= tiles)

  const T* x = static_cast<const T*>(p.x);
  const int kc = nvec * V;
  float* xf = reinterpret_cast<float*>(xs);
  for (int i = tid; i < MT * kc; i += kThreads) {
    const int m = i / kc, kk = i - m * kc;
    const int j = kk / V, e = kk - j * V;
    const i64 k = kbeg + kk;
    xf[((m * H + e / 4) * nvec + j) * 4 + (e & 3)] = m < p.M && k < kend ? to_f(x[m * p.sxr + k * p.sxc]) : 0.0f;
  }
  __syncthreads();

  for (; tile < p.tiles; tile += gridDim.x) {
    float acc[NV];
#pragma unroll
    for (int i = 0; i < NV; ++i) acc[i] = 0.0f;

    for (int j0 = 0; j0 < p.R; j0 += U) {
      uint4 nxt[U][CPW];
      load_batch(tile, j0 + U, nxt);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (j0 + u >= p.R) break;
        const int jv = lane + 32 * (j0 + u);
        float wf[CPW][V];
#pragma unroll
        for (int c = 0; c < CPW; ++c) to_floats<T>(cur[u][c], wf[c]);
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int h = 0; h < H; ++h) {
            const float4 t = xs[(m * H + h) * nvec + jv];
#pragma unroll
            for (int c = 0; c < CPW; ++c) {
              float a = acc[m * CPW + c];
              a = fmaf(t.x, wf[c][4 * h], a);
              a = fmaf(t.y, wf[c][4 * h + 1], a);
              a = fmaf(t.z, wf[c][4 * h + 2], a);
              a = fmaf(t.w, wf[c][4 * h + 3], a);
              acc[m * CPW + c] = a;
            }
          }
      }
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int c = 0; c < CPW; ++c) cur[u][c] = nxt[u][c];
    }
    // The next tile's first loads overlap this tile's reduction.
    if (tile + static_cast<int>(gridDim.x) < p.tiles) load_batch(tile + gridDim.x, 0, cur);

    butterfly<NV, 16>(acc, lane);
    const i64 n0 = static_cast<i64>(tile) * CW;
    if (p.S == 1) {  // no partials: the lanes holding sums write y, and warps run on independently
      constexpr int per_lane = NV >= 32 ? NV / 32 : 1, lanes_per_sum = NV >= 32 ? 1 : 32 / NV;
      if (lane % lanes_per_sum == 0) {
#pragma unroll
        for (int i = 0; i < per_lane; ++i) {
          const int idx = (lane / lanes_per_sum) * per_lane + i, m = idx / CPW;
          const i64 n = n0 + warp * CPW + (idx - m * CPW);
          if (m < p.M && n < p.N) emit<T>(p, m, n, acc[i]);
        }
      }
      continue;
    }
    __syncthreads();  // the previous tile's readers of `red` are done
    if constexpr (NV >= 32) {
#pragma unroll
      for (int i = 0; i < NV / 32; ++i) red[warp * NV + lane * (NV / 32) + i] = acc[i];
    } else {
      if (lane % (32 / NV) == 0) red[warp * NV + lane / (32 / NV)] = acc[0];
    }
    __syncthreads();
    for (int o = tid; o < p.M * CW; o += kThreads) {
      const int m = o / CW, c = o - m * CW;
      if (n0 + c < p.N) emit<T>(p, m, n0 + c, red[(c / CPW) * NV + m * CPW + (c % CPW)]);
    }
    finish_splits<T>(p, tile, n0, CW, &s_last, s_part);
  }
}

// ---- host -----------------------------------------------------------------------------------------

using KernelFn = void (*)(Params);

template <typename T>
KernelFn pick(bool k_contiguous, int MT) {
  switch (MT) {
    case 1: return k_contiguous ? gemv_k_kernel<T, 1> : gemv_n_kernel<T, 1>;
    case 2: return k_contiguous ? gemv_k_kernel<T, 2> : gemv_n_kernel<T, 2>;
    case 4: return k_contiguous ? gemv_k_kernel<T, 4> : gemv_n_kernel<T, 4>;
    case 8: return k_contiguous ? gemv_k_kernel<T, 8> : gemv_n_kernel<T, 8>;
    default: return k_contiguous ? gemv_k_kernel<T, 16> : gemv_n_kernel<T, 16>;
  }
}

int row_tile(i64 M) { return M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : M <= 8 ? 8 : 16; }

i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }

/// Switches this thread to relaxed capture mode for the scope: the first call for a shape may come
/// while the stream is being captured, and allocating is otherwise refused then.
struct RelaxedCapture {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode); }
  ~RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode); }
};

// Split workspace and tile counters per (device, stream). A captured graph keeps the addresses it
// saw, so a grown buffer never frees its predecessor (and old counters stay zero between launches).
struct StreamState {
  unsigned* counters = nullptr;
  std::size_t n_counters = 0;
  float* ws = nullptr;
  std::size_t ws_floats = 0;
  std::vector<void*> retired;
};

std::mutex g_state_mutex;
std::map<std::pair<int, cudaStream_t>, StreamState> g_states;

cudaError_t split_buffers(int ordinal, cudaStream_t stream, std::size_t counters, std::size_t ws_floats,
                          unsigned** counters_out, float** ws_out) {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  StreamState& s = g_states[{ordinal, stream}];
  if (s.n_counters < counters || s.ws_floats < ws_floats) {
    RelaxedCapture relaxed;
    if (s.n_counters < counters) {
      const std::size_t n = std::max({counters, 2 * s.n_counters, std::size_t{16384}});
      unsigned* fresh = nullptr;
      cudaError_t e = kc::device_malloc(&fresh, n * sizeof(unsigned), stream);
      if (e != cudaSuccess) return e;
      // Zeroed on a private stream and waited for: legal while `stream` is being captured.
      cudaStream_t init = nullptr;
      e = cudaStreamCreateWithFlags(&init, cudaStreamNonBlocking);
      if (e == cudaSuccess) e = cudaMemsetAsync(fresh, 0, n * sizeof(unsigned), init);
      if (e == cudaSuccess) e = cudaStreamSynchronize(init);
      if (init != nullptr) cudaStreamDestroy(init);
      if (e != cudaSuccess) {
        cudaFree(fresh);
        return e;
      }
      if (s.counters != nullptr) s.retired.push_back(s.counters);
      s.counters = fresh, s.n_counters = n;
    }
    if (s.ws_floats < ws_floats) {
      const std::size_t n = std::max({ws_floats, 2 * s.ws_floats, std::size_t{1} << 20});
      float* fresh = nullptr;
      const cudaError_t e = kc::device_malloc(&fresh, n * sizeof(float), stream);
      if (e != cudaSuccess) return e;
      if (s.ws != nullptr) s.retired.push_back(s.ws);
      s.ws = fresh, s.ws_floats = n;
    }
  }
  *counters_out = s.counters;
  *ws_out = s.ws;
  return cudaSuccess;
}

// Raises the dynamic shared memory limit of `fn` on device `ordinal` once, to the most a launch
// asks for. The default limit is 48 KiB with the static shared memory (~1 KiB) included.
cudaError_t allow_smem(int ordinal, KernelFn fn, std::size_t bytes) {
  if (bytes <= 40 * 1024) return cudaSuccess;
  static std::mutex mu;
  static std::set<std::pair<int, KernelFn>> done;
  std::lock_guard<std::mutex> lock(mu);
  if (done.count({ordinal, fn}) != 0) return cudaSuccess;
  RelaxedCapture relaxed;
  const cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(sizeof(float) * (kMaxXFloats + kWarps * 64)));
  if (e == cudaSuccess) done.insert({ordinal, fn});
  return e;
}

template <typename T>
cudaError_t launch_typed(const GemvArgs& a, int ordinal, int multiprocessors, cudaStream_t stream) {
  constexpr int V = Elem<T>::kVec;
  const int MT = row_tile(a.M);
  const i64 target = 2 * static_cast<i64>(std::max(multiprocessors, 1));  // CTAs that keep HBM busy
  Params p;
  p.x = a.x, p.sxr = a.x_row_stride, p.sxc = a.x_col_stride;
  p.w = a.w, p.ldw = a.ldw;
  p.bias = a.bias, p.bias_type = a.bias_type, p.bias_stride = a.bias_stride;
  p.y = a.y;
  p.M = static_cast<int>(a.M), p.N = a.N, p.K = a.K;
  p.act = a.act;
  const auto addr = reinterpret_cast<std::uintptr_t>(a.w);
  p.vec_ok = addr % 16 == 0 && (a.ldw * static_cast<i64>(sizeof(T))) % 16 == 0;

  i64 gx = 0;
  std::size_t smem = 0;
  if (!a.k_contiguous) {
    // The largest per-thread share of K that still gives `target` CTAs (at least one row each);
    // with clusters, no more splits than a cluster holds when K allows it.
    const i64 tiles = ceil_div(a.N, kColVecs * V);
    const i64 r_floor = a.clusters ? std::clamp<i64>(ceil_div(a.K, static_cast<i64>(kThreadRows) * kMaxClusterSplits), 1,
                                                     kMaxRowsPerThread)
                                   : 1;
    int R = kMaxRowsPerThread;
    while (R > r_floor && tiles * ceil_div(a.K, static_cast<i64>(kThreadRows) * R) < target) --R;
    p.R = R;
    p.KC = static_cast<i64>(kThreadRows) * R;
    p.tiles = static_cast<int>(tiles);
    gx = tiles;
    const int MC = std::min(MT, kThreads / (kColVecs * V));
    smem = sizeof(float) * static_cast<std::size_t>(std::max<i64>(MT * p.KC, MC * kThreadRows * kColVecs * V));
  } else {
    const int cw = kWarps * cols_per_warp(MT);
    const i64 tiles = ceil_div(a.N, cw);
    const i64 positions = ceil_div(a.K, 32 * V);  // warp-wide vector steps along K
    const i64 r_max = std::max<i64>(1, kMaxXFloats / (MT * 32 * V));
    i64 R = std::min(positions, r_max);
    if (tiles < target) R = std::min(R, std::max<i64>(1, ceil_div(positions, ceil_div(target, tiles))));
    p.R = static_cast<int>(R);
    p.KC = 32 * V * R;
    p.tiles = static_cast<int>(tiles);
    // Up to 2 * target CTAs, each looping over column tiles with x staged once.
    gx = std::min<i64>(tiles, std::max<i64>(1, ceil_div(2 * target, ceil_div(a.K, p.KC))));
    smem = sizeof(float) * static_cast<std::size_t>(MT * p.KC + kWarps * MT * cols_per_warp(MT));
  }
  p.S = static_cast<int>(ceil_div(a.K, p.KC));
  if (p.S > 65535 || gx > 0x7fffffff || p.tiles <= 0) return cudaErrorInvalidValue;
  p.cluster = a.clusters && !a.k_contiguous && p.S > 1 && p.S <= kMaxClusterSplits;
  if (p.S > 1 && !p.cluster) {
    const cudaError_t e = split_buffers(ordinal, stream, static_cast<std::size_t>(p.tiles),
                                        static_cast<std::size_t>(p.S) * static_cast<std::size_t>(a.M * a.N),
                                        &p.counters, &p.ws);
    if (e != cudaSuccess) return e;
  }
  const KernelFn fn = pick<T>(a.k_contiguous, MT);
  const cudaError_t e = allow_smem(ordinal, fn, smem);
  if (e != cudaSuccess) return e;
  pdl::Config c(a.pdl, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(p.S)), dim3(kThreads), smem, stream);
  if (p.cluster) c.cluster(dim3(1, static_cast<unsigned>(p.S), 1));
  return cudaLaunchKernelEx(&c.cfg, fn, p);
}

}  // namespace

cudaError_t launch_gemv(const GemvArgs& args, int ordinal, int multiprocessors, cudaStream_t stream) {
  if (args.M <= 0 || args.M > kGemvMaxRows || args.N <= 0 || args.K <= 0 || args.x == nullptr ||
      args.w == nullptr || args.y == nullptr)
    return cudaErrorInvalidValue;
  switch (args.type) {
    case FloatType::f32: return launch_typed<float>(args, ordinal, multiprocessors, stream);
    case FloatType::f16: return launch_typed<__half>(args, ordinal, multiprocessors, stream);
    case FloatType::bf16: return launch_typed<__nv_bfloat16>(args, ordinal, multiprocessors, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace encore::cuda::kernels
