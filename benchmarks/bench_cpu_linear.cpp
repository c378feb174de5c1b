// encore's CPU linear against the best raw oneDNN matmul of the same shape.
//
//   BM_Linear/M/K/N         encore::cpu::linear, f32, weights prepacked (by the first call), no bias
//   BM_OneDnnMatmul/M/K/N   raw oneDNN: dense src, weights in `any` format reordered once outside
//                           the loop, one primitive, execute + wait per iteration
//   BM_LinearBf16 / BM_OneDnnMatmulBf16: the same with bf16 x/w/y (encore's default bf16 policy
//                           vs oneDNN's native bf16 kernel)
//   BM_LinearStrided/M/K/N/pass: x a column slice (row stride K + 64); pass = 1 hands the stride to
//                           oneDNN, 0 copies the rows first (Tuning::linear_strided_rows)
//   BM_LinearBiasGelu       with the fused bias + GELU epilogue
//   BM_LinearNewM           first call for a new M: primitive creation + one run (packing excluded)
//   BM_LinearBf16Mode/M/K/N/native: bf16 linear with Bf16Mode::native (1) or via_f32 (0)
//   BM_DecodeLinear/M/K/N/rows: decode-sized f32 linear (GPT-2 Conv1D layout, bias) cycling over
//                           distinct weights (~512 MiB, so they stream from memory as in a decode
//                           step) on the few-rows kernel (rows = 1, kernels/cpu/linear_rows.h, its
//                           AVX-512 or AVX2 loop at every M) or oneDNN (0); GB/s = weight bytes
//                           read per second
//   BM_LinearInt8/M/K/N/fallback: cpu::linear_int8 (u8 x s8, per-channel scales, bias, f32 out) on
//                           oneDNN's int8 kernel where its products are exact (VNNI), else, and
//                           always with fallback = 1, the exact fallback for CPUs without VNNI;
//                           BM_LinearF32AtInt8Shapes: f32 linear at the same shapes, the yardstick
// Threads: $ENCORE_BENCH_THREADS or 2. GFLOPS counts 2*M*K*N per iteration.
// scripts/bench_linear_ratio.py runs this binary and prints encore / oneDNN per shape.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_context.h"
#include "backends/cpu/onednn_int8.h"

using namespace encore;

namespace {

int bench_threads() {
  const char* env = std::getenv("ENCORE_BENCH_THREADS");
  return env && std::atoi(env) > 0 ? std::atoi(env) : 2;
}

Tensor random(const Shape& shape, DType dtype, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Tensor t = Tensor::empty(shape, DType::F32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data_ptr<float>()[i] = dist(rng);
  return dtype == DType::F32 ? t : t.to(dtype);
}

void set_flops(benchmark::State& state, std::int64_t M, std::int64_t K, std::int64_t N) {
  state.counters["GFLOPS"] =
      benchmark::Counter(2.0 * static_cast<double>(M * K * N) * 1e-9 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void run_linear(benchmark::State& state, DType dtype, Activation act, bool bias) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const Tensor x = random({M, K}, dtype, 1), w = random({N, K}, dtype, 2);
  const Tensor b = bias ? random({N}, DType::F32, 3) : Tensor();
  const Tensor y = Tensor::empty({M, N}, dtype);
  const cpu::CpuContext ctx{bench_threads()};
  const LinearAttrs attrs{.layout = WeightLayout::out_in, .activation = act};
  cpu::linear(x, w, b, attrs, y, ctx);  // creates the primitive and packs the weights
  for (auto _ : state) cpu::linear(x, w, b, attrs, y, ctx);
  set_flops(state, M, K, N);
}

void BM_Linear(benchmark::State& state) { run_linear(state, DType::F32, Activation::none, false); }
void BM_LinearBf16(benchmark::State& state) { run_linear(state, DType::BF16, Activation::none, false); }
void BM_LinearBiasGelu(benchmark::State& state) { run_linear(state, DType::F32, Activation::gelu, true); }

// The one-off cost of a new M: primitive creation with kernel generation (weights already
// packed) plus one run.
void BM_LinearNewM(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const Tensor x = random({M, K}, DType::F32, 1), w = random({N, K}, DType::F32, 2);
  const Tensor y = Tensor::empty({M, N}, DType::F32);
  const cpu::CpuContext ctx{bench_threads()};
  cpu::linear(x, w, Tensor(), LinearAttrs{}, y, ctx);
  for (auto _ : state) {
    cpu::onednn::PrimitiveCache::instance().clear();
    const int capacity = dnnl::get_primitive_cache_capacity();
    dnnl::set_primitive_cache_capacity(0);  // flushes oneDNN's own cache of generated kernels too
    dnnl::set_primitive_cache_capacity(capacity);
    cpu::linear(x, w, Tensor(), LinearAttrs{}, y, ctx);
  }
}

// bf16 linear under each policy, for the small-M threshold of Bf16Mode::automatic.
void BM_LinearBf16Mode(benchmark::State& state) {
  using cpu::onednn::Bf16Mode;
  const Bf16Mode saved = cpu::onednn::bf16_mode();
  cpu::onednn::set_bf16_mode(state.range(3) != 0 ? Bf16Mode::native : Bf16Mode::via_f32);
  run_linear(state, DType::BF16, Activation::none, false);
  cpu::onednn::set_bf16_mode(saved);
}

void BM_LinearStrided(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  cpu::onednn::tuning().linear_strided_rows = state.range(3) != 0;
  const Tensor x = random({M, K + 64}, DType::F32, 1).slice(1, 32, 32 + K);
  const Tensor w = random({N, K}, DType::F32, 2);
  const Tensor y = Tensor::empty({M, N}, DType::F32);
  const cpu::CpuContext ctx{bench_threads()};
  cpu::linear(x, w, Tensor(), LinearAttrs{}, y, ctx);
  for (auto _ : state) cpu::linear(x, w, Tensor(), LinearAttrs{}, y, ctx);
  cpu::onednn::tuning().linear_strided_rows = true;
  set_flops(state, M, K, N);
}

// The best raw oneDNN can do for y = x W^T: weights reordered once into the layout the primitive
// asks for, nothing but execute() in the loop.
void run_raw(benchmark::State& state, dnnl::memory::data_type dt) {
  using tag = dnnl::memory::format_tag;
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(bench_threads());
  {
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    dnnl::stream s(eng);
    const DType et = dt == dnnl::memory::data_type::f32 ? DType::F32 : DType::BF16;
    const Tensor x = random({M, K}, et, 1), w = random({N, K}, et, 2);
    const Tensor y = Tensor::empty({M, N}, et);
    const dnnl::memory::desc src({M, K}, dt, tag::ab), dst({M, N}, dt, tag::ab);
    const dnnl::memory::desc w_user({K, N}, dt, tag::ba), w_any({K, N}, dt, tag::any);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, w_any, dst), eng);
    dnnl::memory w_packed(pd.weights_desc(), eng);
    dnnl::memory w_mem(w_user, eng, w.data());
    dnnl::reorder(w_mem, w_packed).execute(s, w_mem, w_packed);
    s.wait();
    dnnl::matmul prim(pd);
    dnnl::memory x_mem(src, eng, x.data()), y_mem(dst, eng, y.data());
    const std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_packed}, {DNNL_ARG_DST, y_mem}};
    prim.execute(s, args);
    s.wait();
    for (auto _ : state) {
      prim.execute(s, args);
      s.wait();
    }
    state.SetLabel(pd.impl_info_str());
  }
  omp_set_num_threads(saved);
  set_flops(state, M, K, N);
}

void BM_DecodeLinear(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  // rows = 1: the kernel at every M here, also past the AVX2 loop's default limit (16 rows).
  cpu::onednn::Tuning& tuning = cpu::onednn::tuning();
  const std::int64_t saved = tuning.linear_rows_max, saved_avx2 = tuning.linear_rows_max_avx2;
  tuning.linear_rows_max = tuning.linear_rows_max_avx2 = state.range(3) != 0 ? 32 : 0;
  const std::int64_t bytes = K * N * 4, copies = std::max<std::int64_t>(2, (std::int64_t{512} << 20) / bytes);
  std::vector<Tensor> ws;
  for (std::int64_t i = 0; i < copies; ++i) ws.push_back(random({K, N}, DType::F32, static_cast<std::uint32_t>(10 + i)));
  const Tensor x = random({M, K}, DType::F32, 1), b = random({N}, DType::F32, 3);
  const Tensor y = Tensor::empty({M, N}, DType::F32);
  const cpu::CpuContext ctx{bench_threads()};
  const LinearAttrs attrs{.layout = WeightLayout::in_out};
  for (const Tensor& w : ws) cpu::linear(x, w, b, attrs, y, ctx);  // packs every copy
  std::size_t i = 0;
  for (auto _ : state) cpu::linear(x, ws[i++ % ws.size()], b, attrs, y, ctx);
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * 1e-9 * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate);
  tuning.linear_rows_max = saved, tuning.linear_rows_max_avx2 = saved_avx2;
}

void BM_LinearInt8(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> byte(0, 255);
  Tensor x = Tensor::empty({M, K}, DType::U8), w = Tensor::empty({N, K}, DType::I8);
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data_ptr<std::uint8_t>()[i] = static_cast<std::uint8_t>(byte(rng));
  for (std::int64_t i = 0; i < w.numel(); ++i) w.data_ptr<std::int8_t>()[i] = static_cast<std::int8_t>(byte(rng) - 128);
  std::vector<float> scales(static_cast<std::size_t>(N));
  for (std::size_t n = 0; n < scales.size(); ++n) scales[n] = 0.001f * static_cast<float>(1 + n % 7);
  const Tensor b = random({N}, DType::F32, 3), y = Tensor::empty({M, N}, DType::F32);
  const cpu::CpuContext ctx{bench_threads()};
  cpu::force_int8_fallback_for_testing(state.range(3) != 0);
  cpu::linear_int8(x, 0.02f, 128, w, scales, b, y, 1.0f, 0, ctx);  // primitive and packed weights
  for (auto _ : state) cpu::linear_int8(x, 0.02f, 128, w, scales, b, y, 1.0f, 0, ctx);
  cpu::force_int8_fallback_for_testing(false);
  set_flops(state, M, K, N);
}
void BM_LinearF32AtInt8Shapes(benchmark::State& state) { run_linear(state, DType::F32, Activation::none, true); }

void BM_OneDnnMatmul(benchmark::State& state) { run_raw(state, dnnl::memory::data_type::f32); }
void BM_OneDnnMatmulBf16(benchmark::State& state) { run_raw(state, dnnl::memory::data_type::bf16); }

void shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t M : {1, 16, 197, 1024})
    for (auto [K, N] : {std::pair<std::int64_t, std::int64_t>{768, 768}, {768, 2304}, {768, 3072}, {3072, 768}})
      b->Args({M, K, N});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void bf16_mode_shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t M : {1, 2, 4, 8, 16})
    for (std::int64_t mode : {1, 0}) b->Args({M, 768, 768, mode})->Args({M, 768, 3072, mode});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void strided_shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t M : {1, 16, 197, 1024})
    for (std::int64_t pass : {1, 0}) b->Args({M, 768, 768, pass})->Args({M, 768, 3072, pass});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

// Segmenter's linears (ViT-S: 384 wide, ViT-B: 768) over 1024 patches (512 px) and 197 tokens.
void int8_shapes(benchmark::internal::Benchmark* b, bool with_path) {
  for (std::int64_t M : {197, 1024})
    for (auto [K, N] : {std::pair<std::int64_t, std::int64_t>{384, 1152}, {384, 1536}, {1536, 384}, {768, 3072},
                        {3072, 768}}) {
      if (!with_path) b->Args({M, K, N});
      else
        for (std::int64_t fallback : {0, 1}) b->Args({M, K, N, fallback});
    }
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_Linear)->Apply(shapes);
BENCHMARK(BM_OneDnnMatmul)->Apply(shapes);
BENCHMARK(BM_LinearBf16)->Apply(shapes);
BENCHMARK(BM_OneDnnMatmulBf16)->Apply(shapes);
BENCHMARK(BM_LinearStrided)->Apply(strided_shapes);
BENCHMARK(BM_LinearBf16Mode)->Apply(bf16_mode_shapes);
BENCHMARK(BM_DecodeLinear)->Apply([](benchmark::internal::Benchmark* b) {
  for (std::int64_t M : {1, 4, 8, 16, 32})
    for (auto [K, N] : {std::pair<std::int64_t, std::int64_t>{768, 2304}, {3072, 768}})
      for (std::int64_t rows : {1, 0}) b->Args({M, K, N, rows});
  b->ArgNames({"M", "K", "N", "rows"})->UseRealTime()->Unit(benchmark::kMicrosecond);
});
BENCHMARK(BM_LinearNewM)->Args({16, 768, 768})->Args({197, 768, 3072})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LinearBiasGelu)->Args({197, 768, 3072})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LinearInt8)->Apply([](benchmark::internal::Benchmark* b) { int8_shapes(b, true); });
BENCHMARK(BM_LinearF32AtInt8Shapes)->Apply([](benchmark::internal::Benchmark* b) { int8_shapes(b, false); });
