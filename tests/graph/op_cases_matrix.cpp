// Harness cases: linear, matmul, convolutions, attention, relative-position attention, RoPE.
#include "graph/op_harness.h"
#include "reference/ref_attention.h"
#include "reference/ref_gemm.h"

namespace encore::harness {
namespace {

using ref::RefTensor;

std::string suffix(DType dt, bool strided) { return std::string("_") + dtype_name(dt) + (strided ? "_strided" : ""); }

std::vector<OpCase> gemm_cases() {
  std::vector<OpCase> cases;
  struct LinearShape { std::int64_t m, k, n; };
  for (DType dt : {DType::F32, DType::BF16})
    for (bool strided : {false, true})
      for (WeightLayout layout : {WeightLayout::out_in, WeightLayout::in_out})
        for (Activation act : {Activation::none, Activation::gelu, Activation::gelu_tanh})
          for (LinearShape s : {LinearShape{1, 7, 5}, LinearShape{17, 67, 33}}) {
            const bool out_in = layout == WeightLayout::out_in;
            cases.push_back(OpCase{
                std::string("linear_") + (out_in ? "out_in_" : "in_out_") + activation_name(act) + "_" +
                    std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n) + suffix(dt, strided),
                dt,
                [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                  Value x = random_input(g, in, rng, "x", {2, s.m, s.k}, dt, strided);
                  Value w = constant(g, in, rng, "w", out_in ? Shape{s.n, s.k} : Shape{s.k, s.n}, dt);
                  Value b = constant(g, in, rng, "b", {s.n}, dt);
                  // Written unfused: the plan's pass folds the activation into the linear.
                  Value y = g.linear(x, w, b, {.layout = layout});
                  g.output("y", act == Activation::none ? y : g.activation(y, act));
                },
                [=](const CaseInputs& in) {
                  const RefTensor b = get(in, "b");
                  return std::vector<RefTensor>{ref::linear(get(in, "x"), get(in, "w"), &b, layout, act)};
                }});
          }
  for (DType dt : {DType::F32, DType::BF16})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        cases.push_back(OpCase{std::string("matmul_broadcast") + (ta ? "_ta" : "") + (tb ? "_tb" : "") + suffix(dt, false),
                               dt,
                               [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                                 Value a = random_input(g, in, rng, "a", ta ? Shape{3, 1, 19, 5} : Shape{3, 1, 5, 19},
                                                        dt, true);
                                 Value b = random_input(g, in, rng, "b", tb ? Shape{4, 7, 19} : Shape{4, 19, 7}, dt, false);
                                 g.output("y", g.matmul(a, b, {ta, tb, 0.5f}));
                               },
                               [=](const CaseInputs& in) {
                                 return std::vector<RefTensor>{ref::matmul(get(in, "a"), get(in, "b"), ta, tb, 0.5)};
                               }});
  struct Conv2dCase { const char* name; Shape x, w; Conv2dAttrs attrs; };
  for (DType dt : {DType::F32, DType::BF16})
    for (const Conv2dCase& c : {Conv2dCase{"patch_embed", {2, 3, 32, 24}, {16, 3, 8, 8}, {{8, 8}, {0, 0}, {1, 1}, 1}},
                               Conv2dCase{"subsample_3x3_s2", {1, 1, 37, 20}, {8, 1, 3, 3}, {{2, 2}, {1, 1}, {1, 1}, 1}},
                               Conv2dCase{"grouped_dilated", {1, 4, 11, 13}, {6, 2, 3, 3}, {{1, 2}, {2, 1}, {2, 1}, 2}}})
      cases.push_back(OpCase{std::string("conv2d_") + c.name + suffix(dt, true), dt,
                             [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                               Value x = random_input(g, in, rng, "x", c.x, dt, true);
                               g.output("y", g.conv2d(x, constant(g, in, rng, "w", c.w, dt),
                                                      constant(g, in, rng, "b", {c.w[0]}, dt), c.attrs));
                             },
                             [=](const CaseInputs& in) {
                               const RefTensor b = get(in, "b");
                               return std::vector<RefTensor>{ref::conv2d(get(in, "x"), get(in, "w"), &b, c.attrs)};
                             }});
  struct Conv1dCase { const char* name; Shape x, w; Conv1dAttrs attrs; };
  for (DType dt : {DType::F32, DType::BF16})
    for (const Conv1dCase& c : {Conv1dCase{"pointwise", {2, 12, 9}, {24, 12, 1}, {1, 0, 1, 1}},
                               Conv1dCase{"depthwise_k31", {2, 12, 40}, {12, 1, 31}, {1, 15, 1, 12}},
                               Conv1dCase{"depthwise_k3", {1, 8, 5}, {8, 1, 3}, {1, 1, 1, 8}}})
      cases.push_back(OpCase{std::string("conv1d_") + c.name + suffix(dt, true), dt,
                             [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                               Value x = random_input(g, in, rng, "x", c.x, dt, true);
                               g.output("y", g.conv1d(x, constant(g, in, rng, "w", c.w, dt),
                                                      constant(g, in, rng, "b", {c.w[0]}, dt), c.attrs));
                             },
                             [=](const CaseInputs& in) {
                               const RefTensor b = get(in, "b");
                               return std::vector<RefTensor>{ref::conv1d(get(in, "x"), get(in, "w"), &b, c.attrs)};
                             }});
  return cases;
}

// q/k/v are slices of one fused projection input (strided, as model code produces them).
struct AttnCase {
  std::string name;
  std::int64_t b, tq, tk;
  int hq, hkv, d;
  bool causal;
  MaskKind mask;
  MaskFill fill = MaskFill::lowest;
};

OpCase attention_case(const AttnCase& c, DType dt) {
  return OpCase{
      "attention_" + c.name + suffix(dt, true), dt,
      [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
        const std::int64_t qw = c.hq * c.d, kw = c.hkv * c.d;
        Value qf = random_input(g, in, rng, "qf", {c.b, c.tq, qw + 5}, dt, false, -2, 2);
        Value kvf = random_input(g, in, rng, "kvf", {c.b, c.tk, 2 * kw}, dt, false, -2, 2);
        Value q = g.slice(qf, -1, 5, 5 + qw), k = g.slice(kvf, -1, 0, kw), v = g.slice(kvf, -1, kw, 2 * kw);
        in.logical["q"] = in.logical["qf"].slice(-1, 5, 5 + qw);
        in.logical["k"] = in.logical["kvf"].slice(-1, 0, kw);
        in.logical["v"] = in.logical["kvf"].slice(-1, kw, 2 * kw);
        Value mask;
        if (c.mask == MaskKind::key_padding) {
          Tensor m = Tensor::empty({c.b, c.tk}, DType::Bool);
          for (std::int64_t i = 0; i < m.numel(); ++i)
            m.data_ptr<bool>()[i] = (i / c.tk == 0) ? (i % c.tk) < std::max<std::int64_t>(1, c.tk - 2)  // padded tail
                                                    : (i % 3 != 0 && c.b > 1 && i / c.tk != c.b - 1);   // last row: none
          in.tensors["mask"] = m;
          in.logical["mask"] = m;
          mask = g.input("mask", DType::Bool, {c.b, c.tk});
        } else if (c.mask == MaskKind::additive) {
          mask = random_input(g, in, rng, "mask", {c.b, 1, 1, c.tk}, dt, false, -4, 0);
        }
        g.output("y", g.attention(q, k, v, mask,
                                  {.num_heads = c.hq, .num_kv_heads = c.hkv, .causal = c.causal, .mask = c.mask,
                                   .fill = c.fill}));
      },
      [=](const CaseInputs& in) {
        const AttentionAttrs attrs{.num_heads = c.hq, .num_kv_heads = c.hkv, .causal = c.causal, .mask = c.mask,
                                   .fill = c.fill};
        RefTensor mask;
        if (c.mask != MaskKind::none) mask = get(in, "mask");
        return std::vector<RefTensor>{
            ref::attention(get(in, "q"), get(in, "k"), get(in, "v"), c.mask == MaskKind::none ? nullptr : &mask, attrs)};
      }};
}

std::vector<OpCase> attention_cases() {
  std::vector<OpCase> cases;
  const std::vector<AttnCase> shapes = {
      {"vit_like", 2, 17, 17, 4, 4, 16, false, MaskKind::none},
      {"causal_self", 2, 13, 13, 4, 4, 64, true, MaskKind::none},
      {"decode_step", 3, 1, 67, 4, 4, 64, true, MaskKind::none},
      {"prompt_tail_causal", 1, 5, 40, 2, 2, 32, true, MaskKind::none},
      {"cross", 2, 7, 50, 4, 4, 8, false, MaskKind::none},
      {"gqa", 2, 9, 33, 8, 2, 16, true, MaskKind::none},
      {"mqa", 1, 6, 21, 8, 1, 40, false, MaskKind::none},
      {"reverse_sqa", 2, 9, 9, 2, 8, 16, true, MaskKind::none},
      {"key_padding_lowest", 3, 6, 11, 2, 2, 16, false, MaskKind::key_padding, MaskFill::lowest},
      {"key_padding_neginf", 3, 6, 11, 2, 2, 16, false, MaskKind::key_padding, MaskFill::neg_infinity},
      {"additive_mask", 2, 5, 9, 2, 2, 128, false, MaskKind::additive},
  };
  for (DType dt : {DType::F32, DType::BF16})
    for (const AttnCase& c : shapes) cases.push_back(attention_case(c, dt));

  for (DType dt : {DType::F32, DType::BF16})
    cases.push_back(OpCase{
        std::string("rel_pos_attention_masked") + suffix(dt, true), dt,
        [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
          const int h = 2, d = 8, kmax = 3;
          Value q = random_input(g, in, rng, "q", {2, 9, h * d}, dt, true);
          Value k = random_input(g, in, rng, "k", {2, 9, h * d}, dt, true);
          Value v = random_input(g, in, rng, "v", {2, 9, h * d}, dt, false);
          Value pos = constant(g, in, rng, "pos", {2 * kmax + 1, h * d}, dt);
          Value u = constant(g, in, rng, "u", {h, d}, dt), bv = constant(g, in, rng, "bv", {h, d}, dt);
          Tensor m = Tensor::empty({2, 9}, DType::Bool);
          for (int i = 0; i < 18; ++i) m.data_ptr<bool>()[i] = i < 9 || (i - 9) < 6;
          in.tensors["mask"] = m;
          in.logical["mask"] = m;
          Value mask = g.input("mask", DType::Bool, {2, 9});
          g.output("y", g.rel_pos_attention(q, k, v, pos, u, bv, mask,
                                            {.num_heads = h, .max_relative = kmax, .mask = MaskKind::key_padding}));
        },
        [=](const CaseInputs& in) {
          const RefTensor mask = get(in, "mask");
          return std::vector<RefTensor>{ref::rel_pos_attention(
              get(in, "q"), get(in, "k"), get(in, "v"), get(in, "pos"), get(in, "u"), get(in, "bv"), &mask,
              {.num_heads = 2, .max_relative = 3, .mask = MaskKind::key_padding})};
        }});

  for (DType dt : {DType::F32, DType::BF16})
    for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved}) {
      const RopeAttrs attrs{.num_heads = 3, .rotary_dim = 12, .base = 10000.0f, .layout = layout, .position_offset = 5};
      cases.push_back(OpCase{std::string("rope_") + (layout == RopeLayout::half_split ? "half_split" : "interleaved") +
                                 suffix(dt, true),
                             dt,
                             [=](Graph& g, CaseInputs& in, std::mt19937& rng) {
                               g.output("y", g.rope(random_input(g, in, rng, "x", {2, 7, 3 * 16}, dt, true), attrs));
                             },
                             [=](const CaseInputs& in) { return std::vector<RefTensor>{ref::rope(get(in, "x"), attrs)}; }});
    }
  return cases;
}

const Register registered_gemm(gemm_cases());
const Register registered_attention(attention_cases());

}  // namespace
}  // namespace encore::harness
