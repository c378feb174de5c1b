#include "graph/passes.h"

#include <unordered_map>

#include "core/check.h"

namespace encore::detail {
namespace {

struct Uses {
  std::vector<int> count;           // per value: number of node inputs reading it
  std::vector<int> single_user;     // per value: the node reading it, when count == 1
  std::vector<bool> is_output;
};

Uses count_uses(const Graph& g) {
  Uses u{std::vector<int>(g.values().size(), 0), std::vector<int>(g.values().size(), -1),
         std::vector<bool>(g.values().size(), false)};
  for (std::size_t n = 0; n < g.nodes().size(); ++n)
    for (int in : g.nodes()[n].inputs)
      if (in >= 0) ++u.count[static_cast<std::size_t>(in)], u.single_user[static_cast<std::size_t>(in)] = static_cast<int>(n);
  for (const auto& [name, id] : g.outputs()) u.is_output[static_cast<std::size_t>(id)] = true;
  return u;
}

std::vector<bool> live_nodes(const Graph& g) {
  std::vector<bool> needed_value(g.values().size(), false), live(g.nodes().size(), false);
  for (const auto& [name, id] : g.outputs()) needed_value[static_cast<std::size_t>(id)] = true;
  for (int n = static_cast<int>(g.nodes().size()) - 1; n >= 0; --n) {
    const Node& node = g.nodes()[static_cast<std::size_t>(n)];
    bool needed = has_side_effects(node.kind);
    for (int out : node.outputs) needed = needed || needed_value[static_cast<std::size_t>(out)];
    if (!needed) continue;
    live[static_cast<std::size_t>(n)] = true;
    for (int in : node.inputs)
      if (in >= 0) needed_value[static_cast<std::size_t>(in)] = true;
  }
  return live;
}

// A fusion decided on the original graph: node `absorbed` disappears into node `host`.
struct Fusions {
  std::unordered_map<int, int> linear_activation;  // linear node -> activation node
  std::unordered_map<int, int> add_norm;           // add node -> layer_norm node
  std::vector<bool> absorbed;
};

bool defined_before(const Graph& g, int value, int node) {
  return value < 0 || g.values()[static_cast<std::size_t>(value)].producer < node;
}

Fusions find_fusions(const Graph& g, const std::vector<bool>& live) {
  const Uses u = count_uses(g);
  Fusions f;
  f.absorbed.assign(g.nodes().size(), false);
  for (std::size_t n = 0; n < g.nodes().size(); ++n) {
    const Node& node = g.nodes()[n];
    if (!live[n] || node.outputs.size() != 1) continue;
    const auto out = static_cast<std::size_t>(node.outputs[0]);
    if (u.count[out] < 1) continue;
    const int user = u.single_user[out];
    if (node.kind == OpKind::linear && u.count[out] == 1 && !u.is_output[out] &&
        std::get<LinearAttrs>(node.attrs).activation == Activation::none && live[static_cast<std::size_t>(user)] &&
        g.nodes()[static_cast<std::size_t>(user)].kind == OpKind::activation) {
      f.linear_activation[static_cast<int>(n)] = user;
      f.absorbed[static_cast<std::size_t>(user)] = true;
    }
    if (node.kind == OpKind::binary && std::get<BinaryOp>(node.attrs) == BinaryOp::add) {
      // The layer norm may be any later reader of the sum; the sum itself stays available.
      for (std::size_t m = n + 1; m < g.nodes().size(); ++m) {
        const Node& ln = g.nodes()[m];
        if (!live[m] || ln.kind != OpKind::layer_norm || ln.inputs[0] != node.outputs[0] || f.absorbed[m]) continue;
        const Shape& s = g.values()[out].shape;
        const bool same_shapes = g.values()[static_cast<std::size_t>(node.inputs[0])].shape == s &&
                                 g.values()[static_cast<std::size_t>(node.inputs[1])].shape == s;
        if (same_shapes && defined_before(g, ln.inputs[1], static_cast<int>(n)) &&
            defined_before(g, ln.inputs[2], static_cast<int>(n))) {
          f.add_norm[static_cast<int>(n)] = static_cast<int>(m);
          f.absorbed[m] = true;
        }
        break;
      }
    }
  }
  return f;
}

// Re-emits nodes into a fresh graph, remapping value ids.
class Rebuilder {
 public:
  explicit Rebuilder(const Graph& g) : g_(g), map_(g.values().size(), -1) {}

  int get(int old) {
    if (old < 0) return -1;
    int& m = map_[static_cast<std::size_t>(old)];
    if (m < 0) {
      const ValueInfo& info = g_.values()[static_cast<std::size_t>(old)];
      ENCORE_CHECK(info.producer < 0 && !info.is_input, invalid_argument,
                   "graph pass: value {} is used before it is defined", old);
      m = out_.constant(info.constant, info.name).id;
    }
    return m;
  }
  void set(int old, int now) { map_[static_cast<std::size_t>(old)] = now; }

  void emit(const Node& node, OpAttrs attrs, std::vector<int> old_inputs, std::vector<int> old_outputs,
            OpKind kind) {
    std::vector<int> inputs;
    for (int in : old_inputs) inputs.push_back(get(in));
    if (kind == OpKind::view) {
      set(old_outputs[0], emit_view(std::get<ViewAttrs>(attrs), Value{inputs[0]}).id);
      return;
    }
    std::vector<std::pair<DType, Shape>> types;
    for (int o : old_outputs) {
      const ValueInfo& info = g_.values()[static_cast<std::size_t>(o)];
      types.emplace_back(info.dtype, info.shape);
    }
    const auto values = out_.add_node(kind, std::move(attrs), std::move(inputs), std::move(types));
    for (std::size_t i = 0; i < values.size(); ++i) set(old_outputs[i], values[i].id);
    (void)node;
  }

  Graph finish() {
    for (const auto& [name, id] : g_.outputs()) out_.output(name, Value{get(id)});
    return std::move(out_);
  }
  Graph& out() { return out_; }

 private:
  Value emit_view(const ViewAttrs& v, Value x) {
    switch (v.kind) {
      case ViewAttrs::Kind::reshape: return out_.reshape(x, v.shape);
      case ViewAttrs::Kind::slice: return out_.slice(x, v.slice.axis, v.slice.start, v.slice.end, v.slice.step);
      case ViewAttrs::Kind::permute: return out_.permute(x, v.order);
      case ViewAttrs::Kind::expand: return out_.expand(x, v.shape);
    }
    return x;
  }
  const Graph& g_;
  Graph out_;
  std::vector<int> map_;
};

}  // namespace

Graph optimise_graph(const Graph& g, bool fuse) {
  const std::vector<bool> live = live_nodes(g);
  const Fusions f = fuse ? find_fusions(g, live) : Fusions{{}, {}, std::vector<bool>(g.nodes().size(), false)};
  Rebuilder r(g);
  for (int id : g.inputs()) {
    const ValueInfo& info = g.values()[static_cast<std::size_t>(id)];
    r.set(id, r.out().input(info.name, info.dtype, info.shape).id);
  }
  for (std::size_t n = 0; n < g.nodes().size(); ++n) {
    const Node& node = g.nodes()[n];
    if (!live[n] || f.absorbed[n]) continue;
    if (auto it = f.linear_activation.find(static_cast<int>(n)); it != f.linear_activation.end()) {
      const Node& act = g.nodes()[static_cast<std::size_t>(it->second)];
      LinearAttrs attrs = std::get<LinearAttrs>(node.attrs);
      attrs.activation = std::get<Activation>(act.attrs);
      r.emit(node, attrs, node.inputs, act.outputs, OpKind::linear);
      continue;
    }
    if (auto it = f.add_norm.find(static_cast<int>(n)); it != f.add_norm.end()) {
      const Node& ln = g.nodes()[static_cast<std::size_t>(it->second)];
      r.emit(node, ln.attrs, {node.inputs[0], node.inputs[1], ln.inputs[1], ln.inputs[2]},
             {node.outputs[0], ln.outputs[0]}, OpKind::add_layer_norm);
      continue;
    }
    r.emit(node, node.attrs, node.inputs, node.outputs, node.kind);
  }
  return r.finish();
}

}  // namespace encore::detail
