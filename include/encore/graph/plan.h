// encore — planning and running a graph.
//
// Plan(graph, options) optimises a copy of the graph (dead-node removal, fusions), places every
// intermediate value in one arena using the values' live ranges, and binds it to a backend.
// peak_bytes() is known before anything runs. run() then executes the nodes in order.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "encore/core/device.h"
#include "encore/core/tensor.h"
#include "encore/graph/graph.h"

namespace encore {

struct PlanOptions {
  Device device = Device::cpu();
  int num_threads = 0;   ///< CPU threads for this plan's kernels; 0 = encore::num_threads().
  /// Run the fusion passes (linear+activation, residual add+layer norm). Results are those of the
  /// unfused graph, but for bf16/f16 linear outputs: a fused activation acts on the f32
  /// accumulator, not on its rounding to the output dtype (up to one ulp of that dtype apart).
  bool fuse = true;
  /// CUDA plans: record the nodes once as a CUDA graph and replay it on later runs, one launch
  /// instead of one per node (what makes a decode step cheap). The first run executes node by node
  /// (kernels create their lazy state then); the second records and replays. Inputs are copied into
  /// buffers the plan owns and may then also be given on the CPU. Constants (weights, caches) are
  /// addressed as they were when recorded: state's contents may change between runs (see
  /// Graph::constant), its storage must not. Plans of one device share its stream, so encore runs, builds and destroys them one
  /// thread at a time per device (as it does VitGpt2's calls and Tensor copies); work a caller
  /// queues on the device by other means must not overlap another thread's run. Replays skip the
  /// device-side index checks (they need a host round trip): an out-of-range embedding/gather
  /// index then reads as zeros instead of throwing.
  /// Ignored on the CPU.
  bool cuda_graph = false;
};

/// Time of one node of a profiled run (RunOptions::profile).
struct NodeProfile {
  OpKind kind = OpKind::input;
  /// CPU: wall time of the node. CUDA: device time between events queued before and after the
  /// node's kernels (host launch gaps between nodes excluded).
  double microseconds = 0;
};

struct RunOptions {
  /// Checked between nodes; when it becomes true run() throws Error(cancelled).
  const std::atomic<bool>* cancel = nullptr;
  /// Fills the arena with 0xFF bytes (NaN for floats) before running: a debugging aid that makes
  /// any element a kernel forgets to write show up. Costs one pass over the arena.
  bool poison_arena = false;
  /// When set, receives one entry per executed node, in order (see NodeProfile). A plan that
  /// replays a CUDA graph runs node by node for a profiled run. A diagnostic, not for production
  /// runs.
  std::vector<NodeProfile>* profile = nullptr;
};

/// Where a value lives in the arena (for tests and memory reports).
struct Placement {
  int value = -1;
  std::size_t offset = 0;  ///< bytes from the arena start
  std::size_t bytes = 0;
  int first_node = 0;      ///< node that defines it (index in optimised_graph())
  int last_node = 0;       ///< last node that reads it (or the end, for outputs)
};

class Plan {
 public:
  /// Optimises `graph` (the caller's graph is not changed), plans memory and allocates the arena
  /// on options.device. Throws Error(unsupported) when the device has no backend in this build;
  /// some op or dtype combinations a backend does not support are only reported by run().
  explicit Plan(const Graph& graph, const PlanOptions& options = {});
  ~Plan();
  Plan(Plan&&) noexcept;
  Plan& operator=(Plan&&) noexcept;

  /// Bytes of the arena holding every intermediate value (weights and inputs excluded).
  std::size_t peak_bytes() const noexcept;
  /// Arena placements, one per buffer of the arena (views and in-place results share their root's).
  const std::vector<Placement>& placements() const noexcept;
  /// The graph after the passes.
  const Graph& optimised_graph() const noexcept;
  /// True once runs replay a recorded CUDA graph (PlanOptions::cuda_graph, from the second run on).
  bool replays_cuda_graph() const noexcept;
  /// True when run() takes inputs that live on the host: a CPU plan, or a plan that records a CUDA
  /// graph (it copies every input into a buffer of its own). Otherwise inputs must be on the
  /// plan's device.
  bool accepts_host_inputs() const noexcept;

  /// Runs the graph. `inputs` maps every graph input name to a tensor of the declared dtype and
  /// shape on the plan's device (any strides: a non-contiguous view is copied, on its device;
  /// CPU tensors are accepted too where accepts_host_inputs()). An output of the
  /// previous run may be given as an input: it is copied first. Returns the outputs by name; they
  /// are views into the arena, valid until the next run() (clone() to keep them), except an output
  /// that is an input or a constant (or a view of one): that is the tensor itself, so writing
  /// through it writes the input or the weight (with cuda_graph, inputs are the plan's copies: an
  /// output that is an input is that copy, overwritten by the next run). One run at a time per plan.
  std::map<std::string, Tensor> run(const std::map<std::string, Tensor>& inputs, const RunOptions& options = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace encore
