// Properties of the arena planner on random graphs (no kernels run here).
#include <gtest/gtest.h>

#include <random>

#include "encore/graph/plan.h"
#include "graph/memory_planner.h"

using namespace encore;

namespace {

// A random graph of elementwise ops, views, reductions and concats over [R, C] f32 values.
Graph random_graph(std::mt19937& rng, int ops) {
  Graph g;
  std::vector<Value> pool{g.input("x", DType::F32, {6, 8}), g.input("y", DType::F32, {6, 8})};
  std::uniform_int_distribution<int> kind(0, 6);
  auto pick = [&] { return pool[std::uniform_int_distribution<std::size_t>(0, pool.size() - 1)(rng)]; };
  for (int i = 0; i < ops; ++i) {
    Value a = pick(), b = pick();
    Value r;
    switch (kind(rng)) {
      case 0: r = g.add(a, b); break;
      case 1: r = g.mul(a, b); break;
      case 2: r = g.gelu(a); break;
      case 3: r = g.reshape(g.contiguous(g.transpose(a, 0, 1)), {6, 8}); break;
      case 4: r = g.scale(a, 0.5f, 1.0f); break;
      case 5: { const Value parts[] = {g.slice(a, 1, 0, 4), g.slice(b, 1, 4, 8)}; r = g.concat(parts, 1); break; }
      default: r = g.softmax(a, -1); break;
    }
    pool.push_back(r);
    if (rng() % 5 == 0) g.output("o" + std::to_string(i), r);
  }
  g.output("last", pool.back());
  return g;
}

}  // namespace

TEST(MemoryPlanner, LiveBuffersNeverOverlapOnRandomGraphs) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 200; ++trial) {
    const Graph g = random_graph(rng, 5 + trial % 40);
    const detail::MemoryPlan plan = detail::plan_memory(g);
    std::size_t peak = 0;
    for (std::size_t i = 0; i < plan.placements.size(); ++i) {
      const Placement& a = plan.placements[i];
      peak = std::max(peak, a.offset + a.bytes);
      EXPECT_EQ(a.offset % 64, 0u);
      for (std::size_t j = i + 1; j < plan.placements.size(); ++j) {
        const Placement& b = plan.placements[j];
        const bool live_together = a.first_node <= b.last_node && b.first_node <= a.last_node;
        const bool share_bytes = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
        ASSERT_FALSE(live_together && share_bytes)
            << "trial " << trial << ": values " << a.value << " and " << b.value << " overlap";
      }
    }
    EXPECT_EQ(peak, plan.peak_bytes);
    // Every operand's buffer is alive at each node that reads it or writes it.
    for (int n = 0; n < static_cast<int>(g.nodes().size()); ++n) {
      const Node& node = g.nodes()[static_cast<std::size_t>(n)];
      for (const auto& list : {node.inputs, node.outputs})
        for (int v : list) {
          if (v < 0 || plan.placement_of[static_cast<std::size_t>(v)] < 0) continue;
          const Placement& p = plan.placements[static_cast<std::size_t>(plan.placement_of[static_cast<std::size_t>(v)])];
          ASSERT_LE(p.first_node, n);
          ASSERT_GE(p.last_node, n);
        }
    }
  }
}

TEST(MemoryPlanner, ReusesMemoryAlongAChain) {
  Graph g;
  auto x = g.input("x", DType::F32, {256, 256});
  Value h = x;
  for (int i = 0; i < 20; ++i) h = g.gelu(g.scale(h, 1.01f));
  g.output("y", h);
  const detail::MemoryPlan plan = detail::plan_memory(g);
  const std::size_t one = 256 * 256 * 4;
  EXPECT_EQ(plan.placements.size(), 40u);
  EXPECT_LE(plan.peak_bytes, 2 * one);  // ping-pong between two buffers
}

TEST(MemoryPlanner, BinaryWritesInPlaceWhenItsOperandDies) {
  Graph g;
  auto x = g.input("x", DType::F32, {64, 64});
  auto a = g.scale(x, 2.0f);
  auto b = g.add(a, x);  // a dies here: b takes its buffer
  g.output("b", b);
  const detail::MemoryPlan plan = detail::plan_memory(g);
  EXPECT_EQ(plan.root[static_cast<std::size_t>(b.id)], a.id);
  EXPECT_EQ(plan.placements.size(), 1u);
  EXPECT_EQ(plan.peak_bytes, 64u * 64 * 4);
}

TEST(MemoryPlanner, ViewsShareTheirBaseAndExtendItsLife) {
  Graph g;
  auto x = g.input("x", DType::F32, {4, 16});
  auto a = g.scale(x, 2.0f);
  auto v = g.slice(a, 1, 0, 8);
  auto big = g.scale(x, 3.0f);  // must not reuse a's buffer: v (a view of a) is read later
  auto c = g.add(g.contiguous(v), g.slice(big, 1, 8, 16));
  g.output("c", c);
  const detail::MemoryPlan plan = detail::plan_memory(g);
  EXPECT_EQ(plan.root[static_cast<std::size_t>(v.id)], a.id);
  const Placement& pa = plan.placements[static_cast<std::size_t>(plan.placement_of[static_cast<std::size_t>(a.id)])];
  const Placement& pb = plan.placements[static_cast<std::size_t>(plan.placement_of[static_cast<std::size_t>(big.id)])];
  EXPECT_TRUE(pa.offset + pa.bytes <= pb.offset || pb.offset + pb.bytes <= pa.offset);
}

TEST(MemoryPlanner, PlanReportsPeakBeforeRunning) {
  Graph g;
  auto x = g.input("x", DType::F32, {8, 8});
  g.output("y", g.scale(g.scale(x, 2.0f), 3.0f));
  Plan plan(g);
  EXPECT_GT(plan.peak_bytes(), 0u);
  EXPECT_LE(plan.peak_bytes(), 2u * 8 * 8 * 4);
  EXPECT_THROW(Plan(g, {.device = Device::cuda(1000)}), Error);  // no such device (or no CUDA backend)
}
