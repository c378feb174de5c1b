// The fused decoder step (src/backends/cuda/fused_decoder_step.h): one persistent kernel, one CTA
// per SM, that runs a whole pre-LN decoder stack for one token per row.
//
// Phases (each ends in a grid-wide barrier; row r, D hidden, F MLP, H heads, L layers):
//   embed: h = wte[id] + wpe[pos]                                         (f32 residual stream)
//   per layer: LN1+QKV (q to a buffer, k/v into the paged cache) | self-attention | proj, h += |
//              LN-x+cross-Q | cross-attention | x-proj, h += | LN2+fc+GELU | fc2, h +=
//   LN-f + LM head (per-CTA max / sum-exp / argmax partials) | merge partials, picks, log-probs
// Every GEMV phase splits the output columns evenly over the CTAs. A CTA's columns of a layer's
// projection are contiguous rows of the transposed weight, so its whole slice is one 1-d bulk copy.
// Thread 0 keeps up to kSlots slices in flight in a shared-memory ring (FIFO: slices are consumed
// in the order they are issued), refilled as slices are consumed: the copies of later layers
// overlap the barriers and the attention phases, which is the point of the design. The LM head
// (77 MB for GPT-2, read last) streams straight from global memory instead.
//
// Memory ordering: activations written by one CTA are read by others only after a grid barrier
// (release/acquire through the barrier's atomics); such reads use ld.global.cg (L2, never a stale
// L1 line). The barrier is one 64-bit arrival counter that only grows: every launch makes the same
// number of barriers, so a CTA derives its launch's base from the counter at its start, arrives
// with a release reduction (no round trip) and polls until all CTAs of that barrier are in. It
// needs no reset between launches or CUDA-graph replays.
//
// Latency is what this kernel is about (a step is ~100 dependent phases): every phase issues the
// loads it needs before its first dependent use (layer arguments live in shared memory; biases,
// LayerNorm parameters and residuals are fetched while the inputs are still in flight; attention
// keys are spread over lanes so a CTA issues all of them at once).
#include <climits>

#include "kernels/cuda/fused_decoder_step_internal.h"
#include "kernels/cuda/kernel_common.cuh"
#include "kernels/cuda/mbarrier.cuh"

namespace encore::cuda::fused {
namespace {

using kc::i64;

struct Shared {
  std::uint64_t bar[kSlots];
  RingSpace space;                      // ring: next free offset, bytes held (gaps included)
  unsigned off[kSlots], span[kSlots];   // per slot: offset, bytes it holds (with the gap before it)
  int cols[4][2];                       // this CTA's columns of the 3D-, D-, F- and V-wide outputs
  int issued, freed, total;
  float red[32];
  float lse[kMaxRows], lse_ne[kMaxRows];
  float pv[kWarps * 128];          // attention: per-warp partial outputs (head dim <= 128)
  LayerArgs layers[kMaxLayers];
  float bias[kMaxColumns];                  // this phase's biases of the CTA's columns
  float out[kMaxRows * kMaxColumns];        // this phase's projections of the CTA's columns
  float res[kMaxRows * kMaxColumns];        // this phase's residuals of the CTA's columns
  int table[kMaxRows * kMaxTableBlocks];    // the rows' block tables
  long long kv_at[kMaxRows];                // cache offset of each row's new position (head 0)
  int length[kMaxRows];                     // keys cached per row, the new one included
  float2 stat[kMaxRows];                    // LayerNorm: mean and 1 / std per row
  long long waited;                         // profiling: cycles thread 0 waited for slices this phase
};

// ---- small helpers ---------------------------------------------------------------------------------

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/// Eight 16-bit values packed in a uint4 -> floats.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_f<T>(e[i]);
}

/// CTA b's share of n columns (n * g < 2^31: checked on the host).
__device__ __forceinline__ void col_range(int n, int b, int g, int& c0, int& c1) {
  c0 = n * b / g;
  c1 = n * (b + 1) / g;
}
enum ColumnSet { kQkvCols = 0, kHiddenCols = 1, kFfnCols = 2, kVocabCols = 3 };

__device__ __forceinline__ unsigned long long globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ unsigned long long ld_acquire(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(v) : "l"(p) : "memory");
  return v;
}

/// The grid-wide barrier of one launch (all CTAs co-resident: cooperative launch). Writes before
/// it are visible to ld.cg reads after it.
struct GridBarrier {
  unsigned long long* count;
  unsigned long long base;      // arrivals before this launch
  unsigned long long* trace;    // this CTA's [barrier][kTraceValues], or null
  int index = 0;

  /// Thread 0, before its CTA's first arrival: no CTA can have passed barrier 0 yet, so the count
  /// is within G arrivals of the launch's base, a multiple of G * barriers.
  __device__ void start(int barriers) {
    const unsigned long long per_launch = static_cast<unsigned long long>(gridDim.x) * barriers;
    const unsigned long long now = ld_acquire(count);
    base = now - now % per_launch;
  }

  /// Profiling: the cycle counter at point `what` of the phase that ends at the next barrier.
  __device__ void mark(TraceValue what) const {
    if (trace != nullptr && threadIdx.x == 0) trace[kTraceValues * index + what] = clock64();
  }

  __device__ void sync(long long& waited) {
    __syncthreads();
    if (threadIdx.x == 0) {
      if (trace != nullptr) {
        trace[kTraceValues * index + kWaitedClk] = static_cast<unsigned long long>(waited);
        trace[kTraceValues * index + kArriveClk] = clock64();
        trace[kTraceValues * index + kArriveNs] = globaltimer();
      }
      waited = 0;
      const unsigned long long target = base + static_cast<unsigned long long>(index + 1) * gridDim.x;
      __threadfence();
      asm volatile("red.release.gpu.global.add.u64 [%0], 1;\n" ::"l"(count) : "memory");
      if (ld_acquire(count) < target) {
        const long long t0 = clock64();
        while (ld_acquire(count) < target)
          if (clock64() - t0 > (1ll << 33)) __trap();  // ~4 s: a CTA never arrived (a bug, not a wait)
      }
      if (trace != nullptr) {
        trace[kTraceValues * index + kLeaveNs] = globaltimer();
        trace[kTraceValues * index + kLeaveClk] = clock64();
      }
    }
    ++index;
    __syncthreads();
  }
};

__device__ __forceinline__ float gelu(float x, int tanh_form) {
  if (tanh_form) return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

// ---- the weight ring ----------------------------------------------------------------------------------

/// Load i of this CTA: its columns of projection i % 6 of layer i / 6.
template <typename T>
__device__ void load_desc(const StepArgs& a, const Shared& s, int i, const void*& src, unsigned& bytes) {
  const int m = i % kMatrices;
  const int set = m == 0 ? kQkvCols : m == 4 ? kFfnCols : kHiddenCols;
  const i64 k = m == 5 ? a.ffn : a.d;
  src = static_cast<const T*>(s.layers[i / kMatrices].w[m]) + s.cols[set][0] * k;
  bytes = static_cast<unsigned>((s.cols[set][1] - s.cols[set][0]) * k * sizeof(T));
}

/// Thread 0: issues further loads while a slot and ring space (RingSpace) are free.
template <typename T>
__device__ __noinline__ void top_up(const StepArgs& a, Shared& s, unsigned char* ring) {
  const unsigned cap = static_cast<unsigned>(a.ring_bytes);
  while (s.issued < s.total && s.issued - s.freed < kSlots) {
    const void* src = nullptr;
    unsigned bytes = 0;
    load_desc<T>(a, s, s.issued, src, bytes);
    const int slot = s.issued % kSlots;
    if (!s.space.place(bytes, cap, s.off[slot], s.span[slot])) return;  // wait for slices to be consumed
    sm90::mbar_expect_tx(&s.bar[slot], bytes);
    if (bytes != 0) sm90::bulk_load_stream(ring + s.off[slot], src, bytes, &s.bar[slot]);
    ++s.issued;
  }
}

template <typename T>
__device__ __forceinline__ const T* acquire(Shared& s, const unsigned char* ring, int i, bool profile) {
  const int slot = i % kSlots;
  const long long t0 = profile && threadIdx.x == 0 ? clock64() : 0;
  sm90::mbar_wait(&s.bar[slot], static_cast<unsigned>(i / kSlots) & 1u);
  if (profile && threadIdx.x == 0) s.waited += clock64() - t0;
  return reinterpret_cast<const T*>(ring + s.off[slot]);
}


// ---- phases ------------------------------------------------------------------------------------------

/// The per-column inputs of a projection phase, fetched with its activations: the biases of the
/// CTA's columns c0 .. c0 + ncols and (residual phases) h at those columns. No barrier: the loads
/// that follow (layer_norm_rows, load_rows) end with one.
template <typename T>
__device__ void stage_columns(const StepArgs& a, Shared& s, const void* bias, int c0, int ncols, bool residual) {
  for (int j = threadIdx.x; j < ncols; j += kThreads) s.bias[j] = to_f(static_cast<const T*>(bias)[c0 + j]);
  if (residual)
    for (int i = threadIdx.x; i < a.rows * ncols; i += kThreads) {
      const int r = i / ncols, j = i % ncols;
      s.res[r * kMaxColumns + j] = __ldcg(a.h + static_cast<i64>(r) * a.d + c0 + j);
    }
}

/// x[r, :] = LayerNorm(h[r, :]) for every row: warp r takes row r's mean and variance (two-pass,
/// f32); the parameters are loaded together with h (d <= kMaxHidden: at most 4 per thread).
template <typename T>
__device__ __noinline__ void layer_norm_rows(const StepArgs& a, const void* gamma, const void* beta, float* x,
                                             Shared& s, const GridBarrier& grid) {
  const int d = a.d, rows = a.rows, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float gw[4], gb[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int k = threadIdx.x + i * kThreads;
    gw[i] = k < d ? to_f(static_cast<const T*>(gamma)[k]) : 0.0f;
    gb[i] = k < d ? to_f(static_cast<const T*>(beta)[k]) : 0.0f;
  }
  for (int i = threadIdx.x; i < rows * d; i += kThreads) x[i] = __ldcg(a.h + i);
  __syncthreads();
  grid.mark(kLoadedClk);
  if (warp < rows) {
    const float* xr = x + static_cast<i64>(warp) * d;
    float sum = 0.0f;
    for (int k = lane; k < d; k += 32) sum += xr[k];
    const float mean = kc::warp_sum(sum) / static_cast<float>(d);
    float sq = 0.0f;
    for (int k = lane; k < d; k += 32) sq += (xr[k] - mean) * (xr[k] - mean);
    const float var = kc::warp_sum(sq) / static_cast<float>(d);
    if (lane == 0) s.stat[warp] = make_float2(mean, rsqrtf(var + a.eps));
  }
  __syncthreads();
#pragma unroll 1
  for (int r = 0; r < rows; ++r) {
    const float2 st = s.stat[r];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int k = threadIdx.x + i * kThreads;
      if (k < d) x[r * d + k] = (x[r * d + k] - st.x) * st.y * gw[i] + gb[i];
    }
  }
  __syncthreads();
}

/// x[r, :n] = src[r, :n] (another phase's output) for every row.
__device__ void load_rows(const float* src, int rows, int n, float* x) {
  for (int i = threadIdx.x; i < rows * n; i += kThreads) x[i] = __ldcg(src + i);
  __syncthreads();
}

/// s.out[r][j] = dot(x[r, :], w[j, :]) for the `ncols` (<= kMaxColumns) columns of the slice
/// w [ncols, k] in shared memory and every row; one warp per column. Ends with a barrier.
/// Not inlined: one copy of the code serves every phase (the kernel must fit the instruction cache:
/// inlined per phase it was ~370 KB, and each phase then waited on instruction fetches).
template <typename T>
__device__ __noinline__ void gemv_rows(const T* w, int ncols, int k, const float* x, int rows, Shared& s) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k8 = k / 8;
  for (int j = warp; j < ncols; j += kWarps) {
    float acc[kMaxRows];
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) acc[r] = 0.0f;
    const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<i64>(j) * k);
    for (int c = lane; c < k8; c += 32) {
      float f[8];
      unpack8<T>(wr[c], f);
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r) {
        if (r >= rows) break;
        const float4* xr = reinterpret_cast<const float4*>(x + static_cast<i64>(r) * k + c * 8);
        const float4 x0 = xr[0], x1 = xr[1];
        acc[r] += f[0] * x0.x + f[1] * x0.y + f[2] * x0.z + f[3] * x0.w + f[4] * x1.x + f[5] * x1.y + f[6] * x1.z +
                  f[7] * x1.w;
      }
    }
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) {
      if (r >= rows) break;
      const float v = kc::warp_sum(acc[r]);
      if (lane == 0) s.out[r * kMaxColumns + j] = v;
    }
  }
  __syncthreads();
}

/// s.out[r][j] = dot(x[r, :], w[j, :]) for up to kMaxColumns columns of w [ncols, k] read straight
/// from global memory (streamed: evict-first), each warp taking 4 columns whose loads it issues
/// together. Ends with a barrier.
template <typename T>
__device__ __noinline__ void gemv_stream(const T* w, int ncols, int k, const float* x, int rows, Shared& s) {
  constexpr int kCols = kMaxColumns / kWarps;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k8 = k / 8;
  float acc[kCols][kMaxRows] = {};
  for (int c = lane; c < k8; c += 32) {
    float f[kCols][8];
#pragma unroll
    for (int q = 0; q < kCols; ++q) {
      const int j = warp + q * kWarps;
      const uint4 u = j < ncols ? __ldcs(reinterpret_cast<const uint4*>(w + static_cast<i64>(j) * k) + c)
                                : make_uint4(0, 0, 0, 0);
      unpack8<T>(u, f[q]);
    }
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) {
      if (r >= rows) break;
      const float4* xr = reinterpret_cast<const float4*>(x + static_cast<i64>(r) * k + c * 8);
      const float4 x0 = xr[0], x1 = xr[1];
#pragma unroll
      for (int q = 0; q < kCols; ++q)
        acc[q][r] += f[q][0] * x0.x + f[q][1] * x0.y + f[q][2] * x0.z + f[q][3] * x0.w + f[q][4] * x1.x +
                     f[q][5] * x1.y + f[q][6] * x1.z + f[q][7] * x1.w;
    }
  }
#pragma unroll
  for (int q = 0; q < kCols; ++q) {
    const int j = warp + q * kWarps;
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) {
      if (r >= rows) break;
      const float v = kc::warp_sum(acc[q][r]);
      if (lane == 0 && j < ncols) s.out[r * kMaxColumns + j] = v;
    }
  }
  __syncthreads();
}

/// A phase's projection: the GEMV over this CTA's slice (load `load` of the ring), then
/// epi(r, j, value + bias) for every (row, column), spread over the threads. The slice is handed
/// back as soon as the GEMV is done, so thread 0 refills the ring while the others run the epilogue.
template <typename T, typename Epi>
__device__ __forceinline__ void project(const StepArgs& a, Shared& s, unsigned char* ring, int& load, bool profile,
                                        int ncols, int k, const float* x, Epi&& epi) {
  gemv_rows<T>(acquire<T>(s, ring, load, profile), ncols, k, x, a.rows, s);  // ends with a CTA barrier
  if (threadIdx.x == 0) {
    s.space.release(s.span[load % kSlots]);
    ++s.freed;
    top_up<T>(a, s, ring);
  }
  ++load;
  for (int i = threadIdx.x; i < a.rows * ncols; i += kThreads) {
    const int r = i / ncols, j = i % ncols;
    epi(r, j, s.out[r * kMaxColumns + j] + s.bias[j]);
  }
}

/// Where the keys and values of one attention item live: a paged cache (table != null: key t is in
/// block table[t / block_size]) or a strided tensor (key t at t * stride).
template <typename T>
struct KeySource {
  const T* k;
  const T* v;
  const int* table;
  i64 stride;        // strided: elements between keys
  i64 block_stride;  // paged: elements between blocks (H * block_size * hd)
  int block_size, hd;
  __device__ i64 at(int t) const {
    return table != nullptr ? table[t / block_size] * block_stride + static_cast<i64>(t % block_size) * hd
                            : static_cast<i64>(t) * stride;
  }
};

/// out[0:hd] = softmax(q k^T * scale) v over n keys; key(t) / value(t) point at key t's head slice.
/// A key is read by hd / 8 consecutive lanes (16 bytes each), so a pass of the CTA covers
/// kThreads * 8 / hd keys; four passes' loads are issued before the first is used.
template <typename T>
__device__ __noinline__ void attend(const StepArgs& a, const float* q, int n, const KeySource<T> src, float* out,
                                    float* scores, Shared& s) {
  constexpr int kUnroll = 4;
  const int hd = a.hd, lpk = hd / 8, kpp = kThreads / lpk;
  const int sub = threadIdx.x % lpk, slot = threadIdx.x / lpk, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float qf[8];
  {
    const float4 q0 = __ldcg(reinterpret_cast<const float4*>(q) + 2 * sub);
    const float4 q1 = __ldcg(reinterpret_cast<const float4*>(q) + 2 * sub + 1);
    qf[0] = q0.x, qf[1] = q0.y, qf[2] = q0.z, qf[3] = q0.w, qf[4] = q1.x, qf[5] = q1.y, qf[6] = q1.z, qf[7] = q1.w;
#pragma unroll
    for (int e = 0; e < 8; ++e) qf[e] *= a.scale;
  }
  float mx = -INFINITY;
  for (int t0 = 0; t0 < n; t0 += kUnroll * kpp) {
    uint4 kv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = t0 + u * kpp + slot;
      kv[u] = t < n ? __ldcg(reinterpret_cast<const uint4*>(src.k + src.at(t)) + sub) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float f[8];
      unpack8<T>(kv[u], f);
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; ++e) dot += qf[e] * f[e];
      for (int o = lpk / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      const int t = t0 + u * kpp + slot;
      if (t < n) {
        if (sub == 0) scores[t] = dot;
        mx = fmaxf(mx, dot);
      }
    }
  }
  mx = kc::block_max(mx, s.red);  // its __syncthreads also publishes scores
  float sum = 0.0f;
  for (int t = threadIdx.x; t < n; t += kThreads) {
    const float p = expf(scores[t] - mx);
    scores[t] = p;
    sum += p;
  }
  sum = kc::block_sum(sum, s.red);
  float acc[8] = {};
  for (int t0 = 0; t0 < n; t0 += kUnroll * kpp) {
    uint4 vv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = t0 + u * kpp + slot;
      vv[u] = t < n ? __ldcg(reinterpret_cast<const uint4*>(src.v + src.at(t)) + sub) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = t0 + u * kpp + slot;
      if (t >= n) break;
      float f[8];
      unpack8<T>(vv[u], f);
      const float p = scores[t];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] += p * f[e];
    }
  }
  // Sum over the keys of a warp (lanes with the same `sub`), then over warps in a fixed order.
  for (int o = lpk; o < 32; o <<= 1)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], o);
  if (lane < lpk)
#pragma unroll
    for (int e = 0; e < 8; ++e) s.pv[warp * hd + sub * 8 + e] = acc[e];
  __syncthreads();
  if (threadIdx.x < hd) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += s.pv[w * hd + threadIdx.x];
    out[threadIdx.x] = o / sum;
  }
  __syncthreads();  // s.pv and scores are reused by the next item
}

// ---- LM-head statistics -------------------------------------------------------------------------------

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  if (isnan(bv)) return isnan(v) && i < bi;
  if (isnan(v)) return true;
  return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ void lse_add(float& m, float& s, float v) {
  if (v == -INFINITY) return;
  if (v > m) {
    s = s * expf(m - v) + 1.0f;
    m = v;
  } else {
    s += expf(v - m);
  }
}

__device__ __forceinline__ void lse_merge(float& m, float& s, float om, float os) {
  if (om == -INFINITY) return;
  if (om > m) {
    s = s * expf(m - om) + os;
    m = om;
  } else {
    s += os * expf(om - m);
  }
}

__device__ __forceinline__ Partial partial_init() {
  return Partial{-INFINITY, 0.0f, -INFINITY, 0.0f, INT_MAX, INT_MAX, -INFINITY, -INFINITY};
}

__device__ __forceinline__ void partial_add(Partial& p, float v, int i, int eos) {
  lse_add(p.m, p.s, v);
  if (better(v, i, p.argv, p.arg)) p.arg = i, p.argv = v;
  if (i != eos) {
    lse_add(p.m_ne, p.s_ne, v);
    if (better(v, i, p.arg_ne_v, p.arg_ne)) p.arg_ne = i, p.arg_ne_v = v;
  }
}

__device__ __forceinline__ void partial_merge(Partial& p, const Partial& o) {
  lse_merge(p.m, p.s, o.m, o.s);
  lse_merge(p.m_ne, p.s_ne, o.m_ne, o.s_ne);
  if (better(o.argv, o.arg, p.argv, p.arg)) p.arg = o.arg, p.argv = o.argv;
  if (better(o.arg_ne_v, o.arg_ne, p.arg_ne_v, p.arg_ne)) p.arg_ne = o.arg_ne, p.arg_ne_v = o.arg_ne_v;
}

__device__ __forceinline__ Partial partial_shfl(const Partial& p, int lane_mask) {
  Partial o;
  o.m = __shfl_xor_sync(0xffffffffu, p.m, lane_mask);
  o.s = __shfl_xor_sync(0xffffffffu, p.s, lane_mask);
  o.m_ne = __shfl_xor_sync(0xffffffffu, p.m_ne, lane_mask);
  o.s_ne = __shfl_xor_sync(0xffffffffu, p.s_ne, lane_mask);
  o.arg = __shfl_xor_sync(0xffffffffu, p.arg, lane_mask);
  o.arg_ne = __shfl_xor_sync(0xffffffffu, p.arg_ne, lane_mask);
  o.argv = __shfl_xor_sync(0xffffffffu, p.argv, lane_mask);
  o.arg_ne_v = __shfl_xor_sync(0xffffffffu, p.arg_ne_v, lane_mask);
  return o;
}

/// The merge of the 32 lanes' partials, bitwise the same on every lane (each merge takes the lower
/// lane's partial first).
__device__ __noinline__ Partial partial_warp_merge(Partial p, int lane) {
#pragma unroll 1
  for (int o = 16; o > 0; o >>= 1) {
    const Partial other = partial_shfl(p, o);
    Partial lo = (lane & o) ? other : p;
    const Partial hi = (lane & o) ? p : other;
    partial_merge(lo, hi);
    p = lo;
  }
  return p;
}

// ---- the kernel ---------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) fused_decoder_step_kernel(const StepArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char smem[];
  Shared& s = *reinterpret_cast<Shared*>(smem);
  float* x = reinterpret_cast<float*>(smem + ((sizeof(Shared) + 127) / 128) * 128);
  float* scores = x + a.x_floats;
  unsigned char* ring = reinterpret_cast<unsigned char*>(scores) + ((a.max_keys * 4 + 127) / 128) * 128;
  const int tid = threadIdx.x, b = blockIdx.x, g = gridDim.x, rows = a.rows, d = a.d;
  const int barriers = barriers_per_step(a.num_layers);
  GridBarrier grid{a.barrier, 0, a.trace == nullptr ? nullptr : a.trace + 1ll * kTraceValues * b * barriers};
  const bool profile = a.trace != nullptr;

  // Layer arguments into shared memory (as 8-byte words: the struct is all pointers).
  {
    const auto* src = reinterpret_cast<const unsigned long long*>(a.layers);
    auto* dst = reinterpret_cast<unsigned long long*>(s.layers);
    const int words = a.num_layers * static_cast<int>(sizeof(LayerArgs) / 8);
    for (int i = tid; i < words; i += kThreads) dst[i] = src[i];
    for (int i = tid; i < rows * a.max_blocks; i += kThreads)
      s.table[(i / a.max_blocks) * kMaxTableBlocks + i % a.max_blocks] = a.table[i];
    // Never more keys than the cache holds (and `scores` has room for): the host keeps lengths
    // and positions consistent, this only bounds the damage of a buffer that is not.
    if (tid < rows) s.length[tid] = max(0, min(a.lengths[tid], a.max_blocks * a.block_size));
  }
  if (tid == 0) {
    for (int i = 0; i < kSlots; ++i) sm90::mbar_init(&s.bar[i], 1);
    sm90::mbar_fence_init();
    s.space = RingSpace{};
    col_range(3 * a.d, b, g, s.cols[kQkvCols][0], s.cols[kQkvCols][1]);
    col_range(a.d, b, g, s.cols[kHiddenCols][0], s.cols[kHiddenCols][1]);
    col_range(a.ffn, b, g, s.cols[kFfnCols][0], s.cols[kFfnCols][1]);
    col_range(a.vocab, b, g, s.cols[kVocabCols][0], s.cols[kVocabCols][1]);
    s.issued = s.freed = 0;
    s.waited = 0;
    s.total = a.num_layers * kMatrices;
    grid.start(barriers);
  }
  __syncthreads();
  if (tid == 0) top_up<T>(a, s, ring);  // weights do not depend on anything earlier on the stream
  if (tid < rows) {  // where each row's new key/value goes (head 0; heads are block_size * hd apart)
    const int pos = a.tokens[2 * tid + 1];
    const i64 blk = s.table[tid * kMaxTableBlocks + pos / a.block_size];
    s.kv_at[tid] = (blk * a.heads * a.block_size + pos % a.block_size) * a.hd;
  }

  for (int i = b * kThreads + tid; i < rows * d; i += g * kThreads) {
    const int r = i / d, k = i % d;
    const T* wte = static_cast<const T*>(a.wte);
    const T* wpe = static_cast<const T*>(a.wpe);
    a.h[i] = to_f(wte[static_cast<i64>(a.tokens[2 * r]) * d + k]) + to_f(wpe[static_cast<i64>(a.tokens[2 * r + 1]) * d + k]);
  }
  grid.sync(s.waited);

  const int heads = a.heads, hd = a.hd;
  int c0, c1, f0, f1;  // this CTA's columns of the D-wide and F-wide projections
  c0 = s.cols[kHiddenCols][0], c1 = s.cols[kHiddenCols][1], f0 = s.cols[kFfnCols][0], f1 = s.cols[kFfnCols][1];
  int load = 0;
  for (int l = 0; l < a.num_layers; ++l) {
    const LayerArgs& L = s.layers[l];
    // LN1 + QKV: q to a.q, the new key/value into the paged cache.
    const int q0 = s.cols[kQkvCols][0], q1 = s.cols[kQkvCols][1];
    stage_columns<T>(a, s, L.qkv_b, q0, q1 - q0, false);
    layer_norm_rows<T>(a, L.ln1_w, L.ln1_b, x, s, grid);
    grid.mark(kNormedClk);
    project<T>(a, s, ring, load, profile, q1 - q0, d, x, [&](int r, int j, float v) {
      const int c = q0 + j;
      if (c < d) {
        a.q[r * d + c] = v;
        return;
      }
      const int cc = c % d;
      const i64 at = s.kv_at[r] + static_cast<i64>(cc / hd) * a.block_size * hd + cc % hd;
      static_cast<T*>(c < 2 * d ? L.k_cache : L.v_cache)[at] = from_f<T>(v);
    });
    grid.mark(kProjectedClk);
    grid.sync(s.waited);

    // Self-attention over the cache (the new position included), one CTA per (row, head).
    for (int item = b; item < rows * heads; item += g) {
      const int r = item / heads, head = item % heads;
      const i64 head_at = static_cast<i64>(head) * a.block_size * hd;
      const KeySource<T> src{static_cast<const T*>(L.k_cache) + head_at, static_cast<const T*>(L.v_cache) + head_at,
                             s.table + r * kMaxTableBlocks, 0, static_cast<i64>(heads) * a.block_size * hd,
                             a.block_size, hd};
      attend<T>(a, a.q + r * d + head * hd, s.length[r], src, a.att + r * d + head * hd, scores, s);
    }
    grid.sync(s.waited);

    // Output projection of an attention result (a.att) + residual; self- and cross-attention's.
    auto attention_out = [&](const void* bias) {
      stage_columns<T>(a, s, bias, c0, c1 - c0, true);
      load_rows(a.att, rows, d, x);
      grid.mark(kLoadedClk);
      project<T>(a, s, ring, load, profile, c1 - c0, d, x,
                 [&](int r, int j, float v) { a.h[r * d + c0 + j] = s.res[r * kMaxColumns + j] + v; });
      grid.mark(kProjectedClk);
      grid.sync(s.waited);
    };
    attention_out(L.proj_b);

    // LN-x + cross-attention query.
    stage_columns<T>(a, s, L.xq_b, c0, c1 - c0, false);
    layer_norm_rows<T>(a, L.lnx_w, L.lnx_b, x, s, grid);
    grid.mark(kNormedClk);
    project<T>(a, s, ring, load, profile, c1 - c0, d, x, [&](int r, int j, float v) { a.q[r * d + c0 + j] = v; });
    grid.mark(kProjectedClk);
    grid.sync(s.waited);

    // Cross-attention: a row attends to its image's keys/values (beams share them).
    for (int item = b; item < rows * heads; item += g) {
      const int r = item / heads, head = item % heads;
      const T* kv = static_cast<const T*>(L.cross_kv) + static_cast<i64>(r / a.beams) * a.t_enc * 2 * d + head * hd;
      const KeySource<T> src{kv, kv + d, nullptr, 2 * static_cast<i64>(d), 0, 1, hd};
      attend<T>(a, a.q + r * d + head * hd, a.t_enc, src, a.att + r * d + head * hd, scores, s);
    }
    grid.sync(s.waited);

    attention_out(L.xproj_b);

    // LN2 + fc + GELU.
    stage_columns<T>(a, s, L.fc_b, f0, f1 - f0, false);
    layer_norm_rows<T>(a, L.ln2_w, L.ln2_b, x, s, grid);
    grid.mark(kNormedClk);
    project<T>(a, s, ring, load, profile, f1 - f0, d, x, [&](int r, int j, float v) {
      a.mlp[static_cast<i64>(r) * a.ffn + f0 + j] = gelu(v, a.gelu_tanh);
    });
    grid.mark(kProjectedClk);
    grid.sync(s.waited);

    // fc2 + residual.
    stage_columns<T>(a, s, L.fc2_b, c0, c1 - c0, true);
    load_rows(a.mlp, rows, a.ffn, x);
    grid.mark(kLoadedClk);
    project<T>(a, s, ring, load, profile, c1 - c0, a.ffn, x,
               [&](int r, int j, float v) { a.h[r * d + c0 + j] = s.res[r * kMaxColumns + j] + v; });
    grid.mark(kProjectedClk);
    grid.sync(s.waited);
  }

  // LN-f + LM head over this CTA's vocabulary range, streamed straight from global memory (through
  // the ring, 32 KB pieces cost ~3 us each to issue and hand over: 56 us for GPT-2's head, now 30).
  layer_norm_rows<T>(a, a.lnf_w, a.lnf_b, x, s, grid);
  const int v0 = s.cols[kVocabCols][0], v1 = s.cols[kVocabCols][1];
  const int warp = tid >> 5, lane = tid & 31;
  // Warp r keeps row r's running statistics, lane l over the columns l, l + 32, ... of each batch.
  Partial mine = partial_init();
  for (int p0 = v0; p0 < v1; p0 += kMaxColumns) {
    const int n = min(kMaxColumns, v1 - p0);
    gemv_stream<T>(static_cast<const T*>(a.wte) + static_cast<i64>(p0) * d, n, d, x, rows, s);
    if (warp < rows)
      for (int j = lane; j < n; j += 32) {
        const float v = s.out[warp * kMaxColumns + j];
        partial_add(mine, v, p0 + j, a.eos);
        if (a.write_log_probs) a.logits[static_cast<i64>(warp) * a.vocab + p0 + j] = v;
      }
    __syncthreads();  // s.out is rewritten by the next batch
  }
  grid.mark(kProjectedClk);
  if (warp < rows) {
    mine = partial_warp_merge(mine, lane);
    if (lane == 0) a.partial[static_cast<i64>(b) * rows + warp] = mine;
  }
  grid.sync(s.waited);

  // Every CTA merges the partials of all CTAs (fixed order: deterministic) for the row statistics.
  if (warp < rows) {
    const int r = warp;
    Partial p = partial_init();
    for (int gi = lane; gi < g; gi += 32) {
      Partial o;
      const unsigned* src = reinterpret_cast<const unsigned*>(a.partial + static_cast<i64>(gi) * rows + r);
      unsigned* dst = reinterpret_cast<unsigned*>(&o);
      for (int e = 0; e < static_cast<int>(sizeof(Partial) / 4); ++e) dst[e] = __ldcg(src + e);
      partial_merge(p, o);
    }
    p = partial_warp_merge(p, lane);
    if (lane == 0) {
      s.lse[r] = p.m + logf(p.s);
      s.lse_ne[r] = p.m_ne + logf(p.s_ne);
      if (b == 0) {
        a.picks[r] = FusedGreedyPick{p.arg, p.argv - s.lse[r], p.arg_ne, p.arg_ne_v - s.lse_ne[r]};
      }
    }
  }
  __syncthreads();
  if (a.write_log_probs)
    for (int r = 0; r < rows; ++r)
      for (int c = v0 + tid; c < v1; c += kThreads) {
        float* lp = a.logits + static_cast<i64>(r) * a.vocab + c;
        *lp = __ldcg(lp) - s.lse[r];
      }
#endif
}

}  // namespace

std::size_t shared_header_bytes() { return sizeof(Shared); }

const void* step_kernel(DType dtype) {
  return dtype == DType::F16 ? reinterpret_cast<const void*>(&fused_decoder_step_kernel<__half>)
                             : reinterpret_cast<const void*>(&fused_decoder_step_kernel<__nv_bfloat16>);
}

}  // namespace encore::cuda::fused
