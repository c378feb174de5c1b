// Fused CPU attention (encore::cpu::attention) against an unfused pipeline in the same binary:
// oneDNN batched matmul Q K^T (scale folded in), oneDNN softmax, oneDNN matmul P V, reading the
// same strided views of a fused QKV projection [B, T, 3*H*D] and writing [B, T, H*D].
//
// Shapes: ViT-B (197 tokens, 12 heads x 64), 1024 tokens x 12 x 64, decode (Tq = 1, Tk = 1024 /
// 4096, 12 x 64). Arguments: {Tq, Tk, threads} and, for the fused kernel, its loops (path: 0 the
// best this CPU has, 1 AVX2 even on AVX-512, 2 portable). Counters: FLOP/s against the
// 4·B·H·Tq·Tk·D floor, and on the fused runs `vs_unfused` = unfused time / fused time, each the
// fastest of several runs made before the timed loop (robust on a shared machine).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>

#include "backends/cpu/kernels.h"
#include "encore/core/tensor.h"
#include "kernels/cpu/attention_internal.h"

using namespace encore;

namespace {

constexpr int kHeads = 12, kDim = 64;

struct Qkv {
  Tensor q_buf, kv_buf;  // [1, Tq, 3HD] (q slice used) and [1, Tk, 3HD] (k, v slices)
  Tensor q, k, v, y;
};

Qkv make_qkv(std::int64_t Tq, std::int64_t Tk) {
  const std::int64_t HD = kHeads * kDim;
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Qkv s;
  s.q_buf = Tensor::empty({1, Tq, 3 * HD}, DType::F32);
  s.kv_buf = Tensor::empty({1, Tk, 3 * HD}, DType::F32);
  for (Tensor* t : {&s.q_buf, &s.kv_buf}) {
    float* p = t->data_ptr<float>();
    for (std::int64_t i = 0; i < t->numel(); ++i) p[i] = dist(rng);
  }
  s.q = s.q_buf.slice(2, 0, HD);
  s.k = s.kv_buf.slice(2, HD, 2 * HD);
  s.v = s.kv_buf.slice(2, 2 * HD, 3 * HD);
  s.y = Tensor::empty({1, Tq, HD}, DType::F32);
  return s;
}

// The unfused reference pipeline on oneDNN, heads as the matmul batch dimension.
struct Unfused {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::matmul qk, pv;
  dnnl::softmax_forward sm;
  dnnl::memory q_m, k_m, v_m, s_m, y_m;
  std::string impl;

  Unfused(const Qkv& s, std::int64_t Tq, std::int64_t Tk) {
    using dims = dnnl::memory::dims;
    using dt = dnnl::memory::data_type;
    const std::int64_t H = kHeads, D = kDim, ld = 3 * H * D;
    const dnnl::memory::desc q_md(dims{H, Tq, D}, dt::f32, dims{D, ld, 1});
    const dnnl::memory::desc kt_md(dims{H, D, Tk}, dt::f32, dims{D, 1, ld});  // K^T through strides
    const dnnl::memory::desc v_md(dims{H, Tk, D}, dt::f32, dims{D, ld, 1});
    const dnnl::memory::desc s_md(dims{H, Tq, Tk}, dt::f32, dnnl::memory::format_tag::abc);
    const dnnl::memory::desc y_md(dims{H, Tq, D}, dt::f32, dims{D, H * D, 1});
    dnnl::primitive_attr scale_attr;
    scale_attr.set_output_scales(0, {1.0f / std::sqrt(static_cast<float>(D))});
    const dnnl::matmul::primitive_desc qk_pd(dnnl::matmul::desc(q_md, kt_md, s_md), scale_attr, eng);
    const dnnl::softmax_forward::primitive_desc sm_pd(
        dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, s_md, 2), eng);
    const dnnl::matmul::primitive_desc pv_pd(dnnl::matmul::desc(s_md, v_md, y_md), eng);
    qk = dnnl::matmul(qk_pd), sm = dnnl::softmax_forward(sm_pd), pv = dnnl::matmul(pv_pd);
    impl = std::string(qk_pd.impl_info_str()) + "," + sm_pd.impl_info_str() + "," + pv_pd.impl_info_str();
    q_m = dnnl::memory(q_md, eng, s.q.data());
    k_m = dnnl::memory(kt_md, eng, s.k.data());
    v_m = dnnl::memory(v_md, eng, s.v.data());
    s_m = dnnl::memory(s_md, eng);
    y_m = dnnl::memory(y_md, eng, s.y.data());
  }
  void run() {
    qk.execute(strm, {{DNNL_ARG_SRC, q_m}, {DNNL_ARG_WEIGHTS, k_m}, {DNNL_ARG_DST, s_m}});
    sm.execute(strm, {{DNNL_ARG_SRC, s_m}, {DNNL_ARG_DST, s_m}});
    pv.execute(strm, {{DNNL_ARG_SRC, s_m}, {DNNL_ARG_WEIGHTS, v_m}, {DNNL_ARG_DST, y_m}});
    strm.wait();
  }
};

double flops(std::int64_t Tq, std::int64_t Tk) { return 4.0 * kHeads * static_cast<double>(Tq) * Tk * kDim; }

void set_counters(benchmark::State& state, std::int64_t Tq, std::int64_t Tk) {
  state.counters["FLOP/s"] = benchmark::Counter(flops(Tq, Tk), benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

// Fastest of `reps` runs: the least disturbed by other load on a shared machine.
double best_seconds(const std::function<void()>& fn, int reps) {
  fn();  // warm-up
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void BM_FusedAttention(benchmark::State& state) {
  const std::int64_t Tq = state.range(0), Tk = state.range(1);
  const int threads = static_cast<int>(state.range(2)), path = static_cast<int>(state.range(3));
  Qkv s = make_qkv(Tq, Tk);
  const AttentionAttrs attrs{.num_heads = kHeads};
  const cpu::CpuContext ctx{threads};
  omp_set_num_threads(threads);
  Unfused unfused(s, Tq, Tk);
  const cpu::attn::Options opts{.force_portable = path == 2, .force_avx2 = path == 1};
  auto fused = [&] { cpu::attn::attention_impl(s.q, s.k, s.v, Tensor(), attrs, s.y, ctx, opts); };
  const int reps = std::max(5, static_cast<int>(2e9 / (flops(Tq, Tk) * 20)));
  const double t_unfused = best_seconds([&] { unfused.run(); }, reps);
  const double t_fused = best_seconds(fused, reps);
  for (auto _ : state) {
    fused();
    benchmark::ClobberMemory();
  }
  set_counters(state, Tq, Tk);
  state.counters["vs_unfused"] = t_unfused / t_fused;
}

void BM_UnfusedOneDnn(benchmark::State& state) {
  const std::int64_t Tq = state.range(0), Tk = state.range(1);
  omp_set_num_threads(static_cast<int>(state.range(2)));
  Qkv s = make_qkv(Tq, Tk);
  Unfused unfused(s, Tq, Tk);
  for (auto _ : state) unfused.run();
  set_counters(state, Tq, Tk);
  state.SetLabel(unfused.impl);
}

void shapes(benchmark::internal::Benchmark* b, bool paths) {
  std::vector<std::string> names{"Tq", "Tk", "threads"};
  if (paths) names.emplace_back("path");
  b->ArgNames(names);
  for (int threads : {1, 2})
    for (auto [tq, tk] : {std::pair{197, 197}, std::pair{1024, 1024}, std::pair{1, 1024}, std::pair{1, 4096}}) {
      if (!paths) b->Args({tq, tk, threads});
      else
        for (int path : {0, 1, 2}) b->Args({tq, tk, threads, path});
    }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_FusedAttention)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, true); });
BENCHMARK(BM_UnfusedOneDnn)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, false); });
