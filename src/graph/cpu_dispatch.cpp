#include "graph/node_runner.h"

#include <cstring>

#include "backends/cpu/kernels.h"
#include "encore/core/threads.h"
#include "graph/dispatch.h"

namespace encore::detail {
namespace {

// Multiply-adds of the attention-like kernels that always open a parallel region (the pointwise
// and reduction kernels have their own size threshold; GEMMs and convolutions are oneDNN's).
// 0 for every other op.
double parallel_work(const Node& node, std::span<const Tensor> in, std::span<const Tensor> out) {
  switch (node.kind) {
    case OpKind::attention:
    case OpKind::rel_pos_attention:
      return static_cast<double>(in[0].numel()) * static_cast<double>(in[1].dim(in[1].rank() - 2));  // q x keys
    case OpKind::decode_attention:  // upper bound: every cached position of every block
      return static_cast<double>(in[0].numel()) * static_cast<double>(in[1].dim(0) * in[1].dim(2));
    case OpKind::rope:
    case OpKind::kv_cache_write: return static_cast<double>(out.empty() ? in[0].numel() : out[0].numel());
    default: return 0;
  }
}

class CpuRunner final : public NodeRunner {
 public:
  explicit CpuRunner(const PlanOptions& options)
      : ctx_{options.num_threads > 0 ? options.num_threads : num_threads()} {}
  // A tiny node runs on one thread: an OpenMP fork/join costs microseconds on an idle machine and
  // milliseconds when another process holds a core (the team waits for its second thread), more
  // than such a node's whole work.
  void run(const Node& node, std::span<const Tensor> in, std::span<const Tensor> out) override {
    const double work = parallel_work(node, in, out);
    cpu::CpuContext ctx = work > 0 && work < kSerialWork ? serial_ : ctx_;
    // The weight operand (linear, conv, int8 linear: input 1) may be cached packed only when constant.
    const int w = node.inputs.size() > 1 ? node.inputs[1] : -1;
    ctx.constant_weights = w >= 0 && static_cast<std::size_t>(w) < constant_.size() && constant_[w] != 0;
    run_node(node, in, out, ctx);
  }
  void set_constants(std::vector<char> is_constant) override { constant_ = std::move(is_constant); }
  void poison(Storage& storage) override {
    if (storage.bytes() != 0) std::memset(storage.data(), 0xFF, storage.bytes());
  }

 private:
  static constexpr double kSerialWork = 1 << 16;  // ~10-20 µs on one core
  cpu::CpuContext ctx_;
  cpu::CpuContext serial_{1};
  std::vector<char> constant_;  // per value
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
