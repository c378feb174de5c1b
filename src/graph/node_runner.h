// The backend side of a Plan: runs nodes on one device.
#pragma once

#include <chrono>
#include <memory>
#include <vector>
#include <span>

#include "encore/graph/plan.h"

namespace encore::detail {

class NodeRunner {
 public:
  virtual ~NodeRunner() = default;
  /// `inputs[i]` is undefined for an absent optional operand; outputs are preallocated.
  virtual void run(const Node& node, std::span<const Tensor> inputs, std::span<const Tensor> outputs) = 0;
  /// Fills `storage` with 0xFF bytes (RunOptions::poison_arena).
  virtual void poison(Storage& storage) = 0;
  /// Which values are graph constants (views of one included), given once after planning: a
  /// backend may cache what it derives from a constant (packed GEMM weights), never from another
  /// value, whose buffer keeps its address while its contents change from run to run.
  virtual void set_constants(std::vector<char> is_constant) { (void)is_constant; }
  // Node timing (RunOptions::profile): mark() once before the first node and after every node;
  // marks_elapsed() then waits for the work and returns the time between consecutive marks in µs.
  // The default measures host wall time (right for the CPU, where run() returns when done).
  virtual void mark() { marks_.push_back(std::chrono::steady_clock::now()); }
  /// Drops the marks of a profiled run that did not finish (a node threw, or it was cancelled).
  virtual void clear_marks() { marks_.clear(); }
  virtual std::vector<double> marks_elapsed() {
    std::vector<double> us;
    for (std::size_t i = 1; i < marks_.size(); ++i)
      us.push_back(std::chrono::duration<double, std::micro>(marks_[i] - marks_[i - 1]).count());
    marks_.clear();
    return us;
  }

 private:
  std::vector<std::chrono::steady_clock::time_point> marks_;

 public:

  // Graph capture (PlanOptions::cuda_graph). A backend that cannot record its launches keeps the
  // defaults and the plan runs its nodes one by one every time.
  virtual bool can_capture() const { return false; }
  /// Starts recording: the run() calls that follow are recorded, not executed.
  virtual void begin_capture() {}
  /// Stops recording; with `keep` the recording becomes the replayable graph (replacing any
  /// earlier one), otherwise it is discarded (a node failed while recording).
  virtual void end_capture(bool /*keep*/) {}
  /// Queues one replay of the recorded graph.
  virtual void replay() {}
};

/// The runner for options.device. Throws Error(unsupported) when this build has no backend for
/// it, and the backend's errors (no such device, arch not compiled in) otherwise.
std::unique_ptr<NodeRunner> make_runner(const PlanOptions& options);

std::unique_ptr<NodeRunner> make_cpu_runner(const PlanOptions& options);
#ifdef ENCORE_HAVE_CUDA
std::unique_ptr<NodeRunner> make_cuda_runner(const PlanOptions& options);
#endif

}  // namespace encore::detail
