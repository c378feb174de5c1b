// Harness cases: elementwise, normalisation, softmax, data movement, reductions, resampling.
#include "graph/op_harness.h"
#include "reference/ref_data.h"
#include "reference/ref_elementwise.h"
#include "reference/ref_norm.h"

namespace encore::harness {
namespace {

using ref::RefTensor;
using Build = std::function<void(Graph&, CaseInputs&, std::mt19937&)>;
using Reference = std::function<std::vector<RefTensor>(const CaseInputs&)>;

Value ids_input(Graph& g, CaseInputs& in, std::mt19937& rng, const std::string& name, const Shape& shape, DType dtype,
                std::int64_t hi) {
  Tensor t = ref::random_tensor(shape, DType::F32, rng, 0.0, static_cast<double>(hi)).to(dtype);
  in.tensors[name] = t;
  in.logical[name] = t;
  return g.input(name, dtype, shape);
}

std::vector<std::int64_t> as_ids(const CaseInputs& in, const std::string& name) {
  std::vector<std::int64_t> ids;
  for (double v : get(in, name).data) ids.push_back(static_cast<std::int64_t>(v));
  return ids;
}

const char* tag(DType t) { return dtype_name(t); }

// One input "x" of `shape` (strided when asked), one output y = op(x).
OpCase unary(std::string name, DType dtype, Shape shape, bool strided, std::function<Value(Graph&, Value)> op,
             std::function<RefTensor(const RefTensor&)> reference, double lo = -1.0, double hi = 1.0) {
  name += std::string("_") + tag(dtype) + (strided ? "_strided" : "");
  return OpCase{name, dtype,
                [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                  g.output("y", op(g, random_input(g, in, rng, "x", shape, dtype, strided, lo, hi)));
                },
                [=](const CaseInputs& in) { return std::vector<RefTensor>{reference(get(in, "x"))}; }};
}

std::vector<OpCase> elementwise_cases() {
  std::vector<OpCase> cases;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool strided : {false, true}) {
      for (Activation act : {Activation::gelu, Activation::gelu_tanh, Activation::relu, Activation::silu,
                             Activation::sigmoid, Activation::tanh})
        cases.push_back(unary(std::string("activation_") + activation_name(act), dt, {3, 67}, strided,
                              [act](Graph& g, Value x) { return g.activation(x, act); },
                              [act](const RefTensor& x) { return ref::activation(x, act); }, -6.0, 6.0));
      cases.push_back(unary("scale", dt, {5, 33}, strided, [](Graph& g, Value x) { return g.scale(x, -1.5f, 0.25f); },
                            [](const RefTensor& x) { return ref::scale(x, {-1.5f, 0.25f}); }));
      for (GluKind kind : {GluKind::glu, GluKind::swiglu})
        cases.push_back(unary(kind == GluKind::glu ? "glu" : "swiglu", dt, {4, 3, 34}, strided,
                              [kind](Graph& g, Value x) { return g.glu(x, {kind, -1}); },
                              [kind](const RefTensor& x) { return ref::glu(x, {kind, -1}); }, -4.0, 4.0));
    }
    for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
      const char* names[] = {"add", "sub", "mul", "div"};
      cases.push_back(OpCase{std::string("binary_broadcast_") + names[static_cast<int>(op)] + "_" + tag(dt), dt,
                             [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                               Value a = random_input(g, in, rng, "a", {2, 3, 17}, dt, true);
                               Value b = random_input(g, in, rng, "b", {3, 1}, dt, false, 0.5, 2.0);
                               g.output("y", g.binary(a, b, op));
                             },
                             [=](const CaseInputs& in) {
                               return std::vector<RefTensor>{ref::binary(get(in, "a"), get(in, "b"), op)};
                             }});
    }
  }
  cases.push_back(unary("cast_to_bf16", DType::BF16, {7, 9}, true, [](Graph& g, Value x) { return g.cast(x, DType::BF16); },
                        [](const RefTensor& x) { return x; }));
  // f32 -> bf16 rounding (the case above is bf16 -> bf16, a copy): compared with bf16's tolerance.
  cases.push_back(OpCase{"cast_f32_to_bf16", DType::BF16,
                         [](Graph& g, CaseInputs& in, std::mt19937& rng) {
                           g.output("y", g.cast(random_input(g, in, rng, "x", {6, 13}, DType::F32, true, -3, 3),
                                                DType::BF16));
                         },
                         [](const CaseInputs& in) { return std::vector<RefTensor>{get(in, "x")}; }});
  // f32 -> i32 truncates toward zero: compare with the truncated reference exactly.
  cases.push_back(OpCase{"cast_f32_to_i32", DType::F32,
                         [](Graph& g, CaseInputs& in, std::mt19937& rng) {
                           g.output("y", g.cast(random_input(g, in, rng, "x", {5, 11}, DType::F32, true, -50, 50),
                                                DType::I32));
                         },
                         [](const CaseInputs& in) {
                           RefTensor r = get(in, "x");
                           for (double& v : r.data) v = std::trunc(v);
                           return std::vector<RefTensor>{r};
                         },
                         1e-12});
  return cases;
}

std::vector<OpCase> norm_cases() {
  std::vector<OpCase> cases;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool strided : {false, true}) {
      for (LayerNormKind kind : {LayerNormKind::standard, LayerNormKind::unbiased_std}) {
        const LayerNormAttrs attrs{1e-5f, kind};
        const std::string name = kind == LayerNormKind::standard ? "layer_norm" : "layer_norm_unbiased_std";
        cases.push_back(OpCase{name + "_" + tag(dt) + (strided ? "_strided" : ""), dt,
                               [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                                 Value x = random_input(g, in, rng, "x", {3, 5, 77}, dt, strided, -3, 5);
                                 Value w = constant(g, in, rng, "w", {77}, dt);
                                 Value b = constant(g, in, rng, "b", {77}, dt);
                                 g.output("y", g.layer_norm(x, w, b, attrs));
                               },
                               [=](const CaseInputs& in) {
                                 const RefTensor w = get(in, "w"), b = get(in, "b");
                                 return std::vector<RefTensor>{ref::layer_norm(get(in, "x"), &w, &b, attrs)};
                               }});
      }
      cases.push_back(unary("layer_norm_no_affine", dt, {9, 257}, strided,
                            [](Graph& g, Value x) { return g.layer_norm(x, {}, {}, {.eps = 1e-12f}); },
                            [](const RefTensor& x) { return ref::layer_norm(x, nullptr, nullptr, {1e-12f}); }));
      cases.push_back(OpCase{std::string("rms_norm_") + tag(dt) + (strided ? "_strided" : ""), dt,
                             [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                               Value x = random_input(g, in, rng, "x", {4, 3, 67}, dt, strided);
                               g.output("y", g.rms_norm(x, constant(g, in, rng, "w", {67}, dt), {1e-6f}));
                             },
                             [=](const CaseInputs& in) {
                               const RefTensor w = get(in, "w");
                               return std::vector<RefTensor>{ref::rms_norm(get(in, "x"), &w, {1e-6f})};
                             }});
      cases.push_back(OpCase{std::string("group_norm_") + tag(dt) + (strided ? "_strided" : ""), dt,
                             [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                               Value x = random_input(g, in, rng, "x", {2, 6, 13}, dt, strided, -2, 3);
                               g.output("y", g.group_norm(x, constant(g, in, rng, "w", {6}, dt),
                                                          constant(g, in, rng, "b", {6}, dt), {3, 1e-5f}));
                             },
                             [=](const CaseInputs& in) {
                               const RefTensor w = get(in, "w"), b = get(in, "b");
                               return std::vector<RefTensor>{ref::group_norm(get(in, "x"), &w, &b, {3, 1e-5f})};
                             }});
      cases.push_back(unary("l2_normalize", dt, {6, 5, 19}, strided, [](Graph& g, Value x) { return g.l2_normalize(x); },
                            [](const RefTensor& x) { return ref::l2_normalize(x, {-1, 0.0f}); }));
      for (int axis : {-1, 1}) {
        cases.push_back(unary("softmax_axis" + std::to_string(axis < 0 ? 9 : axis), dt, {3, 12, 67}, strided,
                              [axis](Graph& g, Value x) { return g.softmax(x, axis); },
                              [axis](const RefTensor& x) { return ref::softmax(x, axis < 0 ? 2 : axis, false); }, -8, 8));
        cases.push_back(unary("log_softmax_axis" + std::to_string(axis < 0 ? 9 : axis), dt, {3, 12, 67}, strided,
                              [axis](Graph& g, Value x) { return g.log_softmax(x, axis); },
                              [axis](const RefTensor& x) { return ref::softmax(x, axis < 0 ? 2 : axis, true); }, -8, 8));
      }
    }
  }
  // The fused residual block: add followed by layer norm becomes add_layer_norm; both results checked.
  cases.push_back(OpCase{"add_layer_norm_fused", DType::F32,
                         [](Graph& g, CaseInputs& in, std::mt19937& rng) {
                           Value a = random_input(g, in, rng, "a", {2, 7, 96}, DType::F32, true);
                           Value r = random_input(g, in, rng, "r", {2, 7, 96}, DType::F32, false);
                           Value s = g.add(a, r);
                           g.output("y", g.layer_norm(s, constant(g, in, rng, "w", {96}, DType::F32),
                                                      constant(g, in, rng, "b", {96}, DType::F32)));
                           g.output("y1", g.scale(s, 2.0f));
                         },
                         [](const CaseInputs& in) {
                           const RefTensor s = ref::binary(get(in, "a"), get(in, "r"), BinaryOp::add);
                           const RefTensor w = get(in, "w"), b = get(in, "b");
                           return std::vector<RefTensor>{ref::layer_norm(s, &w, &b, {}), ref::scale(s, {2.0f, 0.0f})};
                         }});
  return cases;
}

std::vector<OpCase> data_cases() {
  std::vector<OpCase> cases;
  for (DType dt : {DType::F32, DType::BF16}) {
    cases.push_back(OpCase{std::string("embedding_") + tag(dt), dt,
                           [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                             Value table = constant(g, in, rng, "table", {50, 24}, dt);
                             g.output("y", g.embedding(table, ids_input(g, in, rng, "ids", {3, 7}, DType::I64, 50)));
                           },
                           [](const CaseInputs& in) {
                             return std::vector<RefTensor>{ref::embedding(get(in, "table"), get(in, "ids"))};
                           }});
    cases.push_back(OpCase{std::string("concat_") + tag(dt), dt,
                           [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                             const Value parts[] = {random_input(g, in, rng, "a", {2, 3, 5}, dt, true),
                                                    random_input(g, in, rng, "b", {2, 4, 5}, dt, false),
                                                    random_input(g, in, rng, "c", {2, 1, 5}, dt, true)};
                             g.output("y", g.concat(parts, 1));
                           },
                           [](const CaseInputs& in) {
                             return std::vector<RefTensor>{ref::concat({get(in, "a"), get(in, "b"), get(in, "c")}, 1)};
                           }});
    cases.push_back(unary("copy_permuted", dt, {4, 5, 6}, true,
                          [](Graph& g, Value x) { return g.contiguous(g.permute(x, {2, 0, 1})); },
                          [](const RefTensor& x) {
                            RefTensor r(Shape{6, 4, 5});
                            for (int i = 0; i < 4; ++i)
                              for (int j = 0; j < 5; ++j)
                                for (int k = 0; k < 6; ++k) r.data[static_cast<std::size_t>(k * 20 + i * 5 + j)] =
                                    x.data[static_cast<std::size_t>(i * 30 + j * 6 + k)];
                            return r;
                          }));
    cases.push_back(unary("pad", dt, {3, 4, 5}, true,
                          [](Graph& g, Value x) { return g.pad(x, {.pads = {0, 1, 2, 0, 1, 3}, .value = 0.5f}); },
                          [](const RefTensor& x) { return ref::pad(x, {{0, 1, 2, 0, 1, 3}, 0.5f}); }));
    cases.push_back(OpCase{std::string("gather_axis1_") + tag(dt), dt,
                           [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                             Value x = random_input(g, in, rng, "x", {3, 8, 5}, dt, true);
                             g.output("y", g.gather(x, ids_input(g, in, rng, "idx", {11}, DType::I32, 8), 1));
                           },
                           [](const CaseInputs& in) {
                             return std::vector<RefTensor>{ref::gather(get(in, "x"), as_ids(in, "idx"), 1)};
                           }});
  }
  cases.push_back(OpCase{"scatter_add_f32", DType::F32,
                         [](Graph& g, CaseInputs& in, std::mt19937& rng) {
                           Value x = random_input(g, in, rng, "x", {6, 4}, DType::F32, false);
                           Value idx = ids_input(g, in, rng, "idx", {9}, DType::I64, 6);
                           Value src = random_input(g, in, rng, "src", {9, 4}, DType::F32, true);
                           g.output("y", g.scatter_add(x, idx, src, 0));
                         },
                         [](const CaseInputs& in) {
                           return std::vector<RefTensor>{ref::scatter_add(get(in, "x"), as_ids(in, "idx"), get(in, "src"), 0)};
                         }});
  return cases;
}

std::vector<OpCase> reduce_resize_cases() {
  std::vector<OpCase> cases;
  for (bool keep : {false, true}) {
    cases.push_back(unary(keep ? "reduce_sum_keepdims" : "reduce_sum", DType::F32, {4, 7, 9}, true,
                          [keep](Graph& g, Value x) { return g.reduce_sum(x, {{0, 2}, keep}); },
                          [keep](const RefTensor& x) { return ref::reduce(x, {{0, 2}, keep}, false); }));
    cases.push_back(unary(keep ? "reduce_mean_keepdims" : "reduce_mean", DType::BF16, {4, 7, 9}, true,
                          [keep](Graph& g, Value x) { return g.reduce_mean(x, {{1}, keep}); },
                          [keep](const RefTensor& x) { return ref::reduce(x, {{1}, keep}, true); }));
  }
  cases.push_back(unary("argmax", DType::F32, {5, 3, 129}, true, [](Graph& g, Value x) { return g.argmax(x, {-1, false}); },
                        [](const RefTensor& x) { return ref::argmax(x, 2, false); }));
  cases.push_back(OpCase{"topk", DType::F32,
                         [](Graph& g, CaseInputs& in, std::mt19937& rng) {
                           auto [v, i] = g.topk(random_input(g, in, rng, "x", {4, 50}, DType::F32, true), {8, -1});
                           g.output("y", v);
                           g.output("y1", i);
                         },
                         [](const CaseInputs& in) {
                           auto [v, i] = ref::topk(get(in, "x"), 8, 1);
                           return std::vector<RefTensor>{v, i};
                         },
                         1e-12});
  cases.push_back(unary("cumsum", DType::F32, {3, 41}, true, [](Graph& g, Value x) { return g.cumsum(x, -1); },
                        [](const RefTensor& x) { return ref::cumsum(x, 1); }));
  for (DType dt : {DType::F32, DType::BF16})
    for (ResizeMode mode : {ResizeMode::nearest, ResizeMode::bilinear, ResizeMode::bicubic}) {
      const char* names[] = {"nearest", "bilinear", "bicubic"};
      for (auto [oh, ow] : {std::pair<int, int>{7, 11}, std::pair<int, int>{3, 2}}) {
        const ResizeAttrs attrs{mode, oh, ow};
        cases.push_back(unary(std::string("resize_") + names[static_cast<int>(mode)] + "_" + std::to_string(oh) + "x" +
                                  std::to_string(ow),
                              dt, {2, 3, 5, 6}, true, [attrs](Graph& g, Value x) { return g.resize(x, attrs); },
                              [attrs](const RefTensor& x) { return ref::resize(x, attrs); }));
      }
    }
  return cases;
}

const Register registered_pointwise(elementwise_cases());
const Register registered_norm(norm_cases());
const Register registered_data(data_cases());
const Register registered_reduce(reduce_resize_cases());

}  // namespace
}  // namespace encore::harness
