// Prefill attention on CUDA at ViT-B shapes: 12 heads x 64, 197 and 1024 tokens, batch 1 and 32,
// f16 and bf16, q/k/v read in place from one fused QKV projection. Every kernel path is timed
// (the `path` argument: 0 automatic = what attention() picks, 1 the mma.sync kernel, 2 the wgmma
// kernel (sm_90 only), 3 the CUDA-core kernel) in two modes (`graph`):
// - 0 per call: `reps` attention_impl calls between two CUDA events on the runtime's stream, so
//   the host's launch cost shows when a launch is shorter than it;
// - 1 graph replay: the same `reps` calls captured once into a CUDA graph, the replay timed with
//   events, as tools/bench/sdpa_prefill.py times torch SDPA (host overhead out).
// Manual time is per call; the TFLOP/s counter counts 4·B·H·Tq·Tk·D per call. Each case runs a
// fixed kIterations batches (google-benchmark would size its iteration count from the per-call
// time and run each batch `reps` times too often). Without a GPU (or a build without CUDA), or for
// a path the device cannot run, the case is skipped with a message.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#if defined(ENCORE_HAVE_CUDA) && __has_include(<cuda_runtime_api.h>)
#define ENCORE_BENCH_CUDA 1
#include <cuda_runtime_api.h>

#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "cuda_graph_timer.h"
#include "encore/core/tensor.h"
#include "kernels/cuda/attention_internal.h"
#endif

namespace {

#if defined(ENCORE_BENCH_CUDA)

using namespace encore;
using cuda::attn::Path;

constexpr Path kPaths[] = {Path::automatic, Path::tensor_core, Path::hopper, Path::generic};
constexpr const char* kPathNames[] = {"auto", "mma.sync", "wgmma", "cuda-cores"};

void BM_CudaAttention(benchmark::State& state) {
  const std::int64_t B = state.range(0), T = state.range(1);
  const DType dt = state.range(2) == 0 ? DType::F16 : DType::BF16;
  const Path path = kPaths[state.range(3)];
  const bool graph = state.range(4) != 0;
  const int H = 12, D = static_cast<int>(state.range(5));
  if (cuda::CudaRuntime::device_count() == 0) {
    state.SkipWithError("no CUDA GPU present");
    return;
  }
  cuda::CudaRuntime& rt = cuda::CudaRuntime::get(Device::cuda(0));
  const cuda::CudaContext ctx = rt.context();
  if (path == Path::hopper && !cuda::attn::hopper_available(ctx)) {
    state.SkipWithError("the wgmma kernel needs an sm_90 device and a build with sm_90a code");
    return;
  }
  // A fused [B, T, 3 H D] projection, pseudo-random in [-1, 1) (a 64-bit LCG: 75M values at
  // B = 32, T = 1024 would take a second with std::mt19937).
  Tensor host = Tensor::empty({B, T, 3 * H * D}, DType::F32);
  float* h = host.data_ptr<float>();
  std::uint64_t x = 7;
  for (std::int64_t i = 0; i < host.numel(); ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    h[i] = static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f;
  }
  const Tensor qkv = host.to(dt).to(rt.device());
  const Tensor q = qkv.slice(2, 0, H * D), k = qkv.slice(2, H * D, 2 * H * D), v = qkv.slice(2, 2 * H * D, 3 * H * D);
  const Tensor y = Tensor::empty({B, T, H * D}, dt, rt.device());
  const AttentionAttrs attrs{.num_heads = H};
  const double flops = 4.0 * static_cast<double>(B) * H * static_cast<double>(T) * static_cast<double>(T) * D;
  auto run = [&] { cuda::attn::attention_impl(q, k, v, {}, attrs, y, ctx, path); };

  for (int i = 0; i < 3; ++i) run();  // warm-up (also sets the kernels' shared-memory limits)
  rt.synchronize();
  // Enough launches per timed iteration that event resolution does not matter (~>= 1 ms).
  const int reps = static_cast<int>(std::max<double>(1.0, std::min<double>(100.0, 2e11 / flops)));
  std::optional<bench::CudaGraphTimer> timer;
  if (graph) {
    timer.emplace(rt.stream(), reps, [&](int) { run(); }, cudaStreamCaptureModeRelaxed);
    if (!timer->ok()) {
      state.SkipWithError("CUDA graph capture failed");
      return;
    }
  }
  double total_s = 0.0, total_flops = 0.0;
  for (auto _ : state) {
    const double s = graph ? timer->per_call() : bench::time_launches(rt.stream(), reps, [&](int) { run(); });
    state.SetIterationTime(std::max(s, 0.0));
    total_s += s;
    total_flops += flops;
  }
  if (cudaGetLastError() != cudaSuccess) state.SkipWithError("a CUDA call failed");
  state.counters["TFLOP/s"] = total_s > 0 ? total_flops / total_s * 1e-12 : 0.0;
  state.SetLabel(std::string(dtype_name(dt)) + " " + kPathNames[state.range(3)] + (graph ? " graph" : " per-call"));
}

#else

void BM_CudaAttention(benchmark::State& state) {
  state.SkipWithError("built without the CUDA backend (or without CUDA headers for the benchmarks)");
}

#endif

// Args: batch, tokens, dtype (0 f16, 1 bf16), path (0 automatic, 1 mma.sync, 2 wgmma, 3 CUDA
// cores), graph (0 per call, 1 graph replay), head dim. The CUDA-core kernel only at bf16, per call.
void ViTShapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t graph : {1, 0})
    for (std::int64_t path : {0, 1, 2})
      for (std::int64_t batch : {1, 32})
        for (std::int64_t tokens : {197, 1024})
          for (std::int64_t dt : {0, 1}) b->Args({batch, tokens, dt, path, graph, 64});
  for (std::int64_t tokens : {197, 1024}) b->Args({32, tokens, 1, 3, 0, 64});
  // Head dim 128 (the Hopper kernel's other fast size), f16 graph replays of the chosen path.
  for (std::int64_t batch : {1, 32}) b->Args({batch, 1024, 0, 0, 1, 128});
  b->ArgNames({"B", "T", "bf16", "path", "graph", "D"});
}

constexpr int kIterations = 20;  // batches of `reps` calls (>= ~1 ms each) per case
BENCHMARK(BM_CudaAttention)->Apply(ViTShapes)->UseManualTime()->Iterations(kIterations)->Unit(benchmark::kMicrosecond);

}  // namespace
