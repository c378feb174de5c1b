// Decode attention over a paged KV cache on CUDA (DecodeAttentionAttrs): validation, strategy and
// kernel choice, the persistent per-stream state, launches.
//
// Kernels (decode_attention_core.cuh, _lean.cuh, _split.cuh): one kernel template per segment loop,
// with the strategy a run-time mode, so instantiations stay few (CI compiles on 2 cores):
// - tensor cores, TcCore<{f16, bf16}, {64, 128}>: 8 warps, ~210 KB of shared memory, so 1 CTA per
//   SM (H200: G = 132 lean workers); each warp streams 16-key steps through a 3-stage (D = 128) or
//   5-stage (D = 64) cp.async pipeline, QK^T and PV on mma.sync m16n8k16, 16 packed query rows.
// - CUDA cores, GenericCore<{f32, f16, bf16}>: any D <= 256, any strides; 8 rows per block, one
//   key per lane, K/V staged as f32 in shared memory; 1-4 warps by D, several CTAs per SM.
// - split_combine_kernel: the second launch of split, for split counts whose merge scratch does not
//   fit the split kernel (otherwise the pieces merge inside their thread-block cluster on sm_90, or
//   the piece that finishes last merges; decode_attention_split.cuh).
// Tiles: T = 64 tokens for D > 64, 128 for D <= 64 (32 KB of bf16 K+V), rounded up to a multiple
// of the block size. Tiles are only the unit of the partition (warps stream 16-key steps whatever
// T is), so they are kept small: stream-K's imbalance is at most one tile per CTA (~1 us of HBM
// time per SM at 32 KB), where FlashAttention's 128/256-key tiles would cost ~2 us.
//
// Workspace (partial slots m, l, O per block of rows), the lean flags and split's head counters
// live in buffers kept per (device, stream): the flags must survive across calls and graph replays
// (epochs, no resets), the counters are left at 0 by every launch, and a captured graph keeps the
// addresses it saw, so a grown buffer never frees its predecessor. Calls on one stream run one after
// the other (stream order, or PDL's wait at kernel start); two launches that share a stream's
// buffers must never run at once (e.g. one graph replayed on two streams concurrently).
// Sizes: a slot is (2 RB + rows D) floats. Lean: 2 G slots (G = 132, D = 128: 0.2 MB for MHA, 2.2 MB
// with 16 rows; under 1 % of any cache of 256 MB or more). Split: B * Hv * s slots (FlashDecoding's
// out_accum): a fraction ~ (s / tiles) * rows / T of the KV bytes, i.e. under 2 % for the
// heuristic's s; a forced s near the tile count on short contexts costs up to rows / T. A split
// merged inside its clusters writes none of it (it is allocated anyway, for the fallback).
#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "backends/cuda/cooperative_grids.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/common/decode_checks.h"
#include "kernels/cuda/decode_attention_internal.h"
#include "kernels/cuda/decode_attention_lean.cuh"
#include "kernels/cuda/decode_attention_split.cuh"

namespace encore::cuda {
namespace dec {
namespace {

template <class Core>
__global__ void __launch_bounds__(256, 1) decode_kernel(const Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  // First, before any memory access: with PDL this waits for the previous kernel on the stream to
  // finish (split's head counters and the workspace are reused across calls). Lean is launched
  // cooperatively without PDL, where it returns at once.
  pdl::begin();
  if (p.mode == kModeLean)
    lean_body<Core>(p, smem);
  else
    split_body<Core>(p, smem);
}

__global__ void read_stream_kernel(const uint4* __restrict__ data, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {  // four independent 16-byte loads in flight
    const uint4 a = __ldcs(data + i), b = __ldcs(data + i + stride), c = __ldcs(data + i + 2 * stride),
                d = __ldcs(data + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldcs(data + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;  // practically never: keeps the loads alive
}

constexpr std::size_t align16(std::size_t n) { return (n + 15) / 16 * 16; }

/// One segment-loop kernel with its static shape.
struct Kernel {
  const void* fn = nullptr;
  bool tc = false;
  int rb = 8, nw = 1, warp_bytes = 0, q_bytes = 0;
};

template <typename T, int D>
Kernel tc_kernel() {
  using C = TcCore<T, D>;
  return {reinterpret_cast<const void*>(&decode_kernel<C>), true, C::RB, C::NW, C::kWarpBytes, C::kQBytes};
}

template <typename T>
Kernel generic_kernel(int D) {
  using C = GenericCore<T>;
  const int per_warp = C::warp_bytes(D);
  const int nw = std::clamp(96 * 1024 / per_warp, 1, 4);  // <= ~96 KB: a few CTAs per SM
  return {reinterpret_cast<const void*>(&decode_kernel<C>), false, C::RB, nw, per_warp, C::q_bytes(D)};
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// ---- per-(device, stream) state ---------------------------------------------------------------

struct StreamState {
  unsigned* sync = nullptr;  // [16] counters, then 2 * kMaxWorkers flags; zeroed once
  float* ws = nullptr;
  std::size_t ws_bytes = 0;
  unsigned* heads = nullptr;  // fused split combine: a counter per (sequence, virtual head), zeroed
  std::size_t heads_count = 0;
  std::vector<void*> retired;  // older workspaces and counters, still referenced by captured graphs
};

std::mutex g_state_mutex;
std::map<std::pair<int, cudaStream_t>, StreamState> g_states;

/// Switches this thread to relaxed capture mode for the scope (allocating while a stream of this
/// thread is being captured is otherwise refused).
struct RelaxedCapture {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode); }
  ~RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode); }
};

/// A zeroed device buffer of `bytes` for work on `stream`. Zeroed on a private stream and waited
/// for: legal while a stream of this thread is being captured (the caller holds a RelaxedCapture).
template <typename T>
T* zeroed_device_buffer(std::size_t bytes, cudaStream_t stream, const char* what) {
  T* ptr = nullptr;
  kc::check_cuda(kc::device_malloc(&ptr, bytes, stream), what);
  cudaStream_t init = nullptr;
  cudaError_t err = cudaStreamCreateWithFlags(&init, cudaStreamNonBlocking);
  if (err == cudaSuccess) {
    err = cudaMemsetAsync(ptr, 0, bytes, init);
    if (err == cudaSuccess) err = cudaStreamSynchronize(init);
    cudaStreamDestroy(init);
  }
  if (err != cudaSuccess) cudaFree(ptr);
  kc::check_cuda(err, what);
  return ptr;
}

StreamState& stream_state(int ordinal, cudaStream_t stream, std::size_t ws_bytes, std::size_t heads = 0) {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  StreamState& s = g_states[{ordinal, stream}];
  if (s.sync == nullptr || s.ws_bytes < ws_bytes || s.heads_count < heads) {
    RelaxedCapture relaxed;
    if (s.sync == nullptr)
      s.sync = zeroed_device_buffer<unsigned>(sizeof(unsigned) * (16 + 2 * kMaxWorkers), stream,
                                              "decode_attention: flags");
    if (s.heads_count < heads) {
      const std::size_t count = std::max({heads, 2 * s.heads_count, std::size_t{4096}});
      if (s.heads != nullptr) s.retired.push_back(s.heads);
      s.heads = zeroed_device_buffer<unsigned>(sizeof(unsigned) * count, stream, "decode_attention: head counters");
      s.heads_count = count;
    }
    if (s.ws_bytes < ws_bytes) {
      const std::size_t bytes = std::max({ws_bytes, 2 * s.ws_bytes, std::size_t{4} << 20});
      float* fresh = nullptr;
      kc::check_cuda(kc::device_malloc(&fresh, bytes, stream), "decode_attention: cudaMalloc(workspace)");
      if (s.ws != nullptr) s.retired.push_back(s.ws);
      s.ws = fresh, s.ws_bytes = bytes;
    }
  }
  return s;
}

// Lean's cooperative grids per device (a refused size is not tried again; under stream capture
// only sizes that launched before are tried).
CooperativeGrids g_lean_grids;

bool lean_grid_may_launch(int ordinal, int grid, bool capturing) {
  return grid < g_lean_grids.refused(ordinal) && (!capturing || grid <= g_lean_grids.launched(ordinal));
}

/// Co-resident CTAs per SM of `fn` with `smem` bytes, after raising the kernel's dynamic shared
/// memory limit to at least `smem` (limits only grow: a smaller later request must not break a
/// larger configuration cached earlier). Cached: decode runs once per layer and step.
int occupancy(int ordinal, const void* fn, int threads, std::size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int, std::size_t>, int> cache;
  static std::map<std::pair<int, const void*>, std::size_t> limit;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(ordinal, fn, threads, smem);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  RelaxedCapture relaxed;  // the first call may come while the stream is being captured
  std::size_t& lim = limit[{ordinal, fn}];
  if (smem > 48 * 1024 && smem > lim) {
    kc::check_cuda(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
                   "decode_attention: cudaFuncSetAttribute");
    lim = smem;
  }
  int n = 0;
  kc::check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fn, threads, smem),
                 "decode_attention: cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  cache[key] = n;
  return n;
}

/// How many clusters of `size` CTAs of `fn` with `smem` bytes can be co-resident for work on
/// `stream`: 0 unless the kernel's code is sm_90 (cluster barriers and distributed shared memory)
/// and `smem` is within the device's opt-in limit. Cached, like occupancy(); the answer is not a
/// promise (the launch may still be refused: see cluster_launch_state).
int resident_clusters(const CudaRuntime& rt, const void* fn, int threads, std::size_t smem, int size,
                      cudaStream_t stream) {
  if (rt.sm() < 90) return 0;
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int, std::size_t, int>, int> cache;
  const auto key = std::make_tuple(rt.ordinal(), fn, threads, smem, size);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  RelaxedCapture relaxed;
  int optin = 0, n = 0;
  kc::check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, rt.ordinal()),
                 "decode_attention: cudaDeviceGetAttribute");
  cudaFuncAttributes a{};
  kc::check_cuda(cudaFuncGetAttributes(&a, fn), "decode_attention: cudaFuncGetAttributes");
  if (smem <= static_cast<std::size_t>(optin) && a.ptxVersion >= 90 && a.binaryVersion >= 90 &&
      occupancy(rt.ordinal(), fn, threads, smem) >= 1) {
    pdl::Config c(false, dim3(static_cast<unsigned>(size)), dim3(static_cast<unsigned>(threads)), smem, stream);
    c.cluster(dim3(static_cast<unsigned>(size)));
    const cudaError_t err = cudaOccupancyMaxActiveClusters(&n, fn, &c.cfg);
    if (err == cudaErrorInvalidValue || err == cudaErrorInvalidClusterSize || err == cudaErrorNotSupported) {
      (void)cudaGetLastError();  // a configuration the device refuses: no clusters
      n = 0;
    } else {
      kc::check_cuda(err, "decode_attention: cudaOccupancyMaxActiveClusters");  // not cached
    }
  }
  std::lock_guard<std::mutex> lock(mu);
  return cache[key] = n;
}

/// Split's cluster launches per (device, kernel, cluster size, shared memory): 1 launched, -1
/// refused (never tried again), 0 not tried. Under stream capture only a configuration that has
/// launched before is tried: a refusal would invalidate the capture.
int cluster_launch_state(int ordinal, const void* fn, int size, std::size_t smem, int set = 0) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int, std::size_t>, int> state;
  std::lock_guard<std::mutex> lock(mu);
  int& v = state[std::make_tuple(ordinal, fn, size, smem)];
  if (set != 0) v = set;
  return v;
}

/// The CUDA side of the checks (devices, float dtypes, D <= 256); the rest is shared with the CPU
/// backend (kernels/common/decode_checks.h), whose sizes are returned.
decode_checks::DecodeDims check_inputs(const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& table,
                                       const Tensor& lengths, const DecodeAttentionAttrs& attrs, const Tensor& y) {
  const char* op = "decode_attention";
  kc::check_float(op, "q", q);
  kc::check_float(op, "k_cache", kc);
  kc::check_float(op, "v_cache", vc);
  kc::check_float(op, "output", y);
  kc::check_dev(op, "block_table", table);
  kc::check_dev(op, "lengths", lengths);
  for (const Tensor* t : {&kc, &vc, &table, &lengths, &y})
    ENCORE_CU_CHECK(t->device() == q.device(), invalid_argument, op, ": all operands must be on ", q.device().str(),
                    ", got one on ", t->device().str());
  const decode_checks::DecodeDims d = decode_checks::check_decode_attention(op, q, kc, vc, table, lengths, attrs, y);
  ENCORE_CU_CHECK(d.D <= 256, unsupported, op, ": head dim ", d.D, " > 256 is not supported on CUDA");
  return d;
}

}  // namespace

StrategyChoice choose_strategy(const StrategyShape& shape) {
  const std::int64_t tile = std::max<std::int64_t>(1, shape.tile_tokens);
  if (shape.batch > kMaxLeanBatch || shape.capacity_tokens <= tile) return {DecodeStrategy::plain};
  const double items = static_cast<double>(shape.batch) * static_cast<double>(shape.virtual_heads);
  const double slots = std::max(1, shape.resident_ctas);
  const double waves = items / slots;
  if (waves >= 2.0 && waves / std::ceil(waves) >= 0.9) return {DecodeStrategy::plain};
  if (shape.batch == 1 && shape.rows > 1 && shape.virtual_heads <= shape.resident_clusters &&
      shape.capacity_tokens <= kClusterSplitTokens)
    return {DecodeStrategy::split, kClusterSplit};
  // Split only where FlashDecoding's heuristic will split (it keeps one piece from 0.8 x slots on).
  if (shape.batch == 1 && shape.rows == 1 && shape.virtual_heads >= 8 && items < 0.8 * slots)
    return {DecodeStrategy::split};
  if (lean::tiles_for_length(shape.capacity_tokens, tile) <= kShortCacheTiles && items <= slots)
    return {DecodeStrategy::plain};
  return {DecodeStrategy::lean};
}

LaunchInfo decode_attention_impl(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                 const Tensor& block_table, const Tensor& lengths, const DecodeAttentionAttrs& attrs,
                                 const Tensor& y, const CudaContext& ctx, const Options& opts) {
  const char* op = "decode_attention";
  const decode_checks::DecodeDims dims = check_inputs(q, k_cache, v_cache, block_table, lengths, attrs, y);
  kc::Launch l(ctx, op);
  const int Hq = dims.Hq, Hkv = dims.Hkv;
  const i64 B = dims.B, Tq = dims.Tq, D = dims.D, bs = dims.block_size;
  LaunchInfo info;
  if (B == 0 || Tq == 0) return info;
  ENCORE_CU_CHECK(B <= (1 << 20) && Tq * (Hq / Hkv) <= (1 << 20), unsupported, op, ": batch ", B, " or ", Tq,
                  " query tokens x group ", Hq / Hkv, " is too large");

  // Kernel: tensor cores when the cache allows 16-byte copies of whole rows.
  const DType kv = k_cache.dtype();
  const auto& ks = k_cache.strides();
  const auto& vs = v_cache.strides();
  const bool tc_ok = (kv == DType::F16 || kv == DType::BF16) && (D == 64 || D == 128) && ks[3] == 1 && vs[3] == 1 &&
                     ks[0] % 8 == 0 && ks[1] % 8 == 0 && ks[2] % 8 == 0 && vs[0] % 8 == 0 && vs[1] % 8 == 0 &&
                     vs[2] % 8 == 0 && aligned16(k_cache.data()) && aligned16(v_cache.data());
  ENCORE_CU_CHECK(opts.path != Path::tensor_core || tc_ok, unsupported, op,
                  ": the tensor-core kernel needs an f16/bf16 cache with D 64 or 128 and 16-byte aligned rows");
  const bool use_tc = tc_ok && opts.path != Path::generic;
  Kernel kern;
  if (use_tc) {
    if (kv == DType::F16)
      kern = D == 64 ? tc_kernel<__half, 64>() : tc_kernel<__half, 128>();
    else
      kern = D == 64 ? tc_kernel<__nv_bfloat16, 64>() : tc_kernel<__nv_bfloat16, 128>();
  } else {
    kern = kv == DType::F32   ? generic_kernel<float>(static_cast<int>(D))
           : kv == DType::F16 ? generic_kernel<__half>(static_cast<int>(D))
                              : generic_kernel<__nv_bfloat16>(static_cast<int>(D));
  }

  Params p;
  p.q = q.data(), p.q_sb = q.strides()[0], p.q_st = q.strides()[1], p.q_se = q.strides()[2],
  p.q_dt = kc::code(q.dtype());
  p.k = k_cache.data(), p.v = v_cache.data();
  p.k_sn = ks[0], p.k_sh = ks[1], p.k_st = ks[2], p.k_se = ks[3];
  p.v_sn = vs[0], p.v_sh = vs[1], p.v_st = vs[2], p.v_se = vs[3];
  p.num_blocks = k_cache.dim(0);
  p.table = static_cast<const std::int32_t*>(block_table.data());
  p.tb_s0 = block_table.strides()[0], p.tb_s1 = block_table.strides()[1];
  p.lens = static_cast<const std::int32_t*>(lengths.data()), p.len_s = lengths.strides()[0];
  p.y = y.data(), p.y_dt = kc::code(y.dtype());
  p.B = static_cast<int>(B), p.Tq = static_cast<int>(Tq), p.Hq = Hq, p.Hkv = Hkv, p.group = Hq / Hkv;
  p.D = static_cast<int>(D), p.rows = p.group * p.Tq, p.bs = static_cast<int>(bs);
  if ((bs & (bs - 1)) == 0 && bs <= (i64{1} << 30)) p.bs_shift = std::countr_zero(static_cast<std::uint64_t>(bs));
  p.MT = row_blocks(p.rows, kern.rb), p.Hv = Hkv * p.MT;
  p.tile = lean::tile_tokens(bs, opts.tile_tokens > 0 ? opts.tile_tokens : (D <= 64 ? 128 : 64));
  p.capacity = dims.max_blocks * bs;
  const float scale = attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(D));
  p.scale_log2 = scale * 1.4426950408889634f;
  p.nw = kern.nw, p.warp_bytes = kern.warp_bytes;
  p.slot_floats = (2 * kern.rb + std::min(kern.rb, p.rows) * D + 3) / 4 * 4;  // m, l [RB], O [rows][D]
  const int threads = kern.nw * 32, sms = l.rt.multiprocessors();

  // Shared memory: [epoch | lean prefix sums] [Q] [row stats] [warp areas / merge scratch].
  auto layout = [&](bool lean, std::size_t region) {
    p.off_q = static_cast<int>(16 + (lean ? align16(sizeof(i64) * (B + 1)) : 0));
    p.off_stat = p.off_q + static_cast<int>(align16(kern.q_bytes));
    p.off_warps = p.off_stat + static_cast<int>(align16(sizeof(float) * (2 + kMaxWarps) * kern.rb));
    return p.off_warps + region;
  };
  const std::size_t warps_region = static_cast<std::size_t>(kern.nw) * kern.warp_bytes;
  const std::size_t split_smem = layout(false, warps_region);
  const int split_occ = occupancy(l.rt.ordinal(), kern.fn, threads, split_smem);
  ENCORE_CU_CHECK(split_occ >= 1, backend, op, ": kernel does not fit on the device (", split_smem, " bytes)");

  // The merge scratch of s pieces (m and l of each, then 1 / l): the combine kernel's shared memory,
  // and a region of its own after the warp areas when the pieces merge inside their cluster.
  auto merge_scratch = [&](int s) { return sizeof(float) * (2 * static_cast<std::size_t>(s) + 1) * kern.rb; };
  auto cluster_smem = [&](int s) { return split_smem + align16(merge_scratch(s)); };
  DecodeStrategy strategy = attrs.strategy;
  int auto_splits = 0;
  if (strategy == DecodeStrategy::automatic) {
    // Clusters are asked about only where the rule could take them (no locks on other calls).
    const bool may_cluster = opts.cluster_merge && !opts.separate_combine && B == 1 && p.rows > 1 &&
                             p.capacity <= kClusterSplitTokens;
    const int clusters =
        may_cluster ? resident_clusters(l.rt, kern.fn, threads, cluster_smem(kClusterSplit), kClusterSplit, l.stream)
                    : 0;
    const StrategyChoice choice =
        choose_strategy({.batch = B, .virtual_heads = p.Hv, .rows = p.rows, .resident_ctas = split_occ * sms,
                         .capacity_tokens = p.capacity, .tile_tokens = p.tile, .resident_clusters = clusters});
    strategy = choice.strategy, auto_splits = choice.splits;
  }
  if (strategy == DecodeStrategy::lean && B > kMaxLeanBatch) strategy = DecodeStrategy::plain;  // documented limit
  info.tensor_cores = use_tc, info.tile = p.tile, info.row_blocks = p.MT;

  if (strategy == DecodeStrategy::lean) {
    // G: every CTA co-resident (the host CTAs spin on their peers); the merge scratch (2 G RB
    // floats) shares the warp areas.
    std::size_t smem = layout(true, warps_region);
    int occ = occupancy(l.rt.ordinal(), kern.fn, threads, smem);
    ENCORE_CU_CHECK(occ >= 1, backend, op, ": lean kernel does not fit on the device (", smem, " bytes)");
    int G = std::min(occ * sms, kMaxWorkers);
    if (opts.workers > 0) G = std::min(G, opts.workers);
    const std::size_t scratch = sizeof(float) * 2 * static_cast<std::size_t>(G) * kern.rb;
    if (scratch > warps_region) {
      smem = layout(true, align16(scratch));
      occ = occupancy(l.rt.ordinal(), kern.fn, threads, smem);
      ENCORE_CU_CHECK(occ >= 1, backend, op, ": lean kernel does not fit on the device (", smem, " bytes)");
      G = std::min(G, occ * sms);
    }
    const std::size_t ws = sizeof(float) * 2 * static_cast<std::size_t>(G) * p.slot_floats;
    StreamState& st = stream_state(l.rt.ordinal(), l.stream, ws);
    p.mode = kModeLean, p.G = G, p.ws = st.ws, p.counters = st.sync, p.flags = st.sync + 16;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(G));
    cfg.blockDim = dim3(static_cast<unsigned>(threads));
    cfg.dynamicSmemBytes = smem;
    cfg.stream = l.stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative;  // the runtime refuses a grid that cannot be co-resident
    attr[0].val.cooperative = 1;
    cfg.attrs = attr, cfg.numAttrs = 1;
    if (opts.lean_grid_for_testing > 0) {  // only grids that cannot launch: the kernel never runs with it
      ENCORE_CU_CHECK(opts.lean_grid_for_testing > occ * sms, invalid_argument, op, ": a test grid of ",
                      opts.lean_grid_for_testing, " CTAs could be co-resident (", occ * sms, " fit)");
      p.G = opts.lean_grid_for_testing, cfg.gridDim = dim3(static_cast<unsigned>(p.G));
    }
    // A context may hold fewer co-resident CTAs than the device (MPS with an SM limit, a green
    // context): the launch is then refused, nothing is queued, and split (no co-residency needed)
    // runs instead. A refusal during stream capture would also invalidate the capture, so while
    // capturing lean is only tried with a grid that has launched before on this device (a plan's
    // first, eager run tries it; otherwise the capture records split).
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    kc::check_cuda(cudaStreamIsCapturing(l.stream, &capture), "decode_attention: cudaStreamIsCapturing");
    if (lean_grid_may_launch(l.rt.ordinal(), p.G, capture != cudaStreamCaptureStatusNone)) {
      void* args[] = {&p};
      const cudaError_t err = cudaLaunchKernelExC(&cfg, kern.fn, args);
      g_lean_grids.record(l.rt.ordinal(), p.G, err != cudaErrorCooperativeLaunchTooLarge);
      if (err != cudaErrorCooperativeLaunchTooLarge) {
        kc::check_cuda(err, "decode_attention: lean kernel launch");
        info.strategy = strategy, info.ctas = G, info.ctas_per_sm = occ, info.smem_bytes = smem, info.workspace_bytes = ws;
        return info;
      }
      (void)cudaGetLastError();  // a configuration error: the context is fine
    }
    strategy = DecodeStrategy::split;
  }

  // split / plain: s chunks per head; the 85 % wave-efficiency heuristic over the co-resident CTAs
  // when not given, on the capacity of the block table (the lengths are only on the device).
  int s = 1;
  if (strategy == DecodeStrategy::split)
    s = attrs.num_splits > 0 ? attrs.num_splits
        : auto_splits > 0    ? auto_splits
                             : lean::num_splits_heuristic(B * p.Hv, static_cast<i64>(split_occ) * sms,
                                                          lean::tiles_for_length(p.capacity, p.tile), 128);
  s = static_cast<int>(
      std::max<i64>(1, std::min<i64>(s, std::max<i64>(1, lean::tiles_for_length(p.capacity, p.tile)))));
  const i64 ctas = B * p.Hv * s;
  ENCORE_CU_CHECK(ctas < (i64{1} << 31), unsupported, op, ": ", ctas, " CTAs are too many");
  // The merge runs in the split kernel when its scratch (m and l of every piece) fits the warp areas
  // (fused): on sm_90 inside a cluster of the head's pieces (up to 8, the portable cluster size; the
  // scratch then gets a region of its own after the warp areas, which the other pieces read), else
  // through the global slots and a ticket. Clusters only when every head's cluster is resident at
  // once: a cluster needs s free multiprocessors of one GPC, so fewer CTAs fit than without
  // clusters (B1_H32x32_D128_L8192, 32 clusters of 4 on the H200: 62 us against the ticket's 44).
  const bool fused = s > 1 && !opts.separate_combine &&
                     sizeof(float) * 2 * static_cast<std::size_t>(s) * kern.rb <= warps_region;
  int cluster = 0;
  if (fused && opts.cluster_merge && s <= 8 &&
      B * p.Hv <= resident_clusters(l.rt, kern.fn, threads, cluster_smem(s), s, l.stream)) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    kc::check_cuda(cudaStreamIsCapturing(l.stream, &capture), "decode_attention: cudaStreamIsCapturing");
    const int state = cluster_launch_state(l.rt.ordinal(), kern.fn, s, cluster_smem(s));
    if (state == 1 || (state == 0 && capture == cudaStreamCaptureStatusNone)) cluster = s;
  }
  // The ticket's workspace and counters exist even for a cluster launch, which falls back to them
  // when the device refuses it (a context with fewer SMs than the device, e.g. under MPS).
  const std::size_t ws = s > 1 ? sizeof(float) * static_cast<std::size_t>(ctas) * p.slot_floats : 0;
  StreamState& st = stream_state(l.rt.ordinal(), l.stream, ws, fused ? static_cast<std::size_t>(B * p.Hv) : 0);
  p.mode = kModeSplit, p.splits = s, p.ws = st.ws;
  layout(false, warps_region);  // split's offsets again: a refused lean launch left lean's (larger) ones
  p.off_cscratch = static_cast<int>(split_smem);
  void* args[] = {&p};
  const bool use_pdl = l.rt.programmatic_launch();
  auto launch_split = [&](int cl) {
    p.cluster = cl, p.head_counters = fused && cl == 0 ? st.heads : nullptr;
    pdl::Config c(use_pdl, dim3(static_cast<unsigned>(ctas)), dim3(threads), cl > 1 ? cluster_smem(cl) : split_smem,
                  l.stream);
    if (cl > 1) c.cluster(dim3(static_cast<unsigned>(cl)));
    return cudaLaunchKernelExC(&c.cfg, kern.fn, args);
  };
  if (cluster > 1) {
    const cudaError_t err = launch_split(cluster);
    if (err == cudaErrorInvalidClusterSize || err == cudaErrorLaunchOutOfResources ||
        err == cudaErrorInvalidConfiguration) {
      (void)cudaGetLastError();  // a configuration error: nothing was queued, the context is fine
      cluster_launch_state(l.rt.ordinal(), kern.fn, cluster, cluster_smem(cluster), -1);
      cluster = 0;
    } else {
      kc::check_cuda(err, "decode_attention: split kernel launch (clusters)");
      cluster_launch_state(l.rt.ordinal(), kern.fn, cluster, cluster_smem(cluster), 1);
    }
  }
  if (cluster == 0) kc::check_cuda(launch_split(0), "decode_attention: split kernel launch");
  const std::size_t smem = cluster > 1 ? cluster_smem(cluster) : split_smem;
  if (s > 1 && !fused) {
    const std::size_t csmem = merge_scratch(s);
    const void* comb = kern.rb == 16 ? reinterpret_cast<const void*>(&split_combine_kernel<16>)
                                     : reinterpret_cast<const void*>(&split_combine_kernel<8>);
    ENCORE_CU_CHECK(occupancy(l.rt.ordinal(), comb, kCombineThreads, csmem) >= 1, unsupported, op, ": ", s,
                    " splits are too many for the combine kernel");
    const dim3 grid(static_cast<unsigned>(B * p.Hv),
                    static_cast<unsigned>((kern.rb * D + kCombineElements - 1) / kCombineElements));
    kc::check_cuda(pdl::launch_c(use_pdl, comb, grid, dim3(kCombineThreads), csmem, l.stream, args),
                   "decode_attention: split combine launch");
  }
  info.strategy = s > 1 ? DecodeStrategy::split : DecodeStrategy::plain;
  info.ctas = static_cast<int>(ctas), info.ctas_per_sm = split_occ, info.splits = s, info.smem_bytes = smem;
  info.workspace_bytes = cluster > 1 ? 0 : ws, info.combine_kernel = s > 1 && !fused, info.cluster_merge = cluster > 1;
  return info;
}

void read_stream(const void* data, std::size_t bytes, void* sink, const CudaContext& ctx) {
  kc::Launch l(ctx, "read_stream");
  const std::size_t n = bytes / 16;
  const unsigned blocks = static_cast<unsigned>(l.rt.multiprocessors()) * 4;
  read_stream_kernel<<<blocks, 512, 0, l.stream>>>(static_cast<const uint4*>(data), n, static_cast<unsigned*>(sink));
  kc::check_launch("read_stream");
}

}  // namespace dec

void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& lengths, const DecodeAttentionAttrs& attrs, const Tensor& y,
                      const CudaContext& ctx) {
  dec::decode_attention_impl(q, k_cache, v_cache, block_table, lengths, attrs, y, ctx, dec::Options{});
}

}  // namespace encore::cuda
