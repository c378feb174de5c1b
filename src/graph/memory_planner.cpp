#include "graph/memory_planner.h"

#include <algorithm>

#include "core/check.h"

namespace encore::detail {
namespace {

constexpr std::size_t kArenaAlignment = 64;

std::size_t aligned_bytes(const ValueInfo& v) {
  const std::size_t bytes = static_cast<std::size_t>(v.shape.numel()) * dtype_size(v.dtype);
  return (bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
}

// A binary op may write into its first operand when that operand's buffer dies here, is an arena
// buffer of exactly the output's layout, is read by nothing later, and is not also read through
// the other operand (a transpose or slice of it would be read after being overwritten).
bool can_write_in_place(const Graph& g, const Node& node, int n, const std::vector<int>& root,
                        const std::vector<BufferSource>& source, const std::vector<int>& last_use,
                        const std::vector<bool>& is_output) {
  if (node.kind != OpKind::binary) return false;
  const int a = node.inputs[0];
  const int r = root[static_cast<std::size_t>(a)];
  const ValueInfo& ai = g.values()[static_cast<std::size_t>(a)];
  const ValueInfo& oi = g.values()[static_cast<std::size_t>(node.outputs[0])];
  for (std::size_t i = 1; i < node.inputs.size(); ++i)
    if (node.inputs[i] >= 0 && root[static_cast<std::size_t>(node.inputs[i])] == r) return false;
  return source[static_cast<std::size_t>(r)] == BufferSource::arena && r == a && ai.shape == oi.shape &&
         ai.dtype == oi.dtype && last_use[static_cast<std::size_t>(r)] == n && !is_output[static_cast<std::size_t>(r)];
}

}  // namespace

MemoryPlan plan_memory(const Graph& g) {
  const std::size_t nv = g.values().size();
  const int end = static_cast<int>(g.nodes().size());
  MemoryPlan plan;
  plan.root.resize(nv);
  plan.source.assign(nv, BufferSource::arena);
  plan.placement_of.assign(nv, -1);
  std::vector<bool> is_output(nv, false);
  for (const auto& [name, id] : g.outputs()) is_output[static_cast<std::size_t>(id)] = true;

  // Roots: views alias their input's buffer.
  for (std::size_t v = 0; v < nv; ++v) {
    const ValueInfo& info = g.values()[v];
    plan.root[v] = static_cast<int>(v);
    if (info.is_input) plan.source[v] = BufferSource::input;
    else if (info.producer < 0) plan.source[v] = BufferSource::constant;
  }
  for (const Node& node : g.nodes())
    if (node.kind == OpKind::view) {
      const int r = plan.root[static_cast<std::size_t>(node.inputs[0])];
      plan.root[static_cast<std::size_t>(node.outputs[0])] = r;
      plan.source[static_cast<std::size_t>(node.outputs[0])] = plan.source[static_cast<std::size_t>(r)];
    }

  // Last use of each root buffer (through any of its views); outputs live to the end.
  std::vector<int> last_use(nv, -1);
  for (int n = 0; n < end; ++n)
    for (int in : g.nodes()[static_cast<std::size_t>(n)].inputs)
      if (in >= 0) last_use[static_cast<std::size_t>(plan.root[static_cast<std::size_t>(in)])] = n;
  for (std::size_t v = 0; v < nv; ++v)
    if (is_output[v]) last_use[static_cast<std::size_t>(plan.root[v])] = end;

  // In-place binary ops: the output takes over its first operand's buffer.
  for (int n = 0; n < end; ++n) {
    const Node& node = g.nodes()[static_cast<std::size_t>(n)];
    if (!can_write_in_place(g, node, n, plan.root, plan.source, last_use, is_output)) continue;
    const int r = node.inputs[0];
    const auto out = static_cast<std::size_t>(node.outputs[0]);
    plan.root[out] = r;
    last_use[static_cast<std::size_t>(r)] = std::max(last_use[static_cast<std::size_t>(r)], last_use[out]);
  }
  // Later views of an in-place result follow it to the shared root.
  for (const Node& node : g.nodes())
    if (node.kind == OpKind::view)
      plan.root[static_cast<std::size_t>(node.outputs[0])] =
          plan.root[static_cast<std::size_t>(node.inputs[0])];
  for (std::size_t v = 0; v < nv; ++v)
    if (plan.root[v] != static_cast<int>(v))
      last_use[static_cast<std::size_t>(plan.root[v])] =
          std::max(last_use[static_cast<std::size_t>(plan.root[v])], last_use[v]);

  // One placement per arena root buffer.
  for (std::size_t v = 0; v < nv; ++v) {
    if (plan.source[v] != BufferSource::arena || plan.root[v] != static_cast<int>(v)) continue;
    const ValueInfo& info = g.values()[v];
    const int first = info.producer;
    plan.placement_of[v] = static_cast<int>(plan.placements.size());
    plan.placements.push_back(
        Placement{static_cast<int>(v), 0, aligned_bytes(info), first, std::max(first, last_use[v])});
  }

  // Greedy: biggest buffers first, each at the lowest offset that avoids every placed buffer
  // whose live range overlaps.
  std::vector<std::size_t> order(plan.placements.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return plan.placements[a].bytes > plan.placements[b].bytes; });
  std::vector<std::size_t> placed;
  for (std::size_t idx : order) {
    Placement& p = plan.placements[idx];
    std::vector<std::pair<std::size_t, std::size_t>> busy;
    for (std::size_t j : placed) {
      const Placement& q = plan.placements[j];
      if (q.first_node <= p.last_node && p.first_node <= q.last_node) busy.emplace_back(q.offset, q.offset + q.bytes);
    }
    std::sort(busy.begin(), busy.end());
    std::size_t offset = 0;
    for (const auto& [lo, hi] : busy) {
      if (offset + p.bytes <= lo) break;
      offset = std::max(offset, hi);
    }
    p.offset = offset;
    plan.peak_bytes = std::max(plan.peak_bytes, offset + p.bytes);
    placed.push_back(idx);
  }
  for (std::size_t v = 0; v < nv; ++v)
    plan.placement_of[v] = plan.placement_of[static_cast<std::size_t>(plan.root[v])];
  return plan;
}

}  // namespace encore::detail
