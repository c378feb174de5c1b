// The CUDA side of a Plan (compiled only with the CUDA backend).
#ifdef ENCORE_HAVE_CUDA
#include <memory>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "graph/node_runner.h"
#include "graph/dispatch.h"

namespace encore::detail {
namespace {

// Captures on the runtime's stream in thread-local mode: other threads' CUDA calls are not
// disturbed, but nothing else may be queued on this device's stream meanwhile (plans of one device
// share the stream; Plan serialises its own runs).
class CudaRunner final : public NodeRunner {
 public:
  explicit CudaRunner(const PlanOptions& options) : runtime_(cuda::CudaRuntime::get(options.device)) {}
  ~CudaRunner() override {
    if (exec_ != nullptr) {
      // Replays may still be queued; the held scratch blocks return to the cache after them.
      if (cudaStreamSynchronize(runtime_.stream()) != cudaSuccess) cudaGetLastError();
      cudaGraphExecDestroy(exec_);
    }
  }
  void run(const Node& node, std::span<const Tensor> in, std::span<const Tensor> out) override {
    run_node(node, in, out, runtime_.context());
  }
  void poison(Storage& storage) override { runtime_.memset(storage.data(), 0xFF, storage.bytes()); }
  // Events on the stream: the times are the device's, without the host's launch gaps between
  // nodes (only within a node that queues several kernels).
  void mark() override {
    cuda::DeviceGuard guard(runtime_.ordinal());
    cudaEvent_t e = nullptr;
    ENCORE_CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
    ENCORE_CUDA_CHECK(cudaEventRecord(e, runtime_.stream()));
  }
  void clear_marks() override {
    cuda::DeviceGuard guard(runtime_.ordinal());
    for (cudaEvent_t e : events_) cudaEventDestroy(e);  // freed once their work is done
    events_.clear();
  }
  std::vector<double> marks_elapsed() override {
    cuda::DeviceGuard guard(runtime_.ordinal());
    std::vector<double> us;
    cudaError_t err = events_.empty() ? cudaSuccess : cudaEventSynchronize(events_.back());
    for (std::size_t i = 1; i < events_.size() && err == cudaSuccess; ++i) {
      float ms = 0;
      err = cudaEventElapsedTime(&ms, events_[i - 1], events_[i]);
      us.push_back(1e3 * ms);
    }
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    events_.clear();
    ENCORE_CUDA_CHECK(err);
    return us;
  }

  bool can_capture() const override { return true; }
  void begin_capture() override {
    cuda::DeviceGuard guard(runtime_.ordinal());
    recording_held_ = std::make_unique<cuda::HeldBlocks>(runtime_.allocator());
    const cudaError_t err = cudaStreamBeginCapture(runtime_.stream(), cudaStreamCaptureModeThreadLocal);
    if (err != cudaSuccess) {
      recording_held_.reset();
      ENCORE_CUDA_CHECK(err);
    }
  }
  void end_capture(bool keep) override {
    cuda::DeviceGuard guard(runtime_.ordinal());
    recording_held_->stop();
    cudaGraph_t graph = nullptr;
    const cudaError_t err = cudaStreamEndCapture(runtime_.stream(), &graph);
    struct DestroyGraph {
      cudaGraph_t g;
      ~DestroyGraph() { if (g != nullptr) cudaGraphDestroy(g); }
    } destroy{graph};
    if (!keep) {
      cudaGetLastError();  // the capture was invalidated by the failing node; that error is the one to report
      recording_held_.reset();
      return;
    }
    // On failure the blocks held for the recording go back to the cache (nothing addresses them).
    const auto fail = [&](cudaError_t e) {
      cudaGetLastError();
      recording_held_.reset();
      ENCORE_CUDA_CHECK(e);
    };
    if (err != cudaSuccess) fail(err);
    cudaGraphExec_t exec = nullptr;
    if (const cudaError_t ierr = cudaGraphInstantiate(&exec, graph, 0); ierr != cudaSuccess) fail(ierr);
    if (exec_ != nullptr) {
      ENCORE_CUDA_CHECK(cudaStreamSynchronize(runtime_.stream()));
      cudaGraphExecDestroy(exec_);
    }
    exec_ = exec;
    held_ = std::move(recording_held_);
  }
  void replay() override {
    cuda::DeviceGuard guard(runtime_.ordinal());
    ENCORE_CUDA_CHECK(cudaGraphLaunch(exec_, runtime_.stream()));
  }

 private:
  cuda::CudaRuntime& runtime_;
  std::vector<cudaEvent_t> events_;  // profile marks
  cudaGraphExec_t exec_ = nullptr;
  std::unique_ptr<cuda::HeldBlocks> held_;            // scratch blocks the graph addresses
  std::unique_ptr<cuda::HeldBlocks> recording_held_;  // those of a capture in progress
};

}  // namespace

std::unique_ptr<NodeRunner> make_cuda_runner(const PlanOptions& options) {
  return std::make_unique<CudaRunner>(options);
}

}  // namespace encore::detail
#endif
