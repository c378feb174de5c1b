// Graph values, view ops and the node bookkeeping shared by every builder.
#include "encore/graph/graph.h"

#include <algorithm>

#include "core/check.h"

namespace encore {

const char* op_name(OpKind kind) noexcept {
  switch (kind) {
    case OpKind::input: return "input";
    case OpKind::constant: return "constant";
    case OpKind::linear: return "linear";
    case OpKind::matmul: return "matmul";
    case OpKind::conv1d: return "conv1d";
    case OpKind::conv2d: return "conv2d";
    case OpKind::activation: return "activation";
    case OpKind::binary: return "binary";
    case OpKind::scale: return "scale";
    case OpKind::glu: return "glu";
    case OpKind::cast: return "cast";
    case OpKind::layer_norm: return "layer_norm";
    case OpKind::add_layer_norm: return "add_layer_norm";
    case OpKind::rms_norm: return "rms_norm";
    case OpKind::group_norm: return "group_norm";
    case OpKind::l2_normalize: return "l2_normalize";
    case OpKind::softmax: return "softmax";
    case OpKind::log_softmax: return "log_softmax";
    case OpKind::embedding: return "embedding";
    case OpKind::concat: return "concat";
    case OpKind::copy: return "copy";
    case OpKind::pad: return "pad";
    case OpKind::gather: return "gather";
    case OpKind::scatter_add: return "scatter_add";
    case OpKind::reduce_sum: return "reduce_sum";
    case OpKind::reduce_mean: return "reduce_mean";
    case OpKind::argmax: return "argmax";
    case OpKind::topk: return "topk";
    case OpKind::cumsum: return "cumsum";
    case OpKind::resize: return "resize";
    case OpKind::attention: return "attention";
    case OpKind::rel_pos_attention: return "rel_pos_attention";
    case OpKind::rope: return "rope";
    case OpKind::decode_attention: return "decode_attention";
    case OpKind::kv_cache_write: return "kv_cache_write";
    case OpKind::view: return "view";
  }
  return "?";
}

bool has_side_effects(OpKind kind) noexcept { return kind == OpKind::kv_cache_write; }

const char* activation_name(Activation a) noexcept {
  switch (a) {
    case Activation::none: return "none";
    case Activation::gelu: return "gelu";
    case Activation::gelu_tanh: return "gelu_tanh";
    case Activation::relu: return "relu";
    case Activation::silu: return "silu";
    case Activation::sigmoid: return "sigmoid";
    case Activation::tanh: return "tanh";
  }
  return "?";
}

namespace {
// Layouts are tracked at build time on "phantom" tensors: a Storage that borrows a fake, never
// dereferenced address. Applying the real Tensor view operations to them gives exactly the strides
// and offsets the executor will later apply to the arena, with the same checks.
Tensor phantom(const Shape& shape, DType dtype) {
  static char anchor alignas(64);
  std::size_t bytes = 0;  // numel() checks the extents; the byte size must not wrap either
  ENCORE_CHECK(!__builtin_mul_overflow(static_cast<std::size_t>(shape.numel()), dtype_size(dtype), &bytes) &&
                   bytes < (std::size_t{1} << 62),
               invalid_argument, "a {} value of shape {} is too large to address", dtype_name(dtype), shape.str());
  return Tensor::from_storage(Storage::borrow(&anchor, bytes, Device::cpu(), nullptr), 0, shape,
                              contiguous_strides(shape), dtype);
}
}  // namespace

void Graph::check_value(Value v, const char* op, const char* operand) const {
  ENCORE_CHECK(v.id >= 0 && v.id < static_cast<int>(values_.size()), invalid_argument,
               "{}: operand '{}' is not a value of this graph (id {})", op, operand, v.id);
}

const ValueInfo& Graph::info(Value v) const {
  check_value(v, "info", "value");
  return values_[static_cast<std::size_t>(v.id)];
}

bool Graph::is_contiguous(Value v) const {
  check_value(v, "is_contiguous", "value");
  return layouts_[static_cast<std::size_t>(v.id)].is_contiguous() &&
         layouts_[static_cast<std::size_t>(v.id)].offset_bytes() == 0;
}

const Shape& Graph::strides(Value v) const {
  check_value(v, "strides", "value");
  return layouts_[static_cast<std::size_t>(v.id)].strides();
}

const Tensor& Graph::layout(Value v) const {
  check_value(v, "layout", "value");
  return layouts_[static_cast<std::size_t>(v.id)];
}

Value Graph::input(std::string name, DType dtype, const Shape& shape) {
  ENCORE_CHECK(!name.empty(), invalid_argument, "graph input needs a name");
  for (int id : inputs_)
    ENCORE_CHECK(values_[static_cast<std::size_t>(id)].name != name, invalid_argument,
                 "graph input '{}' is declared twice", name);
  // Everything that may throw, and copies of the arguments (`shape` may be a reference into this
  // graph, e.g. g.shape(v), which the pushes below can move), before the graph changes.
  Tensor layout = phantom(shape, dtype);  // validates the extents and the size
  ValueInfo info{dtype, layout.shape(), -1, 0, std::move(name), {}, true};
  inputs_.reserve(inputs_.size() + 1);
  values_.reserve(values_.size() + 1);
  layouts_.reserve(layouts_.size() + 1);
  values_.push_back(std::move(info));
  layouts_.push_back(std::move(layout));
  inputs_.push_back(static_cast<int>(values_.size()) - 1);
  return Value{static_cast<int>(values_.size()) - 1};
}

Value Graph::constant(const Tensor& tensor, std::string name) {
  ENCORE_CHECK(tensor.defined(), invalid_argument, "graph constant '{}' is an undefined tensor", name);
  Tensor held = tensor;  // `tensor` may be a reference into this graph (info(w).constant)
  ValueInfo info{held.dtype(), held.shape(), -1, 0, std::move(name), held, false};
  values_.reserve(values_.size() + 1);
  layouts_.reserve(layouts_.size() + 1);
  values_.push_back(std::move(info));
  layouts_.push_back(std::move(held));  // constants keep their own layout (any strides)
  return Value{static_cast<int>(values_.size()) - 1};
}

void Graph::output(std::string name, Value v) {
  check_value(v, "output", name.c_str());
  for (const auto& [n, id] : outputs_)
    ENCORE_CHECK(n != name, invalid_argument, "graph output '{}' is declared twice", name);
  outputs_.emplace_back(std::move(name), v.id);
}

std::vector<Value> Graph::add_node(OpKind kind, OpAttrs attrs, std::vector<int> inputs,
                                   std::vector<std::pair<DType, Shape>> outputs) {
  Node node{kind, std::move(attrs), std::move(inputs), {}};
  // The outputs' layouts first (they throw for sizes too large to address), so that a refused
  // node leaves the graph as it was.
  std::vector<Tensor> layouts;
  for (const auto& [dtype, shape] : outputs) layouts.push_back(phantom(shape, dtype));
  std::vector<Value> result;
  const int node_index = static_cast<int>(nodes_.size());
  values_.reserve(values_.size() + outputs.size());
  layouts_.reserve(layouts_.size() + outputs.size());
  nodes_.reserve(nodes_.size() + 1);
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    auto& [dtype, shape] = outputs[i];
    values_.push_back(ValueInfo{dtype, shape, node_index, static_cast<int>(i), {}, {}, false});
    layouts_.push_back(std::move(layouts[i]));
    node.outputs.push_back(static_cast<int>(values_.size()) - 1);
    result.push_back(Value{node.outputs.back()});
  }
  nodes_.push_back(std::move(node));
  return result;
}

Value Graph::view_node(Value x, const ViewAttrs& view, const char* op) {
  check_value(x, op, "x");
  const Tensor& base = layouts_[static_cast<std::size_t>(x.id)];
  Tensor result;
  try {
    switch (view.kind) {
      case ViewAttrs::Kind::reshape: result = base.view(view.shape); break;
      case ViewAttrs::Kind::slice:
        result = base.slice(view.slice.axis, view.slice.start, view.slice.end, view.slice.step);
        break;
      case ViewAttrs::Kind::permute: result = base.permute(std::span<const int>(view.order)); break;
      case ViewAttrs::Kind::expand: result = base.expand(view.shape); break;
    }
  } catch (const Error& e) {
    detail::fail(ErrorCode::invalid_argument, "{}: {}", op, e.what());
  }
  const DType dtype = values_[static_cast<std::size_t>(x.id)].dtype;
  const int node_index = static_cast<int>(nodes_.size());
  values_.push_back(ValueInfo{dtype, result.shape(), node_index, 0, {}, {}, false});
  layouts_.push_back(result);
  nodes_.push_back(Node{OpKind::view, view, {x.id}, {static_cast<int>(values_.size()) - 1}});
  return Value{static_cast<int>(values_.size()) - 1};
}

Value Graph::reshape(Value x, const Shape& shape) {
  check_value(x, "reshape", "x");
  ViewAttrs v{ViewAttrs::Kind::reshape, shape, {}, {}};
  // A view is possible unless the strides forbid it; then copy first (like Tensor::reshape).
  try {
    (void)layouts_[static_cast<std::size_t>(x.id)].view(shape);
  } catch (const Error&) {
    return view_node(contiguous(x), v, "reshape");
  }
  return view_node(x, v, "reshape");
}

Value Graph::slice(Value x, int axis, std::int64_t start, std::int64_t end, std::int64_t step) {
  return view_node(x, ViewAttrs{ViewAttrs::Kind::slice, {}, {}, SliceAttrs{axis, start, end, step}}, "slice");
}

Value Graph::permute(Value x, std::vector<int> order) {
  return view_node(x, ViewAttrs{ViewAttrs::Kind::permute, {}, std::move(order), {}}, "permute");
}

Value Graph::transpose(Value x, int a, int b) {
  check_value(x, "transpose", "x");
  const int rank = info(x).shape.rank();
  std::vector<int> order(static_cast<std::size_t>(rank));
  for (int i = 0; i < rank; ++i) order[static_cast<std::size_t>(i)] = i;
  const int na = normalize_axis(a, rank, "transpose dimension"), nb = normalize_axis(b, rank, "transpose dimension");
  std::swap(order[static_cast<std::size_t>(na)], order[static_cast<std::size_t>(nb)]);
  return permute(x, std::move(order));
}

Value Graph::expand(Value x, const Shape& shape) {
  return view_node(x, ViewAttrs{ViewAttrs::Kind::expand, shape, {}, {}}, "expand");
}

Value Graph::contiguous(Value x) {
  check_value(x, "contiguous", "x");
  const ValueInfo& in = info(x);
  return add_node(OpKind::copy, std::monostate{}, {x.id}, {{in.dtype, in.shape}})[0];
}

}  // namespace encore
