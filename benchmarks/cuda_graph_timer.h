// Timing of device work for the CUDA benchmarks: a batch of launches captured once as a CUDA graph
// and replayed (host launch costs out of the figure, as in a recorded decode step), or launched
// directly; both timed with events around the batch on the stream.
#pragma once

#include <cuda_runtime.h>

#include <functional>

namespace encore::bench {

/// `calls` invocations of launch(i) on `stream`, captured once; per_call() replays them.
class CudaGraphTimer {
 public:
  CudaGraphTimer(cudaStream_t stream, int calls, const std::function<void(int)>& launch,
                 cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal)
      : stream_(stream), calls_(calls) {
    cudaGraph_t graph = nullptr;
    ok_ = cudaEventCreate(&start_) == cudaSuccess && cudaEventCreate(&stop_) == cudaSuccess &&
          cudaStreamBeginCapture(stream, mode) == cudaSuccess;
    if (ok_) {
      for (int i = 0; i < calls; ++i) launch(i);
      ok_ = cudaStreamEndCapture(stream, &graph) == cudaSuccess;
      ok_ = ok_ && cudaGraphInstantiate(&exec_, graph, 0) == cudaSuccess;
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
    ok_ = ok_ && replay() >= 0.0;  // the first replay uploads the graph
    if (!ok_) cudaGetLastError();
  }
  ~CudaGraphTimer() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
  }
  CudaGraphTimer(const CudaGraphTimer&) = delete;
  CudaGraphTimer& operator=(const CudaGraphTimer&) = delete;

  /// False when capturing, instantiating or the first replay failed.
  bool ok() const { return ok_; }
  /// Seconds per call of one replay; negative when the replay failed.
  double per_call() {
    const double s = replay();
    return s < 0.0 ? s : s / calls_;
  }

 private:
  double replay() {
    float ms = 0.0f;
    if (cudaEventRecord(start_, stream_) != cudaSuccess || cudaGraphLaunch(exec_, stream_) != cudaSuccess ||
        cudaEventRecord(stop_, stream_) != cudaSuccess || cudaEventSynchronize(stop_) != cudaSuccess ||
        cudaEventElapsedTime(&ms, start_, stop_) != cudaSuccess)
      return -1.0;
    return ms * 1e-3;
  }

  cudaStream_t stream_;
  int calls_;
  bool ok_ = false;
  cudaGraphExec_t exec_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

/// Seconds per call of `calls` direct launches of launch(i) on `stream` (events around the batch);
/// negative when an event call failed.
inline double time_launches(cudaStream_t stream, int calls, const std::function<void(int)>& launch) {
  cudaEvent_t start = nullptr, stop = nullptr;
  float ms = -1.0f;
  if (cudaEventCreate(&start) == cudaSuccess && cudaEventCreate(&stop) == cudaSuccess &&
      cudaEventRecord(start, stream) == cudaSuccess) {
    for (int i = 0; i < calls; ++i) launch(i);
    if (cudaEventRecord(stop, stream) != cudaSuccess || cudaEventSynchronize(stop) != cudaSuccess ||
        cudaEventElapsedTime(&ms, start, stop) != cudaSuccess)
      ms = -1.0f;
  }
  if (start != nullptr) cudaEventDestroy(start);
  if (stop != nullptr) cudaEventDestroy(stop);
  return ms < 0.0f ? -1.0 : ms * 1e-3 / calls;
}

}  // namespace encore::bench
