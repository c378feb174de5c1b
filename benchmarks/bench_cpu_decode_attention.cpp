// CPU decode attention over a paged KV cache: lean (stream-K) vs split (FlashDecoding) vs plain,
// B = 1, Hq = Hkv = H heads x L tokens, D 64/128, f32/bf16 caches, block size 64, 2 threads; plus
// GQA 8/1 rows and a ragged batch (one 16k sequence + three 1k) where `auto` is timed too.
//
// Counters: bytes_per_second = KV bytes read / time (K and V, each byte once), and `of_read_bw`
// = that over the read-only bandwidth measured in this binary (BM_ReadBandwidth: an AVX-512 sum
// over a 1 GiB buffer with the same thread count; the figure used is the best of a few passes,
// taken once before the first decode benchmark).
//
// KV comes from DRAM, not from the 260 MB L3: every iteration uses the next of several disjoint
// block tables over a 2 x 1 GiB pool, so successive calls never touch the same bytes until the
// pool wraps. One pool serves both dtypes: each f32 word holds two bf16 values in its halves, and
// both readings are small normal numbers.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/cpu/kernels.h"
#include "encore/core/tensor.h"
#include "kernels/cpu/cpu_features.h"

using namespace encore;
using i64 = std::int64_t;

namespace {

constexpr int kThreads = 2;
constexpr int kBlock = 64;
constexpr std::size_t kPoolBytes = std::size_t{1} << 30;  // per K and per V

// ---- read-only bandwidth ----------------------------------------------------------------------

__attribute__((target("avx512f"))) float sum_avx512(const float* p, std::size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::size_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

float sum_portable(const float* p, std::size_t n) {
  float a[8] = {};
  for (std::size_t i = 0; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) a[k] += p[i + k];
  return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

// One pass of every thread summing its contiguous share of the buffer.
float read_pass(const float* p, std::size_t n, int threads) {
  float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    const std::size_t t = static_cast<std::size_t>(omp_get_thread_num()), nt = static_cast<std::size_t>(omp_get_num_threads());
    const std::size_t b = n * t / nt / 64 * 64, e = n * (t + 1) / nt / 64 * 64;
    total += cpu::has_avx512() ? sum_avx512(p + b, e - b) : sum_portable(p + b, e - b);
  }
  return total;
}

const float* read_buffer() {
  static const Tensor buf = [] {
    Tensor t = Tensor::empty({static_cast<i64>(kPoolBytes / 4)}, DType::F32);
    std::fill_n(t.data_ptr<float>(), t.numel(), 1.0f);
    return t;
  }();
  return buf.data_ptr<float>();
}

void BM_ReadBandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const float* p = read_buffer();
  for (auto _ : state) benchmark::DoNotOptimize(read_pass(p, kPoolBytes / 4, threads));
  state.SetBytesProcessed(static_cast<i64>(state.iterations()) * static_cast<i64>(kPoolBytes));
}
BENCHMARK(BM_ReadBandwidth)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// Best of five passes, bytes per second, with kThreads threads.
double read_bandwidth() {
  static const double bw = [] {
    const float* p = read_buffer();
    double best = 0;
    for (int i = 0; i < 5; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(read_pass(p, kPoolBytes / 4, kThreads));
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, static_cast<double>(kPoolBytes) / s);
    }
    return best;
  }();
  return bw;
}

// ---- decode attention -------------------------------------------------------------------------

struct Pool {
  Tensor k, v;  // raw 1 GiB each
};

const Pool& pool() {
  static const Pool p = [] {
    Pool r;
    r.k = Tensor::empty({static_cast<i64>(kPoolBytes / 4)}, DType::F32);
    r.v = Tensor::empty({static_cast<i64>(kPoolBytes / 4)}, DType::F32);
    for (Tensor* t : {&r.k, &r.v}) {
      auto* w = static_cast<std::uint32_t*>(t->data());
      for (i64 i = 0; i < t->numel(); ++i) {
        const float hi = 0.25f + static_cast<float>(i % 7) * 0.125f, lo = 0.5f - static_cast<float>(i % 5) * 0.125f;
        std::uint32_t hb, lb;
        std::memcpy(&hb, &hi, 4), std::memcpy(&lb, &lo, 4);
        w[i] = (hb & 0xffff0000u) | (lb >> 16);
      }
    }
    return r;
  }();
  return p;
}

// One timed case: B sequences of the given lengths, Hq/Hkv heads, D, dtype, a strategy.
void run_case(benchmark::State& state, DecodeStrategy strategy, int Hq, int Hkv, const std::vector<i64>& lens, i64 D,
              DType dt) {
  const int B = static_cast<int>(lens.size());
  const i64 es = static_cast<i64>(dtype_size(dt));
  const i64 block_bytes = Hkv * kBlock * D * es, nb_total = static_cast<i64>(kPoolBytes) / block_bytes;
  i64 nb_call = 0, max_blocks = 0, tokens = 0;
  for (i64 L : lens) nb_call += (L + kBlock - 1) / kBlock, max_blocks = std::max(max_blocks, (L + kBlock - 1) / kBlock), tokens += L;
  const i64 copies = std::max<i64>(1, nb_total / nb_call);
  const Pool& p = pool();
  const Tensor kc = Tensor::from_blob(p.k.data(), {nb_total, Hkv, kBlock, D}, dt);
  const Tensor vc = Tensor::from_blob(p.v.data(), {nb_total, Hkv, kBlock, D}, dt);
  std::vector<Tensor> tables;  // disjoint block sets, used in turn
  for (i64 c = 0; c < std::min<i64>(copies, 4096); ++c) {
    Tensor t = Tensor::empty({B, max_blocks}, DType::I32);
    std::fill_n(t.data_ptr<std::int32_t>(), t.numel(), -1);
    i64 next = c * nb_call;
    for (int b = 0; b < B; ++b)
      for (i64 i = 0; i < (lens[b] + kBlock - 1) / kBlock; ++i)
        t.data_ptr<std::int32_t>()[b * max_blocks + i] = static_cast<std::int32_t>(next++);
    tables.push_back(t);
  }
  std::vector<std::int32_t> l32(lens.begin(), lens.end());
  const Tensor lengths = Tensor::from_vector<std::int32_t>(l32, {B});
  Tensor q = Tensor::empty({B, 1, Hq * D}, dt), y = Tensor::empty({B, 1, Hq * D}, dt);
  q.fill(0.01);
  const DecodeAttentionAttrs attrs{.num_heads = Hq, .num_kv_heads = Hkv, .strategy = strategy};
  const cpu::CpuContext ctx{kThreads};
  const double ceiling = read_bandwidth();
  std::size_t next = 0;
  for (auto _ : state) {
    cpu::decode_attention(q, kc, vc, tables[next], lengths, attrs, y, ctx);
    next = next + 1 == tables.size() ? 0 : next + 1;
  }
  const double bytes = 2.0 * Hkv * static_cast<double>(tokens) * static_cast<double>(D * es);
  state.SetBytesProcessed(static_cast<i64>(bytes * static_cast<double>(state.iterations())));
  state.counters["of_read_bw"] = benchmark::Counter(bytes / ceiling, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["read_GBps"] = ceiling / 1e9;
}

const char* strategy_name(i64 s) {
  static const char* names[] = {"auto", "plain", "split", "lean"};
  return names[s];
}

// Args: strategy (0 auto, 1 plain, 2 split, 3 lean), Hq, Hkv, L, D, dtype (0 f32, 1 bf16).
void BM_Decode(benchmark::State& state) {
  const DType dt = state.range(5) ? DType::BF16 : DType::F32;
  run_case(state, static_cast<DecodeStrategy>(state.range(0)), static_cast<int>(state.range(1)),
           static_cast<int>(state.range(2)), {state.range(3)}, state.range(4), dt);
  state.SetLabel(std::string(strategy_name(state.range(0))) + " H" + std::to_string(state.range(1)) + "x" +
                 std::to_string(state.range(2)) + " L" + std::to_string(state.range(3)) + " D" +
                 std::to_string(state.range(4)) + (dt == DType::BF16 ? " bf16" : " f32"));
}

// A ragged batch: one 16k sequence and three of 1k, GQA 8/1 heads (D 128). Args: strategy, dtype.
void BM_DecodeRagged(benchmark::State& state) {
  const DType dt = state.range(1) ? DType::BF16 : DType::F32;
  run_case(state, static_cast<DecodeStrategy>(state.range(0)), 8, 1, {16384, 1024, 1024, 1024}, 128, dt);
  state.SetLabel(std::string(strategy_name(state.range(0))) + " B4 ragged H8x1 D128" + (dt == DType::BF16 ? " bf16" : " f32"));
}
BENCHMARK(BM_DecodeRagged)->ArgsProduct({{3, 2, 1, 0}, {0, 1}})->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(0.2);

void decode_args(benchmark::internal::Benchmark* b) {
  for (int dt : {0, 1})
    for (i64 D : {64, 128})
      for (i64 L : {1024, 4096, 16384, 32768})
        for (i64 H : {1, 2, 3, 4, 8, 16})
          for (int s : {3, 2, 1}) b->Args({s, H, H, L, D, dt});
  for (int dt : {0, 1})  // GQA 8/1 (a 70B-class model at TP8): one KV head
    for (i64 L : {4096, 32768})
      for (int s : {3, 2, 1}) b->Args({s, 8, 1, L, 128, dt});
}
BENCHMARK(BM_Decode)->Apply(decode_args)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(0.2);

}  // namespace
