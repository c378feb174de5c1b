// Liveness-based placement of a graph's intermediate values in one arena.
#pragma once

#include <vector>

#include "encore/graph/plan.h"

namespace encore::detail {

/// Where each value's buffer comes from.
enum class BufferSource : std::uint8_t { arena, input, constant };

struct MemoryPlan {
  std::vector<Placement> placements;   ///< one per arena buffer
  std::vector<int> root;               ///< per value: the value owning its buffer (itself unless a view/in-place)
  std::vector<BufferSource> source;    ///< per value
  std::vector<int> placement_of;       ///< per value: index into placements (arena values), else -1
  std::size_t peak_bytes = 0;
};

/// Plans `graph` (already optimised): views share their base's buffer, a binary op whose first
/// operand dies at it writes in place, and buffers whose live ranges overlap never overlap in memory.
MemoryPlan plan_memory(const Graph& graph);

}  // namespace encore::detail
