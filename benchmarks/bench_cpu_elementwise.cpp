// Throughput of the hot pointwise / norm kernels at ViT-B/16 (197 tokens, 768 wide, 12 heads) and
// GPT-2 sizes. Bytes processed = bytes read + bytes written, so bytes/s compares with memory
// bandwidth directly.
//
// Memory floor (f32): layer_norm [197,768] moves 2 x 605 KB = 1.2 MB, [1024,768] 6.3 MB; gelu
// [197,3072] 4.8 MB; softmax [2364,197] 3.7 MB; add [197,768] 1.8 MB. At ~20 GB/s per core of
// DRAM bandwidth that is 60 us / 315 us / 240 us / 185 us / 90 us. The small ones stay in L2 across
// iterations (2 MB/core here), where the floor is ~3-4x lower, so a kernel that reaches 40-60 GB/s
// on one core is at the cache limit; gelu/gelu_tanh are compute-bound (polynomial erf/exp) instead.
#include <benchmark/benchmark.h>

#include <random>

#include "backends/cpu/kernels.h"

using namespace encore;

namespace {

Tensor random(const Shape& shape, DType dt) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  float* p = t.data_ptr<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return dt == DType::F32 ? t : t.to(dt);
}

cpu::CpuContext ctx_of(const benchmark::State& state) { return cpu::CpuContext{static_cast<int>(state.range(0))}; }

void bytes(benchmark::State& state, const Tensor& t, int tensors_moved) {
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(t.nbytes()) * tensors_moved);
}

void layer_norm(benchmark::State& state, std::int64_t rows, DType dt) {
  const Tensor x = random({rows, 768}, dt), y = Tensor::empty({rows, 768}, dt);
  const Tensor g = random({768}, dt), b = random({768}, dt);
  const auto ctx = ctx_of(state);
  for (auto _ : state) cpu::layer_norm(x, g, b, LayerNormAttrs{}, y, ctx);
  bytes(state, x, 2);
}

void activation(benchmark::State& state, Activation act, DType dt) {
  const Tensor x = random({197, 3072}, dt), y = Tensor::empty({197, 3072}, dt);
  const auto ctx = ctx_of(state);
  for (auto _ : state) cpu::activation(x, act, y, ctx);
  bytes(state, x, 2);
}

void softmax(benchmark::State& state, DType dt) {
  const Tensor x = random({12 * 197, 197}, dt), y = Tensor::empty({12 * 197, 197}, dt);
  const auto ctx = ctx_of(state);
  for (auto _ : state) cpu::softmax(x, SoftmaxAttrs{}, false, y, ctx);
  bytes(state, x, 2);
}

void add(benchmark::State& state, DType dt) {
  const Tensor a = random({197, 768}, dt), b = random({197, 768}, dt), y = Tensor::empty({197, 768}, dt);
  const auto ctx = ctx_of(state);
  for (auto _ : state) cpu::binary(a, b, BinaryOp::add, y, ctx);
  bytes(state, a, 3);
}

}  // namespace

BENCHMARK_CAPTURE(layer_norm, f32_197x768, 197, DType::F32)->Arg(1)->Arg(2);
BENCHMARK_CAPTURE(layer_norm, f32_1024x768, 1024, DType::F32)->Arg(1)->Arg(2);
BENCHMARK_CAPTURE(layer_norm, bf16_197x768, 197, DType::BF16)->Arg(1)->Arg(2);
BENCHMARK_CAPTURE(activation, gelu_f32_197x3072, Activation::gelu, DType::F32)->Arg(1)->Arg(2);
BENCHMARK_CAPTURE(activation, gelu_tanh_f32_197x3072, Activation::gelu_tanh, DType::F32)->Arg(1)->Arg(2);
BENCHMARK_CAPTURE(activation, gelu_bf16_197x3072, Activation::gelu, DType::BF16)->Arg(1)->Arg(2);
BENCHMARK_CAPTURE(softmax, f32_2364x197, DType::F32)->Arg(1)->Arg(2);
BENCHMARK_CAPTURE(add, f32_197x768, DType::F32)->Arg(1)->Arg(2);
BENCHMARK_CAPTURE(add, bf16_197x768, DType::BF16)->Arg(1)->Arg(2);
