// encore's CUDA linear against a raw cublasLtMatmul (same shape, layout, stream and heuristic
// best algorithm) at ViT-B / GPT-2 shapes, f16 and f32 (TF32 off, encore's default). Times are GPU
// time from CUDA events (manual time), so encore's host-side overhead shows where it delays the
// launch. A table of the ratios (encore / raw: 1.00 = no overhead) is printed at the end.
//
// Decode shapes (BM_DecodeLinear): GPT-2 small's projections at M = 1 and 8 through linear's GEMV
// kernels and through cuBLASLt (set_gemv_policy), each timed as a CUDA graph of 128 calls (launch
// overhead amortised) cycling through enough weight copies to exceed the L2 cache, so the weight
// streams from HBM as in a real decode step. A second table gives us per call, weight GB/s, the
// HBM floor at 4.0 TB/s and the ratio.
// Without a GPU every benchmark is skipped; in a build without CUDA this file is a stub.
#include <benchmark/benchmark.h>

#if !defined(ENCORE_HAVE_CUDA)

static void BM_CudaGemmUnavailable(benchmark::State& state) {
  state.SkipWithError("encore was built without the CUDA backend");
  for (auto _ : state) {
  }
}
BENCHMARK(BM_CudaGemmUnavailable);

#else

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cublas_gemm.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "cuda_graph_timer.h"
#include "encore/core/tensor.h"

using namespace encore;

namespace {

bool gpu_present() {
  static const bool present = cuda::CudaRuntime::device_count() > 0;
  return present;
}

// Mean GPU seconds per call, per benchmark name ("f16 M=197 K=768 N=2304"), for the final table.
struct Timing {
  double encore = 0, raw = 0;
};
std::map<std::string, Timing>& timings() {
  static std::map<std::string, Timing> t;
  return t;
}

std::string key(DType dt, std::int64_t M, std::int64_t K, std::int64_t N) {
  return std::string(dtype_name(dt)) + " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" +
         std::to_string(N);
}

Tensor random_device(const Shape& shape, DType dt, std::mt19937& rng) {
  Tensor f = Tensor::empty(shape, DType::F32);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  float* p = f.data_ptr<float>();
  for (std::int64_t i = 0; i < f.numel(); ++i) p[i] = dist(rng);
  return (dt == DType::F32 ? f : f.to(dt)).to(Device::cuda(0));
}

// Runs `launch` once per iteration between two events on `stream`; records GPU time.
template <typename Launch>
double timed_loop(benchmark::State& state, cudaStream_t stream, Launch&& launch) {
  launch();  // warm-up (plans, algorithm selection, lazy module loading)
  double total = 0;
  for (auto _ : state) {
    const double s = std::max(bench::time_launches(stream, 1, [&](int) { launch(); }), 0.0);
    state.SetIterationTime(s);
    total += s;
  }
  return state.iterations() > 0 ? total / static_cast<double>(state.iterations()) : 0;
}

void set_counters(benchmark::State& state, double seconds, std::int64_t M, std::int64_t K, std::int64_t N) {
  if (seconds > 0) state.counters["TFLOPS"] = 2.0 * static_cast<double>(M * K * N) / seconds / 1e12;
}

// encore: cuda::linear (out_in weights [N, K], no bias) on the runtime's stream.
void BM_EncoreLinear(benchmark::State& state, DType dt) {
  if (!gpu_present()) {
    state.SkipWithError("no CUDA GPU present");
    for (auto _ : state) {
    }
    return;
  }
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  std::mt19937 rng(1);
  cuda::CudaRuntime& rt = cuda::CudaRuntime::get(Device::cuda(0));
  const Tensor x = random_device({M, K}, dt, rng), w = random_device({N, K}, dt, rng);
  const Tensor y = Tensor::empty({M, N}, dt, Device::cuda(0));
  const cuda::CudaContext ctx = rt.context(false);
  const double s = timed_loop(state, rt.stream(), [&] { cuda::linear(x, w, Tensor(), LinearAttrs{}, y, ctx); });
  timings()[key(dt, M, K, N)].encore = s;
  set_counters(state, s, M, K, N);
}

// The baseline: the same GEMM through cublasLt directly (own handle and workspace, same stream).
void BM_RawCublasLt(benchmark::State& state, DType dt) {
  if (!gpu_present()) {
    state.SkipWithError("no CUDA GPU present");
    for (auto _ : state) {
    }
    return;
  }
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  std::mt19937 rng(1);
  cuda::CudaRuntime& rt = cuda::CudaRuntime::get(Device::cuda(0));
  const Tensor x = random_device({M, K}, dt, rng), w = random_device({N, K}, dt, rng);
  const Tensor y = Tensor::empty({M, N}, dt, Device::cuda(0));
  const cudaDataType_t t = dt == DType::F16 ? CUDA_R_16F : CUDA_R_32F;
  constexpr std::size_t kWorkspace = std::size_t{32} << 20;

  cublasLtHandle_t lt = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  void* workspace = nullptr;
  cublasLtMatmulHeuristicResult_t best{};
  int found = 0;
  // y^T [N, M] = W (K x N col-major, transposed) x^T (K x M col-major).
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  const std::uint64_t ws_bytes = kWorkspace;
  const bool ok =
      cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatrixLayoutCreate(&la, t, K, N, K) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatrixLayoutCreate(&lb, t, K, M, K) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatrixLayoutCreate(&ld, t, N, M, N) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                           sizeof(ws_bytes)) == CUBLAS_STATUS_SUCCESS &&
      cudaMalloc(&workspace, kWorkspace) == cudaSuccess &&
      cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &best, &found) == CUBLAS_STATUS_SUCCESS &&
      found > 0;
  if (!ok) {
    state.SkipWithError("cuBLASLt setup failed or found no algorithm");
    for (auto _ : state) {
    }
  } else {
    const float alpha = 1.0f, beta = 0.0f;
    const double s = timed_loop(state, rt.stream(), [&] {
      cublasLtMatmul(lt, desc, &alpha, w.data(), la, x.data(), lb, &beta, y.data(), ld, y.data(), ld, &best.algo,
                     workspace, best.workspaceSize, rt.stream());
    });
    timings()[key(dt, M, K, N)].raw = s;
    set_counters(state, s, M, K, N);
  }
  cudaStreamSynchronize(rt.stream());
  if (workspace != nullptr) cudaFree(workspace);
  if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
  if (ld != nullptr) cublasLtMatrixLayoutDestroy(ld);
  if (lb != nullptr) cublasLtMatrixLayoutDestroy(lb);
  if (la != nullptr) cublasLtMatrixLayoutDestroy(la);
  if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  if (lt != nullptr) cublasLtDestroy(lt);
}

// ViT-B and GPT-2 small: M tokens (1 = decode step, 197 = ViT-B/16 at 224) x (K, N) of the
// attention and MLP projections.
void shapes(benchmark::internal::Benchmark* b) {
  for (const std::int64_t m : {1, 16, 197, 1024})
    for (const auto& [k, n] : std::vector<std::pair<std::int64_t, std::int64_t>>{{768, 768}, {768, 2304}, {768, 3072}, {3072, 768}})
      b->Args({m, k, n});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(BM_EncoreLinear, f16, DType::F16)->Apply(shapes);
BENCHMARK_CAPTURE(BM_RawCublasLt, f16, DType::F16)->Apply(shapes);
BENCHMARK_CAPTURE(BM_EncoreLinear, f32, DType::F32)->Apply(shapes);
BENCHMARK_CAPTURE(BM_RawCublasLt, f32, DType::F32)->Apply(shapes);

// ---- decode shapes: GEMV kernels vs cuBLASLt ------------------------------------------------------------

struct DecodeTiming {
  double gemv = 0, cublaslt = 0, weight_bytes = 0;
};
std::map<std::string, DecodeTiming>& decode_timings() {
  static std::map<std::string, DecodeTiming> t;
  return t;
}

// One decode projection, args {M, K, N, out_in, gemv}: in_out [K, N] with bias (GELU-tanh when N =
// 4K, the MLP's fc), out_in [N, K] without bias (the LM head). Per iteration: one replay of a graph
// of kCalls linear calls; the reported time is per call.
void BM_DecodeLinear(benchmark::State& state, DType dt) {
  constexpr int kCalls = 128;
  if (!gpu_present()) {
    state.SkipWithError("no CUDA GPU present");
    for (auto _ : state) {
    }
    return;
  }
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const bool out_in = state.range(3) != 0, gemv = state.range(4) != 0;
  cuda::CudaRuntime& rt = cuda::CudaRuntime::get(Device::cuda(0));
  const cudaStream_t stream = rt.stream();
  const cuda::GemvPolicy saved = cuda::gemv_policy();
  cuda::set_gemv_policy(gemv ? cuda::GemvPolicy::always : cuda::GemvPolicy::never);
  const LinearAttrs attrs{out_in ? WeightLayout::out_in : WeightLayout::in_out,
                          !out_in && N == 4 * K ? Activation::gelu_tanh : Activation::none};

  // Enough weight copies that one pass over them exceeds twice the L2 cache (at most 64).
  int l2 = 0;
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, rt.ordinal());
  const double weight_bytes = static_cast<double>(K * N * static_cast<std::int64_t>(dtype_size(dt)));
  const int copies = static_cast<int>(std::clamp(2.0 * l2 / weight_bytes + 1.0, 1.0, 64.0));
  std::mt19937 rng(1);
  std::vector<Tensor> ws;
  for (int i = 0; i < copies; ++i) ws.push_back(random_device(out_in ? Shape{N, K} : Shape{K, N}, dt, rng));
  const Tensor x = random_device({M, K}, dt, rng);
  const Tensor bias = out_in ? Tensor() : random_device({N}, dt, rng);
  const Tensor y = Tensor::empty({M, N}, dt, Device::cuda(0));
  const cuda::CudaContext ctx = rt.context(false);

  std::optional<bench::CudaGraphTimer> timer;
  bool ok = true;
  if (cuda::linear_takes_gemv(rt, x, ws[0], attrs) != gemv) {
    state.SkipWithError("linear does not take the path asked for");
    ok = false;
  }
  if (ok) {
    for (const Tensor& w : ws) cuda::linear(x, w, bias, attrs, y, ctx);  // plans, split buffers: not captured
    rt.synchronize();
    timer.emplace(stream, kCalls, [&](int i) {
      cuda::linear(x, ws[static_cast<std::size_t>(i % copies)], bias, attrs, y, ctx);
    });
    ok = timer->ok();
    if (!ok) state.SkipWithError("CUDA graph capture or replay failed");
  }
  if (!ok) {
    for (auto _ : state) {
    }
  } else {
    double total = 0;
    for (auto _ : state) {
      const double per_call = timer->per_call();
      state.SetIterationTime(std::max(per_call, 0.0));
      total += per_call;
    }
    const double s = state.iterations() > 0 ? total / static_cast<double>(state.iterations()) : 0;
    if (s > 0) state.counters["GB/s"] = weight_bytes / s / 1e9;
    const std::string name = std::string(dtype_name(dt)) + (out_in ? " out_in" : " in_out") + " M=" +
                             std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N);
    DecodeTiming& t = decode_timings()[name];
    (gemv ? t.gemv : t.cublaslt) = s;
    t.weight_bytes = weight_bytes;
  }
  cuda::set_gemv_policy(saved);
}

// GPT-2 small decode: qkv, attention out / cross q / cross out, MLP fc (+GELU), MLP proj, LM head.
void decode_shapes(benchmark::internal::Benchmark* b) {
  const std::vector<std::array<std::int64_t, 3>> projections = {
      {768, 2304, 0}, {768, 768, 0}, {768, 3072, 0}, {3072, 768, 0}, {768, 50257, 1}};
  for (const std::int64_t m : {1, 8})
    for (const auto& [k, n, out_in] : projections)
      for (const std::int64_t gemv : {1, 0}) b->Args({m, k, n, out_in, gemv});
  // Fixed iterations: the manual time is per call, 1/128 of an iteration's GPU time, so a time-based
  // stop would replay the graph 128 times more often than needed.
  b->ArgNames({"M", "K", "N", "out_in", "gemv"})->UseManualTime()->Iterations(50)->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(BM_DecodeLinear, f16, DType::F16)->Apply(decode_shapes);

void print_decode_table() {
  if (decode_timings().empty()) return;
  std::printf("\n%-36s %9s %9s %9s %9s %9s %8s\n", "decode linear (per call, graph)", "gemv us", "GB/s", "cuBLASLt",
              "GB/s", "floor us", "speedup");
  for (const auto& [name, t] : decode_timings()) {
    const auto gbs = [&](double s) { return s > 0 ? t.weight_bytes / s / 1e9 : 0.0; };
    std::printf("%-36s %9.2f %9.0f %9.2f %9.0f %9.2f %8.2f\n", name.c_str(), t.gemv * 1e6, gbs(t.gemv),
                t.cublaslt * 1e6, gbs(t.cublaslt), t.weight_bytes / 4.0e12 * 1e6,
                t.gemv > 0 ? t.cublaslt / t.gemv : 0.0);
  }
  std::printf("floor: weight bytes / 4.0 TB/s; speedup: cuBLASLt time / GEMV time\n");
}

void print_ratios() {
  if (timings().empty()) return;
  std::printf("\n%-32s %12s %12s %8s\n", "linear (GPU time per call)", "encore us", "cublasLt us", "ratio");
  double worst = 0;
  for (const auto& [name, t] : timings()) {
    if (t.encore <= 0 || t.raw <= 0) continue;
    const double ratio = t.encore / t.raw;
    worst = std::max(worst, ratio);
    std::printf("%-32s %12.2f %12.2f %8.3f\n", name.c_str(), t.encore * 1e6, t.raw * 1e6, ratio);
  }
  std::printf("worst encore/cublasLt ratio: %.3f\n", worst);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_ratios();
  print_decode_table();
  return 0;
}

#endif
