// Plan: optimise, place in one arena, bind to a backend, run.
#include "encore/graph/plan.h"

#include "core/check.h"
#include "core/device_lock.h"
#include "encore/core/logging.h"
#include "encore/core/threads.h"
#include "graph/node_runner.h"
#include "graph/memory_planner.h"
#include "graph/passes.h"

namespace encore {

struct Plan::Impl {
  Graph graph;
  detail::MemoryPlan memory;
  PlanOptions options;
  std::shared_ptr<Storage> arena;
  std::unique_ptr<detail::NodeRunner> runner;
  std::vector<Tensor> values;         // per value: its tensor (inputs and their views rebound per run)
  std::vector<bool> depends_on_input; // per value: its buffer is a graph input
  bool owns_inputs = false;           // PlanOptions::cuda_graph on a backend that can record
  bool record = false;                // recording wanted (turned off if a recording fails)
  bool recorded = false;              // runs replay the recording
  int memory_retries = 0;             // recordings that ran out of device memory (retried, bounded)
  int runs = 0;                       // completed runs

  void bind_input_views();
  void run_nodes(const RunOptions& options);
  void record_nodes();
};

namespace {

Tensor view_of(const Tensor& base, const Tensor& layout, std::size_t base_offset) {
  return Tensor::from_storage(base.storage(), base_offset + layout.offset_bytes(), layout.shape(), layout.strides(),
                              layout.dtype());
}

}  // namespace

namespace {

// Constants that live elsewhere than the plan's device (weights loaded on the CPU, a CUDA plan)
// are copied there once, here, never per run. State the graph writes to (caches), and the decode
// bookkeeping a caller updates between runs (block tables, lengths), would then be a stale
// snapshot: it must already live on the device.
void place_constants(const Graph& g, const detail::MemoryPlan& memory, Device device, std::vector<Tensor>& values) {
  std::vector<const char*> state(values.size(), nullptr);  // by root: what the graph uses it as
  auto mark = [&](const Node& node, std::initializer_list<int> inputs, const char* what) {
    for (int i : inputs) state[static_cast<std::size_t>(memory.root[static_cast<std::size_t>(node.inputs[static_cast<std::size_t>(i)])])] = what;
  };
  for (const Node& node : g.nodes()) {
    if (node.kind == OpKind::kv_cache_write) {
      mark(node, {4, 5}, "a block table or lengths tensor of kv_cache_write");
      mark(node, {2, 3}, "a cache written by kv_cache_write");
    } else if (node.kind == OpKind::decode_attention) {
      mark(node, {3, 4}, "a block table or lengths tensor of decode_attention");
    }
  }
  for (std::size_t v = 0; v < values.size(); ++v) {
    if (memory.source[v] != detail::BufferSource::constant || values[v].device() == device) continue;
    const char* what = state[static_cast<std::size_t>(memory.root[v])];
    ENCORE_CHECK(what == nullptr, invalid_argument,
                 "Plan: {} is a constant on {}, the plan runs on {}; a copy made when the plan is built would not "
                 "see later updates: allocate it on {} (or make it a graph input)",
                 what, values[v].device().str(), device.str(), device.str());
    values[v] = values[v].device().is_cpu() ? values[v].contiguous().to(device) : values[v].to(Device::cpu()).to(device);
  }
}

}  // namespace

Plan::Plan(const Graph& graph, const PlanOptions& options) : impl_(std::make_unique<Impl>()) {
  const auto lock = detail::lock_device(options.device);  // constants are copied to the device here
  Impl& p = *impl_;
  p.options = options;
  ENCORE_CHECK(options.num_threads >= 0 && options.num_threads <= max_thread_count(), invalid_argument,
               "PlanOptions::num_threads = {} is not valid: expected 0 (the default) or 1..{}", options.num_threads,
               max_thread_count());
  if (p.options.num_threads == 0) p.options.num_threads = num_threads();
  p.runner = detail::make_runner(p.options);  // validates the device first
  p.graph = detail::optimise_graph(graph, options.fuse);
  p.memory = detail::plan_memory(p.graph);
  p.arena = Storage::allocate(p.memory.peak_bytes, options.device);
  std::vector<char> constant(p.memory.source.size());
  for (std::size_t v = 0; v < constant.size(); ++v)
    constant[v] = p.memory.source[v] == detail::BufferSource::constant ? 1 : 0;
  p.runner->set_constants(std::move(constant));

  const std::size_t nv = p.graph.values().size();
  p.values.resize(nv);
  p.depends_on_input.assign(nv, false);
  for (std::size_t v = 0; v < nv; ++v) {
    const Tensor& layout = p.graph.layout(Value{static_cast<int>(v)});
    switch (p.memory.source[v]) {
      case detail::BufferSource::constant:
        p.values[v] = layout;
        break;
      case detail::BufferSource::input: p.depends_on_input[v] = true; break;
      case detail::BufferSource::arena: {
        const Placement& pl = p.memory.placements[static_cast<std::size_t>(p.memory.placement_of[v])];
        p.values[v] = Tensor::from_storage(p.arena, pl.offset + layout.offset_bytes(), layout.shape(),
                                           layout.strides(), layout.dtype());
        break;
      }
    }
  }
  place_constants(p.graph, p.memory, p.options.device, p.values);

  p.owns_inputs = p.record = p.options.cuda_graph && p.runner->can_capture();
  if (p.owns_inputs) {  // recorded addresses must not change: inputs get buffers of their own
    for (int id : p.graph.inputs()) {
      const ValueInfo& info = p.graph.values()[static_cast<std::size_t>(id)];
      p.values[static_cast<std::size_t>(id)] = Tensor::empty(info.shape, info.dtype, p.options.device);
    }
    p.bind_input_views();
  }
}

void Plan::Impl::bind_input_views() {
  for (std::size_t v = 0; v < graph.values().size(); ++v) {
    if (!depends_on_input[v] || graph.values()[v].is_input) continue;
    const Tensor& base = values[static_cast<std::size_t>(memory.root[v])];
    values[v] = view_of(base, graph.layout(Value{static_cast<int>(v)}), base.offset_bytes());
  }
}

void Plan::Impl::run_nodes(const RunOptions& options) {
  std::vector<Tensor> ins, outs;
  std::vector<OpKind> profiled;
  if (options.profile != nullptr) runner->clear_marks(), runner->mark();  // none left by a failed run
  for (const Node& node : graph.nodes()) {
    if (options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed))
      detail::fail(ErrorCode::cancelled, "Plan::run: cancelled before op '{}'", op_name(node.kind));
    if (node.kind == OpKind::view) continue;
    ins.clear();
    outs.clear();
    for (int in : node.inputs) ins.push_back(in >= 0 ? values[static_cast<std::size_t>(in)] : Tensor());
    for (int out : node.outputs) outs.push_back(values[static_cast<std::size_t>(out)]);
    runner->run(node, ins, outs);
    if (options.profile != nullptr) runner->mark(), profiled.push_back(node.kind);
  }
  if (options.profile == nullptr) return;
  const std::vector<double> us = runner->marks_elapsed();
  for (std::size_t i = 0; i < profiled.size() && i < us.size(); ++i) options.profile->push_back(NodeProfile{profiled[i], us[i]});
}

// Records the nodes (the caller then replays the recording). A node that cannot be recorded, or a
// recording that cannot be finished, turns recording off for this plan: it runs node by node.
// Running out of device memory is different: a recording keeps every block it frees (the graph
// holds their addresses) and may not release the cache, so it needs more memory than an eager run.
// The cache is then released outside the capture and the recording retried on a later run (a
// few times), rather than the plan giving up its replays for good.
void Plan::Impl::record_nodes() {
  constexpr int kMemoryRetries = 3;
  bool capturing = false;
  try {
    runner->begin_capture();
    capturing = true;
    run_nodes(RunOptions{});
    capturing = false;  // end_capture(true) ends the capture whether or not it then succeeds
    runner->end_capture(true);
    recorded = true;
  } catch (const std::exception& e) {
    if (capturing) runner->end_capture(false);
    const auto* error = dynamic_cast<const Error*>(&e);
    if (error != nullptr && error->code() == ErrorCode::out_of_memory && ++memory_retries <= kMemoryRetries) {
      (void)release_cached_memory(options.device);
      detail::log(LogLevel::warn, "Plan: recording a CUDA graph ran out of device memory ({}); the cache was "
                  "released and the next run records again (attempt {} of {})", e.what(), memory_retries,
                  kMemoryRetries);
      return;
    }
    record = false;
    detail::log(LogLevel::warn, "Plan: recording a CUDA graph failed ({}); running node by node", e.what());
  }
}

Plan::~Plan() {
  if (impl_ == nullptr) return;  // moved from
  const auto lock = detail::lock_device(impl_->options.device);  // destroying a runner syncs the stream
  impl_.reset();
}
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&& other) noexcept {
  if (this != &other) {
    if (impl_ != nullptr) {  // the old plan goes as ~Plan lets it: under its device's lock
      const auto lock = detail::lock_device(impl_->options.device);
      impl_.reset();
    }
    impl_ = std::move(other.impl_);
  }
  return *this;
}

std::size_t Plan::peak_bytes() const noexcept { return impl_->memory.peak_bytes; }
const std::vector<Placement>& Plan::placements() const noexcept { return impl_->memory.placements; }
const Graph& Plan::optimised_graph() const noexcept { return impl_->graph; }
bool Plan::replays_cuda_graph() const noexcept { return impl_->recorded; }
bool Plan::accepts_host_inputs() const noexcept { return impl_->options.device.is_cpu() || impl_->owns_inputs; }

std::map<std::string, Tensor> Plan::run(const std::map<std::string, Tensor>& inputs, const RunOptions& options) {
  Impl& p = *impl_;
  const auto lock = detail::lock_device(p.options.device);  // see core/device_lock.h
  const Graph& g = p.graph;
  // Bind inputs (validated against their declarations), then rebind every view of an input.
  for (int id : g.inputs()) {
    const ValueInfo& info = g.values()[static_cast<std::size_t>(id)];
    const auto it = inputs.find(info.name);
    ENCORE_CHECK(it != inputs.end(), invalid_argument, "Plan::run: graph input '{}' ({} {}) was not given", info.name,
                 dtype_name(info.dtype), info.shape.str());
    const Tensor& t = it->second;
    ENCORE_CHECK(t.defined() && t.dtype() == info.dtype && t.shape() == info.shape, invalid_argument,
                 "Plan::run: input '{}' must be {} {}, got {}", info.name, dtype_name(info.dtype), info.shape.str(),
                 t.str());
    const bool host_ok = p.owns_inputs && t.device().is_cpu();
    ENCORE_CHECK(t.device() == p.options.device || host_ok, invalid_argument,
                 "Plan::run: input '{}' is on {}, the plan runs on {}", info.name, t.device().str(),
                 p.options.device.str());
  }
  for (const auto& [name, t] : inputs) {
    bool known = false;
    for (int id : g.inputs()) known = known || g.values()[static_cast<std::size_t>(id)].name == name;
    ENCORE_CHECK(known, invalid_argument, "Plan::run: '{}' is not an input of this graph", name);
  }
  // A recorded plan copies its inputs into buffers of its own, and an output that is an input is
  // that buffer: given back as another input, it must be read before the copies overwrite it.
  std::map<int, Tensor> held;
  if (p.owns_inputs)
    for (int id : g.inputs()) {
      const Tensor& t = inputs.at(g.values()[static_cast<std::size_t>(id)].name);
      for (int other : g.inputs())
        if (t.storage() != nullptr && t.storage() == p.values[static_cast<std::size_t>(other)].storage()) {
          held[id] = t.clone();
          break;
        }
    }
  for (int id : g.inputs()) {
    const auto kept = held.find(id);
    const Tensor& t = kept != held.end() ? kept->second : inputs.at(g.values()[static_cast<std::size_t>(id)].name);
    Tensor& bound = p.values[static_cast<std::size_t>(id)];
    if (p.owns_inputs)
      bound.copy_from(t);  // into the recorded address (a strided view is gathered on its device)
    else if (t.storage() == p.arena)
      bound = t.clone();  // a previous run's output fed back: the arena is about to be overwritten
    else
      bound = t.contiguous();
  }
  if (!p.owns_inputs) p.bind_input_views();

  if (options.poison_arena) p.runner->poison(*p.arena);
  if (options.profile != nullptr) options.profile->clear();
  const bool replay_ok = options.profile == nullptr;  // a profiled run goes node by node
  if (p.record && !p.recorded && p.runs >= 1 && replay_ok) {
    if (options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed))
      detail::fail(ErrorCode::cancelled, "Plan::run: cancelled before running");
    p.record_nodes();
  }
  if (p.recorded && replay_ok) {
    if (options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed))
      detail::fail(ErrorCode::cancelled, "Plan::run: cancelled before running");
    p.runner->replay();
  } else {
    p.run_nodes(options);
  }
  ++p.runs;

  std::map<std::string, Tensor> result;
  for (const auto& [name, id] : g.outputs()) result.emplace(name, p.values[static_cast<std::size_t>(id)]);
  return result;
}

}  // namespace encore
