// The CUDA side of a Plan (compiled only with the CUDA backend).
#ifdef ENCORE_HAVE_CUDA
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "graph/node_runner.h"
#include "graph/dispatch.h"

namespace encore::detail {
namespace {

class CudaRunner final : public NodeRunner {
 public:
  explicit CudaRunner(const PlanOptions& options) : runtime_(cuda::CudaRuntime::get(options.device)) {}
  void run(const Node& node, std::span<const Tensor> in, std::span<const Tensor> out) override {
    run_node(node, in, out, runtime_.context());
  }
  void poison(Storage& storage) override { runtime_.memset(storage.data(), 0xFF, storage.bytes()); }

 private:
  cuda::CudaRuntime& runtime_;
};

}  // namespace

std::unique_ptr<NodeRunner> make_cuda_runner(const PlanOptions& options) {
  return std::make_unique<CudaRunner>(options);
}

}  // namespace encore::detail
#endif
