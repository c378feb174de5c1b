#include "graph/node_runner.h"

#include <cstring>

#include "backends/cpu/kernels.h"
#include "encore/core/threads.h"
#include "graph/dispatch.h"

namespace encore::detail {
namespace {

class CpuRunner final : public NodeRunner {
 public:
  explicit CpuRunner(const PlanOptions& options)
      : ctx_{options.num_threads > 0 ? options.num_threads : num_threads()} {}
  void run(const Node& node, std::span<const Tensor> in, std::span<const Tensor> out) override {
    run_node(node, in, out, ctx_);
  }
  void poison(Storage& storage) override {
    if (storage.bytes() != 0) std::memset(storage.data(), 0xFF, storage.bytes());
  }

 private:
  cpu::CpuContext ctx_;
};

}  // namespace

std::unique_ptr<NodeRunner> make_cpu_runner(const PlanOptions& options) { return std::make_unique<CpuRunner>(options); }

std::unique_ptr<NodeRunner> make_runner(const PlanOptions& options) {
  if (options.device.is_cpu()) return make_cpu_runner(options);
#ifdef ENCORE_HAVE_CUDA
  return make_cuda_runner(options);
#else
  fail(ErrorCode::unsupported, "Plan: device {} needs the CUDA backend, which this build does not have (available: cpu)",
       options.device.str());
#endif
}

}  // namespace encore::detail
