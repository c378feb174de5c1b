// Builders for every op: operand checks and dtype/shape inference. Messages name the op, the
// shapes and the rule broken, so a model author sees what to fix.
#include <algorithm>
#include <limits>

#include "core/check.h"
#include "encore/graph/graph.h"

namespace encore {
namespace {

using Out = std::vector<std::pair<DType, Shape>>;

void require_float(const char* op, const char* operand, const ValueInfo& v) {
  ENCORE_CHECK(is_floating(v.dtype), invalid_argument, "{}: {} must be a float tensor (f32, f16, bf16), got {}", op,
               operand, dtype_name(v.dtype));
}

void require_rank(const char* op, const char* operand, const ValueInfo& v, int lo, int hi) {
  ENCORE_CHECK(v.shape.rank() >= lo && v.shape.rank() <= hi, invalid_argument,
               "{}: {} must have rank {}..{}, got shape {}", op, operand, lo, hi, v.shape.str());
}

void require_vector(const char* op, const char* operand, const ValueInfo& v, std::int64_t n) {
  ENCORE_CHECK(v.shape.rank() == 1 && v.shape[0] == n, invalid_argument, "{}: {} must have shape [{}], got {}", op,
               operand, n, v.shape.str());
}

void require_index(const char* op, const ValueInfo& v) {
  ENCORE_CHECK(v.dtype == DType::I32 || v.dtype == DType::I64, invalid_argument,
               "{}: indices must be i32 or i64, got {}", op, dtype_name(v.dtype));
}

Shape broadcast(const char* op, const Shape& a, const Shape& b) {
  const int rank = std::max(a.rank(), b.rank());
  Shape out;
  for (int i = 0; i < rank; ++i) {
    const int ia = i - (rank - a.rank()), ib = i - (rank - b.rank());
    const std::int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    ENCORE_CHECK(da == db || da == 1 || db == 1, invalid_argument,
                 "{}: shapes {} and {} do not broadcast (dimension {}: {} vs {})", op, a.str(), b.str(), i, da, db);
    out.push_back(da == 1 ? db : da);
  }
  return out;
}

}  // namespace

#define ENCORE_IN(v, op, operand) (check_value(v, op, operand), values_[static_cast<std::size_t>((v).id)])

Value Graph::linear(Value x, Value w, Value bias, const LinearAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "linear", "x");
  const ValueInfo& wi = ENCORE_IN(w, "linear", "w");
  require_float("linear", "x", xi);
  require_float("linear", "w", wi);
  ENCORE_CHECK(xi.shape.rank() >= 1 && wi.shape.rank() == 2, invalid_argument,
               "linear: x must have rank >= 1 and w rank 2, got x {} and w {}", xi.shape.str(), wi.shape.str());
  const bool out_in = attrs.layout == WeightLayout::out_in;
  const std::int64_t k = out_in ? wi.shape[1] : wi.shape[0], n = out_in ? wi.shape[0] : wi.shape[1];
  ENCORE_CHECK(xi.shape.dim(-1) == k, invalid_argument,
               "linear: x {} has {} input features but w {} ({} layout) expects {}", xi.shape.str(), xi.shape.dim(-1),
               wi.shape.str(), out_in ? "[out, in]" : "[in, out]", k);
  std::vector<int> inputs{x.id, w.id, -1};
  if (bias) {
    const ValueInfo& bi = ENCORE_IN(bias, "linear", "bias");
    require_vector("linear", "bias", bi, n);
    inputs[2] = bias.id;
  }
  Shape out = xi.shape;
  out[out.rank() - 1] = n;
  return add_node(OpKind::linear, attrs, std::move(inputs), {{xi.dtype, out}})[0];
}

Value Graph::matmul(Value a, Value b, const MatMulAttrs& attrs) {
  const ValueInfo& ai = ENCORE_IN(a, "matmul", "a");
  const ValueInfo& bi = ENCORE_IN(b, "matmul", "b");
  require_float("matmul", "a", ai);
  require_float("matmul", "b", bi);
  require_rank("matmul", "a", ai, 2, kMaxDims);
  require_rank("matmul", "b", bi, 2, kMaxDims);
  const std::int64_t m = attrs.trans_a ? ai.shape.dim(-1) : ai.shape.dim(-2);
  const std::int64_t ka = attrs.trans_a ? ai.shape.dim(-2) : ai.shape.dim(-1);
  const std::int64_t kb = attrs.trans_b ? bi.shape.dim(-1) : bi.shape.dim(-2);
  const std::int64_t n = attrs.trans_b ? bi.shape.dim(-2) : bi.shape.dim(-1);
  ENCORE_CHECK(ka == kb, invalid_argument, "matmul: inner dimensions differ: a {}{} gives K={}, b {}{} gives K={}",
               ai.shape.str(), attrs.trans_a ? "ᵀ" : "", ka, bi.shape.str(), attrs.trans_b ? "ᵀ" : "", kb);
  Shape ab(std::span(ai.shape.begin(), ai.shape.size() - 2)), bb(std::span(bi.shape.begin(), bi.shape.size() - 2));
  Shape out = broadcast("matmul (batch dimensions)", ab, bb);
  out.push_back(m);
  out.push_back(n);
  return add_node(OpKind::matmul, attrs, {a.id, b.id}, {{ai.dtype, out}})[0];
}

namespace {
std::int64_t conv_out(std::int64_t in, int k, int stride, int pad, int dil, const char* op, const char* axis) {
  // In 64 bits: the attributes are ints a caller chooses (2 * pad, dil * (k - 1) must not wrap).
  const std::int64_t eff = static_cast<std::int64_t>(dil) * (static_cast<std::int64_t>(k) - 1) + 1;
  const std::int64_t padded = in + 2 * static_cast<std::int64_t>(pad);
  ENCORE_CHECK(stride >= 1 && dil >= 1 && pad >= 0 && padded >= eff, invalid_argument,
               "{}: {} extent {} with padding {} is smaller than the dilated kernel {} (stride {}, dilation {})", op,
               axis, in, pad, eff, stride, dil);
  return (padded - eff) / stride + 1;
}
}  // namespace

Value Graph::conv1d(Value x, Value w, Value bias, const Conv1dAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "conv1d", "x");
  const ValueInfo& wi = ENCORE_IN(w, "conv1d", "w");
  require_float("conv1d", "x", xi);
  ENCORE_CHECK(xi.shape.rank() == 3 && wi.shape.rank() == 3, invalid_argument,
               "conv1d: x must be [N, C, T] and w [O, C/groups, k], got {} and {}", xi.shape.str(), wi.shape.str());
  ENCORE_CHECK(attrs.groups >= 1 && xi.shape[1] % attrs.groups == 0 && wi.shape[0] % attrs.groups == 0 &&
                   wi.shape[1] * attrs.groups == xi.shape[1],
               invalid_argument, "conv1d: x {} and w {} do not match groups={}", xi.shape.str(), wi.shape.str(),
               attrs.groups);
  std::vector<int> inputs{x.id, w.id, -1};
  if (bias) {
    require_vector("conv1d", "bias", ENCORE_IN(bias, "conv1d", "bias"), wi.shape[0]);
    inputs[2] = bias.id;
  }
  const std::int64_t t = conv_out(xi.shape[2], static_cast<int>(wi.shape[2]), attrs.stride, attrs.padding,
                                  attrs.dilation, "conv1d", "time");
  return add_node(OpKind::conv1d, attrs, std::move(inputs), {{xi.dtype, Shape{xi.shape[0], wi.shape[0], t}}})[0];
}

Value Graph::conv2d(Value x, Value w, Value bias, const Conv2dAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "conv2d", "x");
  const ValueInfo& wi = ENCORE_IN(w, "conv2d", "w");
  require_float("conv2d", "x", xi);
  ENCORE_CHECK(xi.shape.rank() == 4 && wi.shape.rank() == 4, invalid_argument,
               "conv2d: x must be [N, C, H, W] and w [O, C/groups, kh, kw], got {} and {}", xi.shape.str(),
               wi.shape.str());
  ENCORE_CHECK(attrs.groups >= 1 && xi.shape[1] % attrs.groups == 0 && wi.shape[0] % attrs.groups == 0 &&
                   wi.shape[1] * attrs.groups == xi.shape[1],
               invalid_argument, "conv2d: x {} and w {} do not match groups={}", xi.shape.str(), wi.shape.str(),
               attrs.groups);
  std::vector<int> inputs{x.id, w.id, -1};
  if (bias) {
    require_vector("conv2d", "bias", ENCORE_IN(bias, "conv2d", "bias"), wi.shape[0]);
    inputs[2] = bias.id;
  }
  const std::int64_t h = conv_out(xi.shape[2], static_cast<int>(wi.shape[2]), attrs.stride[0], attrs.padding[0],
                                  attrs.dilation[0], "conv2d", "height");
  const std::int64_t wd = conv_out(xi.shape[3], static_cast<int>(wi.shape[3]), attrs.stride[1], attrs.padding[1],
                                   attrs.dilation[1], "conv2d", "width");
  return add_node(OpKind::conv2d, attrs, std::move(inputs), {{xi.dtype, Shape{xi.shape[0], wi.shape[0], h, wd}}})[0];
}

Value Graph::activation(Value x, Activation act) {
  const ValueInfo& xi = ENCORE_IN(x, "activation", "x");
  require_float(activation_name(act), "x", xi);
  return add_node(OpKind::activation, act, {x.id}, {{xi.dtype, xi.shape}})[0];
}

Value Graph::binary(Value a, Value b, BinaryOp op) {
  const ValueInfo& ai = ENCORE_IN(a, "binary", "a");
  const ValueInfo& bi = ENCORE_IN(b, "binary", "b");
  ENCORE_CHECK(ai.dtype == bi.dtype, invalid_argument, "binary op: operands have dtypes {} and {}; cast one first",
               dtype_name(ai.dtype), dtype_name(bi.dtype));
  return add_node(OpKind::binary, op, {a.id, b.id}, {{ai.dtype, broadcast("binary op", ai.shape, bi.shape)}})[0];
}

Value Graph::scale(Value x, float s, float shift) {
  const ValueInfo& xi = ENCORE_IN(x, "scale", "x");
  require_float("scale", "x", xi);
  return add_node(OpKind::scale, ScaleAttrs{s, shift}, {x.id}, {{xi.dtype, xi.shape}})[0];
}

Value Graph::glu(Value x, const GluAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "glu", "x");
  require_float("glu", "x", xi);
  const int axis = normalize_axis(attrs.axis, xi.shape.rank(), "glu axis");
  ENCORE_CHECK(xi.shape[axis] % 2 == 0, invalid_argument, "glu: dimension {} of {} must be even to split in halves",
               axis, xi.shape.str());
  Shape out = xi.shape;
  out[axis] /= 2;
  return add_node(OpKind::glu, GluAttrs{attrs.kind, axis}, {x.id}, {{xi.dtype, out}})[0];
}

Value Graph::cast(Value x, DType to) {
  const ValueInfo& xi = ENCORE_IN(x, "cast", "x");
  return add_node(OpKind::cast, CastAttrs{to}, {x.id}, {{to, xi.shape}})[0];
}

Value Graph::layer_norm(Value x, Value gamma, Value beta, const LayerNormAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "layer_norm", "x");
  require_float("layer_norm", "x", xi);
  require_rank("layer_norm", "x", xi, 1, kMaxDims);
  const std::int64_t c = xi.shape.dim(-1);
  std::vector<int> inputs{x.id, -1, -1};
  if (gamma) require_vector("layer_norm", "gamma", ENCORE_IN(gamma, "layer_norm", "gamma"), c), inputs[1] = gamma.id;
  if (beta) require_vector("layer_norm", "beta", ENCORE_IN(beta, "layer_norm", "beta"), c), inputs[2] = beta.id;
  ENCORE_CHECK(attrs.eps >= 0, invalid_argument, "layer_norm: eps {} must be >= 0", attrs.eps);
  return add_node(OpKind::layer_norm, attrs, std::move(inputs), {{xi.dtype, xi.shape}})[0];
}

Value Graph::rms_norm(Value x, Value gamma, const RmsNormAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "rms_norm", "x");
  require_float("rms_norm", "x", xi);
  require_rank("rms_norm", "x", xi, 1, kMaxDims);
  std::vector<int> inputs{x.id, -1};
  if (gamma) require_vector("rms_norm", "gamma", ENCORE_IN(gamma, "rms_norm", "gamma"), xi.shape.dim(-1)),
      inputs[1] = gamma.id;
  return add_node(OpKind::rms_norm, attrs, std::move(inputs), {{xi.dtype, xi.shape}})[0];
}

Value Graph::group_norm(Value x, Value gamma, Value beta, const GroupNormAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "group_norm", "x");
  require_float("group_norm", "x", xi);
  require_rank("group_norm", "x", xi, 2, kMaxDims);
  const std::int64_t c = xi.shape[1];
  ENCORE_CHECK(attrs.groups >= 1 && c % attrs.groups == 0, invalid_argument,
               "group_norm: {} channels of {} do not split into {} groups", c, xi.shape.str(), attrs.groups);
  std::vector<int> inputs{x.id, -1, -1};
  if (gamma) require_vector("group_norm", "gamma", ENCORE_IN(gamma, "group_norm", "gamma"), c), inputs[1] = gamma.id;
  if (beta) require_vector("group_norm", "beta", ENCORE_IN(beta, "group_norm", "beta"), c), inputs[2] = beta.id;
  return add_node(OpKind::group_norm, attrs, std::move(inputs), {{xi.dtype, xi.shape}})[0];
}

Value Graph::l2_normalize(Value x, const L2NormAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "l2_normalize", "x");
  require_float("l2_normalize", "x", xi);
  const int axis = normalize_axis(attrs.axis, xi.shape.rank(), "l2_normalize axis");
  return add_node(OpKind::l2_normalize, L2NormAttrs{axis, attrs.eps}, {x.id}, {{xi.dtype, xi.shape}})[0];
}

Value Graph::softmax(Value x, int axis) {
  const ValueInfo& xi = ENCORE_IN(x, "softmax", "x");
  require_float("softmax", "x", xi);
  const int a = normalize_axis(axis, xi.shape.rank(), "softmax axis");
  return add_node(OpKind::softmax, SoftmaxAttrs{a}, {x.id}, {{xi.dtype, xi.shape}})[0];
}

Value Graph::log_softmax(Value x, int axis) {
  const ValueInfo& xi = ENCORE_IN(x, "log_softmax", "x");
  require_float("log_softmax", "x", xi);
  const int a = normalize_axis(axis, xi.shape.rank(), "log_softmax axis");
  return add_node(OpKind::log_softmax, SoftmaxAttrs{a}, {x.id}, {{xi.dtype, xi.shape}})[0];
}

Value Graph::embedding(Value table, Value ids) {
  const ValueInfo& ti = ENCORE_IN(table, "embedding", "table");
  const ValueInfo& ii = ENCORE_IN(ids, "embedding", "ids");
  require_rank("embedding", "table", ti, 2, 2);
  require_index("embedding", ii);
  Shape out = ii.shape;
  out.push_back(ti.shape[1]);
  return add_node(OpKind::embedding, std::monostate{}, {table.id, ids.id}, {{ti.dtype, out}})[0];
}

Value Graph::concat(std::span<const Value> xs, int axis) {
  ENCORE_CHECK(!xs.empty(), invalid_argument, "concat: needs at least one input");
  const ValueInfo& first = ENCORE_IN(xs[0], "concat", "x[0]");
  const int a = normalize_axis(axis, first.shape.rank(), "concat axis");
  Shape out = first.shape;
  std::vector<int> inputs;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const ValueInfo& xi = ENCORE_IN(xs[i], "concat", "x");
    ENCORE_CHECK(xi.dtype == first.dtype && xi.shape.rank() == first.shape.rank(), invalid_argument,
                 "concat: input {} is {} {} but input 0 is {} {}", i, dtype_name(xi.dtype), xi.shape.str(),
                 dtype_name(first.dtype), first.shape.str());
    for (int d = 0; d < out.rank(); ++d)
      ENCORE_CHECK(d == a || xi.shape[d] == first.shape[d], invalid_argument,
                   "concat along {}: input {} has shape {} but input 0 has {}", a, i, xi.shape.str(), first.shape.str());
    if (i > 0)
      ENCORE_CHECK(!__builtin_add_overflow(out[a], xi.shape[a], &out[a]), invalid_argument,
                   "concat along {}: the inputs' extents add up past 2^63 at input {}", a, i);
    inputs.push_back(xs[i].id);
  }
  return add_node(OpKind::concat, ConcatAttrs{a}, std::move(inputs), {{first.dtype, out}})[0];
}

Value Graph::pad(Value x, const PadAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "pad", "x");
  ENCORE_CHECK(attrs.pads.size() % 2 == 0 && attrs.pads.size() <= 2 * xi.shape.size(), invalid_argument,
               "pad: {} pad values for a tensor of rank {}: expected before/after pairs, at most {}", attrs.pads.size(),
               xi.shape.rank(), 2 * xi.shape.rank());
  Shape out = xi.shape;
  for (std::size_t i = 0; i < attrs.pads.size() / 2; ++i) {
    const std::int64_t before = attrs.pads[2 * i], after = attrs.pads[2 * i + 1];
    const std::int64_t limit = std::numeric_limits<std::int64_t>::max() / 4;  // extents stay far from wrapping
    ENCORE_CHECK(before >= 0 && after >= 0 && before <= limit && after <= limit && out[static_cast<int>(i)] <= limit,
                 invalid_argument, "pad: padding ({}, {}) of dimension {} must be >= 0 and below 2^61", before, after,
                 i);
    out[static_cast<int>(i)] += before + after;
  }
  return add_node(OpKind::pad, attrs, {x.id}, {{xi.dtype, out}})[0];
}

Value Graph::gather(Value x, Value index, int axis) {
  const ValueInfo& xi = ENCORE_IN(x, "gather", "x");
  const ValueInfo& ii = ENCORE_IN(index, "gather", "index");
  require_index("gather", ii);
  require_rank("gather", "index", ii, 1, 1);
  const int a = normalize_axis(axis, xi.shape.rank(), "gather axis");
  Shape out = xi.shape;
  out[a] = ii.shape[0];
  return add_node(OpKind::gather, GatherAttrs{a}, {x.id, index.id}, {{xi.dtype, out}})[0];
}

Value Graph::scatter_add(Value x, Value index, Value src, int axis) {
  const ValueInfo& xi = ENCORE_IN(x, "scatter_add", "x");
  const ValueInfo& ii = ENCORE_IN(index, "scatter_add", "index");
  const ValueInfo& si = ENCORE_IN(src, "scatter_add", "src");
  require_index("scatter_add", ii);
  require_rank("scatter_add", "index", ii, 1, 1);
  const int a = normalize_axis(axis, xi.shape.rank(), "scatter_add axis");
  Shape expect = xi.shape;
  expect[a] = ii.shape[0];
  ENCORE_CHECK(si.shape == expect && si.dtype == xi.dtype, invalid_argument,
               "scatter_add: src must be {} {} (x with dimension {} = index length), got {} {}", dtype_name(xi.dtype),
               expect.str(), a, dtype_name(si.dtype), si.shape.str());
  return add_node(OpKind::scatter_add, ScatterAddAttrs{a}, {x.id, index.id, src.id}, {{xi.dtype, xi.shape}})[0];
}

namespace {
Shape reduced_shape(const Shape& in, std::vector<int>& axes, bool keepdims, const char* op) {
  if (axes.empty())
    for (int i = 0; i < in.rank(); ++i) axes.push_back(i);
  for (int& a : axes) a = normalize_axis(a, in.rank(), op);
  std::sort(axes.begin(), axes.end());
  ENCORE_CHECK(std::adjacent_find(axes.begin(), axes.end()) == axes.end(), invalid_argument, "{}: repeated axis", op);
  Shape out;
  for (int i = 0; i < in.rank(); ++i) {
    const bool reduced = std::binary_search(axes.begin(), axes.end(), i);
    if (!reduced) out.push_back(in[i]);
    else if (keepdims) out.push_back(1);
  }
  return out;
}
}  // namespace

Value Graph::reduce_sum(Value x, const ReduceAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "reduce_sum", "x");
  ReduceAttrs a = attrs;
  Shape out = reduced_shape(xi.shape, a.axes, a.keepdims, "reduce_sum");
  return add_node(OpKind::reduce_sum, a, {x.id}, {{xi.dtype, out}})[0];
}

Value Graph::reduce_mean(Value x, const ReduceAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "reduce_mean", "x");
  require_float("reduce_mean", "x", xi);
  ReduceAttrs a = attrs;
  Shape out = reduced_shape(xi.shape, a.axes, a.keepdims, "reduce_mean");
  return add_node(OpKind::reduce_mean, a, {x.id}, {{xi.dtype, out}})[0];
}

Value Graph::argmax(Value x, const ArgMaxAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "argmax", "x");
  std::vector<int> axes{attrs.axis};
  Shape out = reduced_shape(xi.shape, axes, attrs.keepdims, "argmax");
  return add_node(OpKind::argmax, ArgMaxAttrs{axes[0], attrs.keepdims}, {x.id}, {{DType::I64, out}})[0];
}

std::pair<Value, Value> Graph::topk(Value x, const TopKAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "topk", "x");
  const int a = normalize_axis(attrs.axis, xi.shape.rank(), "topk axis");
  ENCORE_CHECK(attrs.k >= 1 && attrs.k <= xi.shape[a], invalid_argument, "topk: k={} must be in 1..{} for {}", attrs.k,
               xi.shape[a], xi.shape.str());
  Shape out = xi.shape;
  out[a] = attrs.k;
  auto v = add_node(OpKind::topk, TopKAttrs{attrs.k, a}, {x.id}, {{xi.dtype, out}, {DType::I64, out}});
  return {v[0], v[1]};
}

Value Graph::cumsum(Value x, int axis) {
  const ValueInfo& xi = ENCORE_IN(x, "cumsum", "x");
  const int a = normalize_axis(axis, xi.shape.rank(), "cumsum axis");
  return add_node(OpKind::cumsum, CumSumAttrs{a}, {x.id}, {{xi.dtype, xi.shape}})[0];
}

Value Graph::resize(Value x, const ResizeAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "resize", "x");
  require_float("resize", "x", xi);
  require_rank("resize", "x", xi, 4, 4);
  ENCORE_CHECK(attrs.out_h >= 1 && attrs.out_w >= 1, invalid_argument, "resize: output size {}x{} must be positive",
               attrs.out_h, attrs.out_w);
  return add_node(OpKind::resize, attrs, {x.id},
                  {{xi.dtype, Shape{xi.shape[0], xi.shape[1], attrs.out_h, attrs.out_w}}})[0];
}

Value Graph::attention(Value q, Value k, Value v, Value mask, const AttentionAttrs& attrs) {
  const ValueInfo& qi = ENCORE_IN(q, "attention", "q");
  const ValueInfo& ki = ENCORE_IN(k, "attention", "k");
  const ValueInfo& vi = ENCORE_IN(v, "attention", "v");
  require_float("attention", "q", qi);
  ENCORE_CHECK(qi.shape.rank() == 3 && ki.shape.rank() == 3 && vi.shape.rank() == 3, invalid_argument,
               "attention: q, k, v must be [B, T, H*D], got {}, {}, {}", qi.shape.str(), ki.shape.str(), vi.shape.str());
  AttentionAttrs a = attrs;
  if (a.num_kv_heads == 0) a.num_kv_heads = a.num_heads;
  ENCORE_CHECK(a.num_heads >= 1 && a.num_kv_heads >= 1 &&
                   (a.num_heads % a.num_kv_heads == 0 || a.num_kv_heads % a.num_heads == 0),
               invalid_argument, "attention: {} query heads and {} kv heads: one must divide the other", a.num_heads,
               a.num_kv_heads);
  ENCORE_CHECK(qi.shape[2] % a.num_heads == 0, invalid_argument, "attention: q {} does not split into {} heads",
               qi.shape.str(), a.num_heads);
  if (a.head_dim == 0) a.head_dim = static_cast<int>(qi.shape[2] / a.num_heads);
  const std::int64_t d = a.head_dim;
  ENCORE_CHECK(qi.shape[2] == a.num_heads * d && ki.shape[2] == a.num_kv_heads * d && vi.shape[2] == a.num_kv_heads * d,
               invalid_argument, "attention: q {}, k {}, v {} do not match {} query / {} kv heads of dim {}",
               qi.shape.str(), ki.shape.str(), vi.shape.str(), a.num_heads, a.num_kv_heads, d);
  ENCORE_CHECK(ki.shape == vi.shape && ki.shape[0] == qi.shape[0] && qi.dtype == ki.dtype && ki.dtype == vi.dtype,
               invalid_argument, "attention: batch, key length and dtype of q {} {}, k {} {}, v {} {} must agree",
               dtype_name(qi.dtype), qi.shape.str(), dtype_name(ki.dtype), ki.shape.str(), dtype_name(vi.dtype),
               vi.shape.str());
  std::vector<int> inputs{q.id, k.id, v.id, -1};
  if (mask) {
    ENCORE_CHECK(a.mask != MaskKind::none, invalid_argument, "attention: a mask was given but attrs.mask is none");
    const ValueInfo& mi = ENCORE_IN(mask, "attention", "mask");
    if (a.mask == MaskKind::key_padding)
      ENCORE_CHECK(mi.shape == (Shape{qi.shape[0], ki.shape[1]}), invalid_argument,
                   "attention: key padding mask must be [B, Tk] = [{}, {}], got {}", qi.shape[0], ki.shape[1],
                   mi.shape.str());
    else
      (void)broadcast("attention additive mask", mi.shape,
                      Shape{qi.shape[0], std::max(a.num_heads, a.num_kv_heads), qi.shape[1], ki.shape[1]});
    inputs[3] = mask.id;
  } else {
    ENCORE_CHECK(a.mask == MaskKind::none, invalid_argument, "attention: attrs.mask says {} but no mask was given",
                 a.mask == MaskKind::key_padding ? "key_padding" : "additive");
  }
  const std::int64_t heads_out = std::max(a.num_heads, a.num_kv_heads);
  return add_node(OpKind::attention, a, std::move(inputs), {{qi.dtype, Shape{qi.shape[0], qi.shape[1], heads_out * d}}})[0];
}

Value Graph::rel_pos_attention(Value q, Value k, Value v, Value pos, Value bias_u, Value bias_v, Value mask,
                               const RelPosAttentionAttrs& attrs) {
  const ValueInfo& qi = ENCORE_IN(q, "rel_pos_attention", "q");
  const ValueInfo& ki = ENCORE_IN(k, "rel_pos_attention", "k");
  const ValueInfo& vi = ENCORE_IN(v, "rel_pos_attention", "v");
  const ValueInfo& pi = ENCORE_IN(pos, "rel_pos_attention", "pos");
  const ValueInfo& ui = ENCORE_IN(bias_u, "rel_pos_attention", "bias_u");
  const ValueInfo& bvi = ENCORE_IN(bias_v, "rel_pos_attention", "bias_v");
  require_float("rel_pos_attention", "q", qi);
  ENCORE_CHECK(qi.shape.rank() == 3 && qi.shape == ki.shape && ki.shape == vi.shape, invalid_argument,
               "rel_pos_attention: q, k, v must be equal [B, T, H*D] shapes, got {}, {}, {}", qi.shape.str(),
               ki.shape.str(), vi.shape.str());
  ENCORE_CHECK(attrs.num_heads >= 1 && qi.shape[2] % attrs.num_heads == 0 && attrs.max_relative >= 0, invalid_argument,
               "rel_pos_attention: {} does not split into {} heads (max_relative {})", qi.shape.str(), attrs.num_heads,
               attrs.max_relative);
  const std::int64_t d = qi.shape[2] / attrs.num_heads;
  const std::int64_t positions = 2 * static_cast<std::int64_t>(attrs.max_relative) + 1;  // 64 bits: K may be INT_MAX
  ENCORE_CHECK(pi.shape == (Shape{positions, qi.shape[2]}), invalid_argument,
               "rel_pos_attention: pos must be [2K+1, H*D] = [{}, {}], got {}", positions, qi.shape[2], pi.shape.str());
  ENCORE_CHECK(ui.shape == (Shape{attrs.num_heads, d}) && bvi.shape == ui.shape, invalid_argument,
               "rel_pos_attention: bias_u and bias_v must be [H, D] = [{}, {}], got {} and {}", attrs.num_heads, d,
               ui.shape.str(), bvi.shape.str());
  std::vector<int> inputs{q.id, k.id, v.id, pos.id, bias_u.id, bias_v.id, -1};
  if (mask) {
    const ValueInfo& mi = ENCORE_IN(mask, "rel_pos_attention", "mask");
    ENCORE_CHECK(attrs.mask == MaskKind::key_padding && mi.shape == (Shape{qi.shape[0], qi.shape[1]}), invalid_argument,
                 "rel_pos_attention: mask must be a key padding mask [B, T] = [{}, {}], got {}", qi.shape[0],
                 qi.shape[1], mi.shape.str());
    inputs[6] = mask.id;
  }
  return add_node(OpKind::rel_pos_attention, attrs, std::move(inputs), {{qi.dtype, qi.shape}})[0];
}

Value Graph::rope(Value x, const RopeAttrs& attrs) {
  const ValueInfo& xi = ENCORE_IN(x, "rope", "x");
  require_float("rope", "x", xi);
  ENCORE_CHECK(xi.shape.rank() == 3 && attrs.num_heads >= 1 && xi.shape[2] % attrs.num_heads == 0, invalid_argument,
               "rope: x must be [B, T, H*D] with H={}, got {}", attrs.num_heads, xi.shape.str());
  const std::int64_t d = xi.shape[2] / attrs.num_heads;
  RopeAttrs a = attrs;
  if (a.rotary_dim == 0) a.rotary_dim = static_cast<int>(d);
  ENCORE_CHECK(a.rotary_dim > 0 && a.rotary_dim <= d && a.rotary_dim % 2 == 0, invalid_argument,
               "rope: rotary_dim {} must be even and in 2..{}", a.rotary_dim, d);
  return add_node(OpKind::rope, a, {x.id}, {{xi.dtype, xi.shape}})[0];
}

Value Graph::decode_attention(Value q, Value k_cache, Value v_cache, Value block_table, Value lengths,
                              const DecodeAttentionAttrs& attrs) {
  const ValueInfo& qi = ENCORE_IN(q, "decode_attention", "q");
  const ValueInfo& ki = ENCORE_IN(k_cache, "decode_attention", "k_cache");
  const ValueInfo& vi = ENCORE_IN(v_cache, "decode_attention", "v_cache");
  const ValueInfo& ti = ENCORE_IN(block_table, "decode_attention", "block_table");
  const ValueInfo& li = ENCORE_IN(lengths, "decode_attention", "lengths");
  require_float("decode_attention", "q", qi);
  DecodeAttentionAttrs a = attrs;
  if (a.num_kv_heads == 0) a.num_kv_heads = a.num_heads;
  ENCORE_CHECK(qi.shape.rank() == 3 && ki.shape.rank() == 4 && ki.shape == vi.shape, invalid_argument,
               "decode_attention: q must be [B, Tq, Hq*D] and the caches equal [blocks, Hkv, block_size, D], got q {}, "
               "k {}, v {}",
               qi.shape.str(), ki.shape.str(), vi.shape.str());
  const std::int64_t d = ki.shape[3];
  ENCORE_CHECK(a.num_heads >= 1 && a.num_kv_heads >= 1 && a.num_heads % a.num_kv_heads == 0 &&
                   ki.shape[1] == a.num_kv_heads && qi.shape[2] == a.num_heads * d,
               invalid_argument, "decode_attention: q {} and caches {} do not match {} query / {} kv heads", qi.shape.str(),
               ki.shape.str(), a.num_heads, a.num_kv_heads);
  ENCORE_CHECK(ti.dtype == DType::I32 && ti.shape.rank() == 2 && ti.shape[0] == qi.shape[0], invalid_argument,
               "decode_attention: block_table must be i32 [B={}, max_blocks], got {} {}", qi.shape[0],
               dtype_name(ti.dtype), ti.shape.str());
  ENCORE_CHECK(li.dtype == DType::I32 && li.shape == (Shape{qi.shape[0]}), invalid_argument,
               "decode_attention: lengths must be i32 [{}], got {} {}", qi.shape[0], dtype_name(li.dtype),
               li.shape.str());
  ENCORE_CHECK(qi.dtype == ki.dtype && ki.dtype == vi.dtype, invalid_argument,
               "decode_attention: q and caches must share a dtype, got {}, {}, {}", dtype_name(qi.dtype),
               dtype_name(ki.dtype), dtype_name(vi.dtype));
  return add_node(OpKind::decode_attention, a, {q.id, k_cache.id, v_cache.id, block_table.id, lengths.id},
                  {{qi.dtype, qi.shape}})[0];
}

void Graph::kv_cache_write(Value k_new, Value v_new, Value k_cache, Value v_cache, Value block_table, Value lengths) {
  const ValueInfo& ki = ENCORE_IN(k_new, "kv_cache_write", "k_new");
  const ValueInfo& vi = ENCORE_IN(v_new, "kv_cache_write", "v_new");
  const ValueInfo& kc = ENCORE_IN(k_cache, "kv_cache_write", "k_cache");
  const ValueInfo& vc = ENCORE_IN(v_cache, "kv_cache_write", "v_cache");
  const ValueInfo& ti = ENCORE_IN(block_table, "kv_cache_write", "block_table");
  const ValueInfo& li = ENCORE_IN(lengths, "kv_cache_write", "lengths");
  ENCORE_CHECK(ki.shape.rank() == 3 && ki.shape == vi.shape && kc.shape.rank() == 4 && kc.shape == vc.shape &&
                   ki.shape[2] == kc.shape[1] * kc.shape[3],
               invalid_argument,
               "kv_cache_write: k/v must be [B, Tq, Hkv*D] and the caches [blocks, Hkv, block_size, D], got k {}, v {}, "
               "caches {} and {}",
               ki.shape.str(), vi.shape.str(), kc.shape.str(), vc.shape.str());
  ENCORE_CHECK(kc.producer < 0 && !kc.is_input && vc.producer < 0 && !vc.is_input, invalid_argument,
               "kv_cache_write: the caches must be constants bound to cache storage");
  ENCORE_CHECK(ki.dtype == vi.dtype && kc.dtype == ki.dtype && vc.dtype == ki.dtype, invalid_argument,
               "kv_cache_write: k, v and both caches must share a dtype, got k {}, v {}, k_cache {}, v_cache {}",
               dtype_name(ki.dtype), dtype_name(vi.dtype), dtype_name(kc.dtype), dtype_name(vc.dtype));
  ENCORE_CHECK(ti.dtype == DType::I32 && ti.shape.rank() == 2 && ti.shape[0] == ki.shape[0] &&
                   li.dtype == DType::I32 && li.shape == (Shape{ki.shape[0]}),
               invalid_argument, "kv_cache_write: block_table must be i32 [{}, max_blocks] and lengths i32 [{}], got {} and {}",
               ki.shape[0], ki.shape[0], ti.shape.str(), li.shape.str());
  add_node(OpKind::kv_cache_write, std::monostate{}, {k_new.id, v_new.id, k_cache.id, v_cache.id, block_table.id, lengths.id},
           {});
}

#undef ENCORE_IN

}  // namespace encore
