// Core costs that the graph layer pays per op: view creation and dtype conversion throughput.
#include <benchmark/benchmark.h>

#include "encore/core/tensor.h"

using namespace encore;

static void BM_TensorViewChain(benchmark::State& state) {
  Tensor t = Tensor::empty({1, 197, 12, 64}, DType::F32);
  for (auto _ : state) {
    Tensor v = t.view({1, 197, 768}).unsqueeze(0).squeeze(0).view({1, 197, 12, 64}).permute({0, 2, 1, 3});
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_TensorViewChain);

static void BM_ConvertF32ToBF16(benchmark::State& state) {
  Tensor t = Tensor::zeros({state.range(0)}, DType::F32);
  for (auto _ : state) benchmark::DoNotOptimize(t.to(DType::BF16));
  state.SetBytesProcessed(state.iterations() * state.range(0) * 6);
}
BENCHMARK(BM_ConvertF32ToBF16)->Arg(1 << 16);
