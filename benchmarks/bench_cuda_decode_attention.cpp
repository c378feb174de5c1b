// Decode attention on CUDA over a paged bf16 KV cache: `automatic` (what a caller gets), lean
// (stream-K), plain, split s in {heuristic, 4, 16, 64}, and a read-only stream over the same bytes
// (the ceiling), on the decode-attention spec's
// matrix (§7). Every variant is timed as CUDA-graph replays: 20 calls captured in one graph, replayed
// >= 10 times (up to 200), median replay / 20. Caches under 200 MB are rotated: the cache holds
// `copies` block pools (>= 200 MB in all) and call i reads pool i % copies, so calls see cold L2.
//
// Counters: TB/s (KV bytes of the valid tokens / time), frac_ceiling (stream time / this time, same
// bytes and rotation), ceiling_TB/s, kv_MB, ctas (lean G or B*Hv*s), splits, per_sm, strategy (the
// one that ran: 1 plain, 2 split, 3 lean; `automatic` shows its pick), and for lean
// repeat_ok (two runs bitwise equal); rel_err_cpu against cpu::decode_attention for caches <= 32 MB.
// Names: decode/<case>/<variant>, case = B<b>_H<hq>x<hkv>_D<d>_L<len> (or _R<tag> for ragged).
//
// Matrix: the quick set by default (~45 cases, a few minutes of GPU time); ENCORE_DECODE_BENCH=full
// registers the whole matrix (heads x batch 1..64 x 512..512k, KV < 60 GB). Narrow further with
// --benchmark_filter (tools/bench/README.md). tools/bench/sdpa_decode.py times torch SDPA on the
// same cases; tools/bench/decode_table.py merges both into the markdown table.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#if defined(ENCORE_HAVE_CUDA) && __has_include(<cuda_runtime_api.h>)
#define ENCORE_BENCH_CUDA 1
#include <cuda_runtime_api.h>

#include "backends/cpu/kernels.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "cuda_graph_timer.h"
#include "encore/core/tensor.h"
#include "kernels/cuda/decode_attention_internal.h"
#endif

namespace {

using i64 = std::int64_t;

struct DecodeCase {
  int B = 1, Hq = 1, Hkv = 1, D = 128;
  std::vector<i64> lens;
  std::string tag;  // ragged batches: a name instead of the length
  std::string key() const {
    return "B" + std::to_string(B) + "_H" + std::to_string(Hq) + "x" + std::to_string(Hkv) + "_D" + std::to_string(D) +
           (tag.empty() ? "_L" + std::to_string(lens[0]) : "_R" + tag);
  }
  double kv_bytes() const {
    return 4.0 * Hkv * D * static_cast<double>(std::accumulate(lens.begin(), lens.end(), i64{0}));  // K+V, bf16
  }
};

DecodeCase uniform(int B, int Hq, int Hkv, int D, i64 L) { return {B, Hq, Hkv, D, std::vector<i64>(B, L), ""}; }

std::vector<DecodeCase> ragged_cases() {
  DecodeCase a{16, 32, 8, 128, std::vector<i64>(16, 1024), "128kx1+1kx15"};
  a.lens[0] = 131072;
  DecodeCase a1 = a;
  a1.Hq = 8, a1.Hkv = 1;
  DecodeCase b{16, 32, 8, 128, {}, "rand1k-64k"};
  std::mt19937 rng(2024);
  for (int i = 0; i < 16; ++i) b.lens.push_back(std::uniform_int_distribution<i64>(1024, 65536)(rng));
  return {a, a1, b};
}

std::vector<DecodeCase> quick_cases() {
  std::vector<DecodeCase> c;
  // The ANCHORS rows (SDPA graph replays, then the eager table), MHA.
  for (i64 L : {16384, 262144}) c.push_back(uniform(1, 1, 1, 128, L));
  for (i64 L : {16384, 65536, 131072, 262144}) c.push_back(uniform(1, 8, 8, 128, L));
  c.push_back(uniform(2, 4, 4, 128, 131072));
  for (i64 L : {8192, 16384, 65536, 262144}) c.push_back(uniform(1, 32, 32, 128, L));
  c.push_back(uniform(8, 32, 32, 128, 8192));
  c.push_back(uniform(16, 32, 32, 128, 32768));
  c.push_back(uniform(64, 32, 32, 128, 4096));
  for (i64 L : {1024, 4096}) c.push_back(uniform(1, 12, 12, 64, L));
  c.push_back(uniform(4, 12, 12, 64, 1024));
  c.push_back(uniform(16, 12, 12, 64, 2048));
  // GQA and the TP8 70B case (8/1: the stream-K showcase), tails and quantisation probes.
  for (int B : {1, 8})
    for (i64 L : {32768, 131072}) c.push_back(uniform(B, 32, 8, 128, L));
  c.push_back(uniform(1, 32, 8, 128, 4097));
  for (int B : {1, 4})
    for (i64 L : {8192, 131072}) c.push_back(uniform(B, 64, 8, 128, L));
  for (i64 L : {1000, 4096, 16768, 17024, 32768, 131071, 131072, 524288}) c.push_back(uniform(1, 8, 1, 128, L));
  c.push_back(uniform(4, 8, 1, 128, 65536));
  for (int B : {1, 16})
    for (i64 L : {4096, 32768}) c.push_back(uniform(B, 16, 16, 64, L));
  for (const DecodeCase& r : ragged_cases()) c.push_back(r);
  return c;
}

std::vector<DecodeCase> full_cases() {
  struct H {
    int hq, hkv, d;
  };
  const H heads[] = {{12, 12, 64}, {32, 32, 128}, {32, 8, 128}, {64, 8, 128}, {8, 1, 128}, {16, 16, 64}};
  std::vector<DecodeCase> c;
  for (const H& h : heads)
    for (int B : {1, 2, 4, 8, 16, 64})
      for (i64 L : {512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1000, 4097, 131071}) {
        DecodeCase d = uniform(B, h.hq, h.hkv, h.d, L);
        if (d.kv_bytes() < 60e9) c.push_back(d);
      }
  for (const DecodeCase& r : ragged_cases()) c.push_back(r);
  return c;
}

#if defined(ENCORE_BENCH_CUDA)

using namespace encore;

constexpr int kCalls = 20;      // calls per captured graph
constexpr int kBlockSize = 64;  // tokens per cache block

// The device data of the case being benchmarked (rebuilt when the case changes).
struct CaseData {
  std::string key;
  Tensor kv, k, v, q, y, lengths;  // kv [blocks, 2, Hkv, bs, D]: K and V of a block side by side
  std::vector<Tensor> tables;      // one per pool
  int copies = 1;
  i64 pool_blocks = 0;
  double ceiling_s = 0.0;
};

CaseData& case_data(const DecodeCase& c, cuda::CudaRuntime& rt) {
  static CaseData& d = *new CaseData;  // never destroyed: no CUDA frees during static destruction
  if (d.key == c.key()) return d;
  d = CaseData{};
  d.key = c.key();
  d.copies = static_cast<int>(std::clamp(std::ceil(200e6 / c.kv_bytes()), 1.0, static_cast<double>(kCalls)));
  i64 max_blocks = 0;
  for (i64 l : c.lens) {
    const i64 n = (l + kBlockSize - 1) / kBlockSize;
    d.pool_blocks += n, max_blocks = std::max(max_blocks, n);
  }
  const i64 blocks = d.pool_blocks * d.copies;
  d.kv = Tensor::empty({blocks, 2, c.Hkv, kBlockSize, c.D}, DType::BF16, rt.device());
  d.k = d.kv.select(1, 0), d.v = d.kv.select(1, 1);
  // Random bf16 in [-1, 1): a 16 MB host pattern repeated over the cache.
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const i64 pat_elems = std::min<i64>(d.kv.numel(), i64{8} << 20);
  std::vector<BFloat16> pat(static_cast<std::size_t>(pat_elems));
  for (BFloat16& x : pat) x = float_to_bfloat16(dist(rng));
  for (i64 off = 0; off < d.kv.numel(); off += pat_elems)
    cudaMemcpy(static_cast<BFloat16*>(d.kv.data()) + off, pat.data(), 2 * std::min(pat_elems, d.kv.numel() - off),
               cudaMemcpyHostToDevice);
  Tensor qh = Tensor::empty({c.B, 1, static_cast<i64>(c.Hq) * c.D}, DType::F32);
  for (i64 i = 0; i < qh.numel(); ++i) qh.data_ptr<float>()[i] = dist(rng);
  d.q = qh.to(DType::BF16).to(rt.device());
  d.y = Tensor::empty({c.B, 1, static_cast<i64>(c.Hq) * c.D}, DType::BF16, rt.device());
  std::vector<std::int32_t> lens(c.lens.begin(), c.lens.end());
  d.lengths = Tensor::from_vector(lens, {c.B}).to(rt.device());
  for (int copy = 0; copy < d.copies; ++copy) {  // each pool's blocks shuffled over the sequences
    std::vector<std::int32_t> pool(static_cast<std::size_t>(d.pool_blocks));
    std::iota(pool.begin(), pool.end(), static_cast<std::int32_t>(copy * d.pool_blocks));
    std::shuffle(pool.begin(), pool.end(), rng);
    std::vector<std::int32_t> table(static_cast<std::size_t>(c.B * max_blocks), -1);
    std::size_t next = 0;
    for (int b = 0; b < c.B; ++b)
      for (i64 i = 0; i < (c.lens[b] + kBlockSize - 1) / kBlockSize; ++i) table[b * max_blocks + i] = pool[next++];
    d.tables.push_back(Tensor::from_vector(table, {c.B, max_blocks}).to(rt.device()));
  }
  rt.synchronize();
  return d;
}

/// Median seconds per call of `launch(i)` for i = 0..kCalls-1 captured in one graph and replayed.
double time_graph(cuda::CudaRuntime& rt, const std::function<void(int)>& launch) {
  launch(0);  // outside the capture: allocations, attributes
  rt.synchronize();
  bench::CudaGraphTimer timer(rt.stream(), kCalls, launch);
  if (!timer.ok()) return -1.0;
  const double first = timer.per_call() * kCalls;  // seconds per replay
  if (first < 0.0) return -1.0;
  const int n = static_cast<int>(std::clamp(0.25 / std::max(first, 1e-9), 10.0, 200.0));
  std::vector<double> t(static_cast<std::size_t>(n));
  for (double& x : t) x = timer.per_call();
  std::nth_element(t.begin(), t.begin() + n / 2, t.end());
  return t[n / 2];
}

// Variant: -3 automatic, -2 stream ceiling, -1 lean, 0 split with the heuristic, 1 plain, s > 1 split s.
void BM_Decode(benchmark::State& state, const DecodeCase& c, int variant) {
  if (cuda::CudaRuntime::device_count() == 0) {
    state.SkipWithError("no CUDA GPU present");
    return;
  }
  cuda::CudaRuntime& rt = cuda::CudaRuntime::get(Device::cuda(0));
  const cuda::CudaContext ctx = rt.context();
  CaseData& d = case_data(c, rt);
  const std::size_t pool_bytes = static_cast<std::size_t>(d.pool_blocks) * d.kv.nbytes() / d.kv.dim(0);
  static Tensor& sink = *new Tensor(Tensor::empty({4}, DType::I32, rt.device()));
  auto stream_call = [&](int i) {
    cuda::dec::read_stream(static_cast<const char*>(d.kv.data()) + (i % d.copies) * pool_bytes, pool_bytes, sink.data(),
                           ctx);
  };
  if (d.ceiling_s <= 0.0) d.ceiling_s = time_graph(rt, stream_call);

  DecodeAttentionAttrs attrs{.num_heads = c.Hq, .num_kv_heads = c.Hkv};
  attrs.strategy = variant == -3   ? DecodeStrategy::automatic
                   : variant == -1 ? DecodeStrategy::lean
                   : variant == 1  ? DecodeStrategy::plain
                                   : DecodeStrategy::split;
  attrs.num_splits = variant > 1 ? variant : 0;
  // Exploration knobs (not part of the recorded matrix): ENCORE_DECODE_WORKERS caps lean's grid,
  // ENCORE_DECODE_TILE sets the lean/split tile in tokens, ENCORE_DECODE_SEPARATE_COMBINE=1 merges
  // split's pieces in a second kernel (FlashDecoding's combine) instead of in the last piece,
  // ENCORE_DECODE_TICKET_MERGE=1 merges them in the last piece through global memory rather than
  // inside their thread-block cluster.
  cuda::dec::Options opts;
  if (const char* w = std::getenv("ENCORE_DECODE_WORKERS")) opts.workers = std::atoi(w);
  if (const char* t = std::getenv("ENCORE_DECODE_TILE")) opts.tile_tokens = std::atoll(t);
  if (const char* c = std::getenv("ENCORE_DECODE_SEPARATE_COMBINE")) opts.separate_combine = std::string(c) == "1";
  if (const char* c = std::getenv("ENCORE_DECODE_TICKET_MERGE")) opts.cluster_merge = std::string(c) != "1";
  cuda::dec::LaunchInfo info;
  auto decode_call = [&](int i) {
    info = cuda::dec::decode_attention_impl(d.q, d.k, d.v, d.tables[i % d.copies], d.lengths, attrs, d.y, ctx, opts);
  };
  double t = 0.0;
  for (auto _ : state) {
    t = variant == -2 ? d.ceiling_s : time_graph(rt, decode_call);
    if (t <= 0.0) {
      state.SkipWithError("CUDA graph capture failed");
      return;
    }
    state.SetIterationTime(t);
  }
  if (cudaGetLastError() != cudaSuccess) {
    state.SkipWithError("a CUDA call failed");
    return;
  }
  const double bytes = c.kv_bytes();
  state.counters["TB/s"] = bytes / t * 1e-12;
  state.counters["frac_ceiling"] = d.ceiling_s / t;
  state.counters["ceiling_TB/s"] = bytes / d.ceiling_s * 1e-12;
  state.counters["kv_MB"] = bytes * 1e-6;
  state.counters["copies"] = d.copies;
  for (auto [name, v] : {std::pair<const char*, double>{"B", c.B},
                         {"Hq", c.Hq},
                         {"Hkv", c.Hkv},
                         {"D", c.D},
                         {"L", static_cast<double>(*std::max_element(c.lens.begin(), c.lens.end()))}})
    state.counters[name] = v;
  if (variant != -2) {
    state.counters["ctas"] = info.ctas;
    state.counters["splits"] = info.splits;
    state.counters["strategy"] = static_cast<double>(info.strategy);
    state.counters["per_sm"] = info.ctas_per_sm;
    state.counters["tile"] = static_cast<double>(info.tile);
    state.counters["ws_MB"] = static_cast<double>(info.workspace_bytes) * 1e-6;
  }
  if (variant == -1) {  // bitwise repeatability of lean
    decode_call(0);
    const Tensor a = d.y.to(Device::cpu());
    decode_call(0);
    const Tensor b = d.y.to(Device::cpu());
    state.counters["repeat_ok"] = std::memcmp(a.data(), b.data(), a.nbytes()) == 0 ? 1 : 0;
  }
  if (variant != -2 && bytes <= 32e6) {  // accuracy against the CPU kernel (pool 0)
    decode_call(0);
    const Tensor got = d.y.to(Device::cpu()).to(DType::F32);
    Tensor want = Tensor::empty(got.shape(), DType::F32);
    const Tensor kvh = d.kv.slice(0, 0, d.pool_blocks).to(Device::cpu());  // pool 0 = table 0
    cpu::decode_attention(d.q.to(Device::cpu()), kvh.select(1, 0), kvh.select(1, 1), d.tables[0].to(Device::cpu()),
                          d.lengths.to(Device::cpu()), attrs, want, cpu::CpuContext{8});
    double num = 0, den = 0;
    for (i64 i = 0; i < got.numel(); ++i) {
      const double e = got.data_ptr<float>()[i] - want.data_ptr<float>()[i];
      num += e * e, den += static_cast<double>(want.data_ptr<float>()[i]) * want.data_ptr<float>()[i];
    }
    state.counters["rel_err_cpu"] = std::sqrt(num / std::max(den, 1e-300));
  }
  state.SetLabel(c.key());
}

#else

void BM_Decode(benchmark::State& state, const DecodeCase&, int) {
  state.SkipWithError("built without the CUDA backend (or without CUDA headers for the benchmarks)");
}

#endif

const bool registered = [] {
  const char* env = std::getenv("ENCORE_DECODE_BENCH");
  const bool full = env != nullptr && std::string(env) == "full";
  const std::pair<const char*, int> variants[] = {{"stream", -2},    {"auto", -3},  {"lean", -1},
                                                  {"plain", 1},      {"split_auto", 0}, {"split4", 4},
                                                  {"split8", 8},     {"split16", 16},   {"split64", 64}};
  for (const DecodeCase& c : full ? full_cases() : quick_cases())
    for (auto [name, v] : variants)
      benchmark::RegisterBenchmark(("decode/" + c.key() + "/" + name).c_str(),
                                   [c, v = v](benchmark::State& st) { BM_Decode(st, c, v); })
          ->UseManualTime()
          ->Iterations(1)
          ->Unit(benchmark::kMicrosecond);
  return true;
}();

}  // namespace
