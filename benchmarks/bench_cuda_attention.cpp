// Prefill attention on CUDA at ViT-B shapes: 12 heads x 64, 197 and 1024 tokens, batch 1 and 32,
// f16 and bf16, q/k/v read in place from one fused QKV projection. Timed with CUDA events on the
// runtime's stream (manual time); the TFLOP/s counter counts 4·B·H·Tq·Tk·D per call. The `path`
// argument compares the tensor-core kernel (0, what attention() picks) with the CUDA-core one (1).
// Without a GPU (or a build without CUDA) every case is skipped with a message.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>

#if defined(ENCORE_HAVE_CUDA) && __has_include(<cuda_runtime_api.h>)
#define ENCORE_BENCH_CUDA 1
#include <cuda_runtime_api.h>

#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "encore/core/tensor.h"
#include "kernels/cuda/attention_internal.h"
#endif

namespace {

#if defined(ENCORE_BENCH_CUDA)

using namespace encore;

void BM_CudaAttention(benchmark::State& state) {
  const std::int64_t B = state.range(0), T = state.range(1);
  const DType dt = state.range(2) == 0 ? DType::F16 : DType::BF16;
  const auto path = state.range(3) == 0 ? cuda::attn::Path::automatic : cuda::attn::Path::generic;
  const int H = 12, D = 64;
  if (cuda::CudaRuntime::device_count() == 0) {
    state.SkipWithError("no CUDA GPU present");
    return;
  }
  cuda::CudaRuntime& rt = cuda::CudaRuntime::get(Device::cuda(0));
  const cuda::CudaContext ctx = rt.context();
  // A fused [B, T, 3 H D] projection, random in [-1, 1).
  Tensor host = Tensor::empty({B, T, 3 * H * D}, DType::F32);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  float* h = host.data_ptr<float>();
  for (std::int64_t i = 0; i < host.numel(); ++i) h[i] = dist(rng);
  const Tensor qkv = host.to(dt).to(rt.device());
  const Tensor q = qkv.slice(2, 0, H * D), k = qkv.slice(2, H * D, 2 * H * D), v = qkv.slice(2, 2 * H * D, 3 * H * D);
  const Tensor y = Tensor::empty({B, T, H * D}, dt, rt.device());
  const AttentionAttrs attrs{.num_heads = H};
  const double flops = 4.0 * static_cast<double>(B) * H * static_cast<double>(T) * static_cast<double>(T) * D;

  for (int i = 0; i < 3; ++i) cuda::attn::attention_impl(q, k, v, {}, attrs, y, ctx, path);  // warm-up
  rt.synchronize();
  cudaEvent_t start = nullptr, stop = nullptr;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  // Enough launches per timed iteration that event resolution does not matter (~>= 1 ms).
  const int reps = static_cast<int>(std::max<double>(1.0, std::min<double>(100.0, 2e11 / flops)));
  double total_s = 0.0, total_flops = 0.0;
  for (auto _ : state) {
    cudaEventRecord(start, rt.stream());
    for (int i = 0; i < reps; ++i) cuda::attn::attention_impl(q, k, v, {}, attrs, y, ctx, path);
    cudaEventRecord(stop, rt.stream());
    cudaEventSynchronize(stop);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    const double s = ms * 1e-3 / reps;
    state.SetIterationTime(s);
    total_s += s;
    total_flops += flops;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (cudaGetLastError() != cudaSuccess) state.SkipWithError("a CUDA call failed");
  state.counters["TFLOP/s"] = total_s > 0 ? total_flops / total_s * 1e-12 : 0.0;
  state.SetLabel(std::string(dtype_name(dt)) + (state.range(3) == 0 ? " auto" : " cuda-cores"));
}

#else

void BM_CudaAttention(benchmark::State& state) {
  state.SkipWithError("built without the CUDA backend (or without CUDA headers for the benchmarks)");
}

#endif

// Args: batch, tokens, dtype (0 f16, 1 bf16), path (0 automatic, 1 CUDA cores).
void ViTShapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t batch : {1, 32})
    for (std::int64_t tokens : {197, 1024})
      for (std::int64_t dt : {0, 1}) b->Args({batch, tokens, dt, 0});
  for (std::int64_t tokens : {197, 1024}) b->Args({32, tokens, 1, 1});
  b->ArgNames({"B", "T", "bf16", "path"});
}

BENCHMARK(BM_CudaAttention)->Apply(ViTShapes)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
