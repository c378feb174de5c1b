// CPU attention kernels (fused SDPA and relative-position attention) against the double reference.
//
// Inputs are random values rounded to bf16 precision, so one reference serves the f32 and the bf16
// runs of a case. Every run poisons the output with NaN first.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "kernels/cpu/attention_internal.h"
#include "reference/ref_attention.h"
#include "reference/ref_tensor.h"

using namespace encore;

namespace {

constexpr float kLowest = std::numeric_limits<float>::lowest();
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

enum class Layout { contiguous, fused, strided, last_dim_strided };
enum class Mask { none, padding, additive_b11k, additive_11qk, additive_neg_inf, additive_per_head };

struct Case {
  std::int64_t B, Tq, Tk, D;
  int Hq, Hkv;
  bool causal;
  Mask mask;
  MaskFill fill;
  Layout layout;
  std::string name() const {
    static const char* masks[] = {"none", "pad", "addB11K", "add11QK", "addNegInf", "addBHQK"};
    static const char* layouts[] = {"contig", "fused", "strided", "lastdim"};
    return "B" + std::to_string(B) + "_Tq" + std::to_string(Tq) + "_Tk" + std::to_string(Tk) + "_D" +
           std::to_string(D) + "_H" + std::to_string(Hq) + "x" + std::to_string(Hkv) + (causal ? "_causal" : "") +
           "_" + masks[static_cast<int>(mask)] + (fill == MaskFill::lowest ? "_lowest" : "_neginf") + "_" +
           layouts[static_cast<int>(layout)];
  }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

// Random values in [lo, hi) rounded to bf16 precision (so f32 and bf16 copies hold equal values).
Tensor bf16_exact(const Shape& shape, std::mt19937& rng, double lo = -1.0, double hi = 1.0) {
  return ref::random_tensor(shape, DType::BF16, rng, lo, hi).to(DType::F32);
}

struct Inputs {
  Tensor q, k, v, mask;
};

// q [B, Tq, Hq*D], k/v [B, Tk, Hkv*D] laid out as the case says (values identical whatever the layout).
Inputs make_inputs(const Case& c, std::mt19937& rng) {
  Inputs in;
  const std::int64_t qw = c.Hq * c.D, kw = c.Hkv * c.D;
  switch (c.layout) {
    case Layout::contiguous:
      in.q = bf16_exact({c.B, c.Tq, qw}, rng);
      in.k = bf16_exact({c.B, c.Tk, kw}, rng);
      in.v = bf16_exact({c.B, c.Tk, kw}, rng);
      break;
    case Layout::fused:  // slices of one QKV projection output (cross-attention: Q and KV apart)
      if (c.Tq == c.Tk) {
        Tensor f = bf16_exact({c.B, c.Tq, qw + 2 * kw}, rng);
        in.q = f.slice(2, 0, qw), in.k = f.slice(2, qw, qw + kw), in.v = f.slice(2, qw + kw, qw + 2 * kw);
      } else {
        in.q = bf16_exact({c.B, c.Tq, qw + 8}, rng).slice(2, 8, 8 + qw);
        Tensor f = bf16_exact({c.B, c.Tk, 2 * kw}, rng);
        in.k = f.slice(2, 0, kw), in.v = f.slice(2, kw, 2 * kw);
      }
      break;
    case Layout::strided:  // batch and token dims swapped in memory, rows padded
      in.q = bf16_exact({c.Tq, c.B, qw + 3}, rng).slice(2, 1, 1 + qw).transpose(0, 1);
      in.k = bf16_exact({c.Tk, c.B, kw + 3}, rng).slice(2, 1, 1 + kw).transpose(0, 1);
      in.v = bf16_exact({c.Tk, c.B, kw + 3}, rng).slice(2, 2, 2 + kw).transpose(0, 1);
      break;
    case Layout::last_dim_strided:  // head dim not contiguous: the kernel must copy
      in.q = bf16_exact({c.B, qw, c.Tq}, rng).transpose(1, 2);
      in.k = bf16_exact({c.B, kw, c.Tk}, rng).transpose(1, 2);
      in.v = bf16_exact({c.B, kw, c.Tk}, rng).transpose(1, 2);
      break;
  }
  switch (c.mask) {
    case Mask::none: break;
    case Mask::padding: {  // b0 random, b1 fully masked, b2 left padding (half)
      in.mask = Tensor::empty({c.B, c.Tk}, DType::Bool);
      std::bernoulli_distribution keep(0.7);
      for (std::int64_t b = 0; b < c.B; ++b)
        for (std::int64_t j = 0; j < c.Tk; ++j)
          in.mask.at<bool>({b, j}) = b == 0 ? keep(rng) : b == 1 ? false : j >= c.Tk / 2;
      break;
    }
    case Mask::additive_b11k: {  // GPT-2 style (1 - m) * lowest, plus small values; b1 fully masked
      in.mask = bf16_exact({c.B, 1, 1, c.Tk}, rng, -3.0, 0.0);
      float* m = in.mask.data_ptr<float>();
      for (std::int64_t b = 0; b < c.B; ++b)
        for (std::int64_t j = 0; j < c.Tk; ++j)
          if (b == 1 || (b == 2 && j < c.Tk / 2) || (b == 0 && j % 5 == 3)) m[b * c.Tk + j] = kLowest;
      break;
    }
    case Mask::additive_11qk:
      in.mask = bf16_exact({1, 1, c.Tq, c.Tk}, rng, -4.0, 2.0);
      break;
    case Mask::additive_neg_inf: {  // an explicit -inf causal mask [Tq, Tk] (rows may be all -inf)
      in.mask = Tensor::zeros({c.Tq, c.Tk}, DType::F32);
      for (std::int64_t i = 0; i < c.Tq; ++i)
        for (std::int64_t j = 0; j < c.Tk; ++j)
          if (j > i + c.Tk - c.Tq) in.mask.at<float>({i, j}) = kNegInf;
      break;
    }
    case Mask::additive_per_head:  // [B, H, Tq, Tk]; H = Ho for reverse SQA (indexed by output head)
      in.mask = bf16_exact({c.B, std::max(c.Hq, c.Hkv), c.Tq, c.Tk}, rng, -4.0, 2.0);
      break;
  }
  return in;
}

AttentionAttrs attrs_of(const Case& c) {
  AttentionAttrs a;
  a.num_heads = c.Hq;
  a.num_kv_heads = c.Hkv;
  a.causal = c.causal;
  a.fill = c.fill;
  a.mask = c.mask == Mask::none ? MaskKind::none : c.mask == Mask::padding ? MaskKind::key_padding : MaskKind::additive;
  return a;
}

// The AVX2 loops even on CPUs with AVX-512 (where the default takes those); portable where neither.
constexpr cpu::attn::Options kAvx2{false, 0, true};

struct Run {
  DType dtype = DType::F32;
  int threads = 1;
  cpu::attn::Options opts{};
};

ref::RefTensor run_kernel(const Inputs& in, const AttentionAttrs& a, const Case& c, const Run& run) {
  const Tensor q = run.dtype == DType::F32 ? in.q : in.q.to(run.dtype);
  const Tensor k = run.dtype == DType::F32 ? in.k : in.k.to(run.dtype);
  const Tensor v = run.dtype == DType::F32 ? in.v : in.v.to(run.dtype);
  Tensor y = Tensor::empty({c.B, c.Tq, std::max(c.Hq, c.Hkv) * c.D}, run.dtype);
  y.fill(std::nan(""));
  cpu::attn::attention_impl(q, k, v, in.mask, a, y, cpu::CpuContext{run.threads}, run.opts);
  return ref::from_tensor(y);
}

ref::RefTensor reference(const Inputs& in, const AttentionAttrs& a) {
  const ref::RefTensor mask = in.mask.defined() ? ref::from_tensor(in.mask) : ref::RefTensor{};
  return ref::attention(ref::from_tensor(in.q), ref::from_tensor(in.k), ref::from_tensor(in.v),
                        in.mask.defined() ? &mask : nullptr, a);
}

void check_case(const Case& c, std::uint32_t seed, const std::vector<Run>& runs) {
  std::mt19937 rng(seed);
  const Inputs in = make_inputs(c, rng);
  const AttentionAttrs a = attrs_of(c);
  const ref::RefTensor want = reference(in, a);
  for (const Run& run : runs) {
    const double err = ref::relative_error(run_kernel(in, a, c, run), want);
    EXPECT_LE(err, ref::tolerance_for(run.dtype))
        << c.name() << " dtype " << dtype_name(run.dtype) << " threads " << run.threads << " portable "
        << run.opts.force_portable << " avx2 " << run.opts.force_avx2 << " splits "
        << run.opts.force_splits;
  }
}

// ---- a seeded sample of the full parameter space ------------------------------------------------

std::vector<Case> sampled_cases() {
  std::mt19937 rng(20240611);
  const std::int64_t Bs[] = {1, 2, 3}, Tqs[] = {1, 5, 67, 197}, Tks[] = {1, 7, 67, 197, 300}, Ds[] = {8, 16, 40, 64, 128};
  const int heads[][2] = {{4, 4}, {8, 2}, {8, 1}, {2, 8}};
  auto pick = [&](auto& arr) { return arr[std::uniform_int_distribution<std::size_t>(0, std::size(arr) - 1)(rng)]; };
  std::vector<Case> cases;
  while (cases.size() < 120) {
    Case c{};
    c.B = pick(Bs), c.Tq = pick(Tqs), c.Tk = pick(Tks), c.D = pick(Ds);
    const auto& h = pick(heads);
    c.Hq = h[0], c.Hkv = h[1];
    c.causal = rng() % 2;
    c.mask = static_cast<Mask>(rng() % 6);
    c.fill = rng() % 2 ? MaskFill::lowest : MaskFill::neg_infinity;
    c.layout = static_cast<Layout>(rng() % 4);
    if (c.B * c.Tq * c.Tk * c.D * std::max(c.Hq, c.Hkv) > 40'000'000) continue;  // keep the reference quick
    cases.push_back(c);
  }
  return cases;
}

class AttentionSampled : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionSampled, MatchesReference) {
  const Case& c = GetParam();
  check_case(c, static_cast<std::uint32_t>(c.B * 7919 + c.Tq * 131 + c.Tk * 17 + c.D),
             {{DType::F32, 2, {}}, {DType::F32, 1, {true, 0}}, {DType::BF16, 2, {}}, {DType::F32, 2, {false, 3}},
              {DType::F32, 2, kAvx2}, {DType::BF16, 1, kAvx2}, {DType::F32, 2, {false, 3, true}}});
}

INSTANTIATE_TEST_SUITE_P(Cpu, AttentionSampled, ::testing::ValuesIn(sampled_cases()),
                         [](const auto& info) { return std::to_string(info.index) + "_" + info.param.name(); });

// ---- named shapes of the reference models --------------------------------------------------------

TEST(Attention, ViTShapeFusedQKV) {
  check_case({1, 197, 197, 64, 4, 4, false, Mask::none, MaskFill::lowest, Layout::fused}, 1,
             {{DType::F32, 2, {}}, {DType::F32, 1, {true, 0}}, {DType::BF16, 2, {}}, {DType::F32, 2, kAvx2}});
}

TEST(Attention, Gpt2CausalWithPaddingMask) {
  check_case({3, 67, 67, 64, 4, 4, true, Mask::additive_b11k, MaskFill::lowest, Layout::fused}, 2,
             {{DType::F32, 2, {}}, {DType::F32, 1, {true, 0}}, {DType::BF16, 1, {}}, {DType::BF16, 1, kAvx2}});
}

TEST(Attention, DecodeSplitKeys) {
  for (int splits : {0, 1, 2, 3, 5, 8})
    for (bool causal : {false, true})
      check_case({1, 1, 300, 64, 8, 2, causal, Mask::padding, MaskFill::lowest, Layout::fused}, 3,
                 {{DType::F32, 2, {false, splits}}, {DType::F32, 1, {true, splits}},
                  {DType::F32, 2, {false, splits, true}}});
  check_case({2, 5, 1000, 128, 2, 2, true, Mask::none, MaskFill::neg_infinity, Layout::strided}, 4,
             {{DType::F32, 2, {}}, {DType::F32, 2, {false, 4}}, {DType::F32, 2, {false, 4, true}}});
}

TEST(Attention, CausalMoreQueriesThanKeys) {  // rows with no visible key
  for (MaskFill fill : {MaskFill::lowest, MaskFill::neg_infinity})
    check_case({2, 67, 7, 16, 4, 4, true, Mask::none, fill, Layout::contiguous}, 5,
               {{DType::F32, 1, {}}, {DType::F32, 1, {true, 0}}, {DType::F32, 2, {false, 2}},
                {DType::F32, 1, kAvx2}});
}

TEST(Attention, ReverseSqaCausal) {  // RxT: 2 query heads tiled over 8 kv heads
  check_case({2, 197, 197, 64, 2, 8, true, Mask::none, MaskFill::lowest, Layout::fused}, 6,
             {{DType::F32, 2, {}}, {DType::F32, 1, {true, 0}}, {DType::F32, 2, kAvx2}});
}

TEST(Attention, PerHeadAdditiveMask) {  // [B, Ho, Tq, Tk]: by output head for reverse SQA, else query head
  for (const auto& h : {std::pair{2, 8}, std::pair{8, 2}, std::pair{4, 4}})
    check_case({2, 67, 67, 16, h.first, h.second, true, Mask::additive_per_head, MaskFill::lowest, Layout::fused}, 10,
               {{DType::F32, 2, {}}, {DType::F32, 1, {true, 0}}, {DType::F32, 2, kAvx2}});
}

// Fully masked rows: lowest -> the uniform average of V; -inf -> zeros (never NaN).
TEST(Attention, FullyMaskedRows) {
  std::mt19937 rng(7);
  const std::int64_t Tk = 150;
  Tensor q = bf16_exact({2, 3, 4 * 32}, rng), k = bf16_exact({2, Tk, 4 * 32}, rng), v = bf16_exact({2, Tk, 4 * 32}, rng);
  Tensor m = Tensor::zeros({2, Tk}, DType::U8);
  for (std::int64_t j = 0; j < Tk; ++j) m.at<std::uint8_t>({0, j}) = 1;  // batch 1 fully masked
  for (const cpu::attn::Options& path : {cpu::attn::Options{}, kAvx2, cpu::attn::Options{true, 0}})
    for (MaskFill fill : {MaskFill::lowest, MaskFill::neg_infinity}) {
      AttentionAttrs a{.num_heads = 4, .mask = MaskKind::key_padding, .fill = fill};
      Tensor y = Tensor::empty({2, 3, 128}, DType::F32);
      y.fill(std::nan(""));
      cpu::attn::attention_impl(q, k, v, m, a, y, cpu::CpuContext{2}, path);
      for (std::int64_t i = 0; i < 3; ++i)
        for (std::int64_t e = 0; e < 128; ++e) {
          double mean = 0;
          for (std::int64_t j = 0; j < Tk; ++j) mean += v.at<float>({1, j, e});
          mean /= static_cast<double>(Tk);
          const double want = fill == MaskFill::lowest ? mean : 0.0;
          ASSERT_NEAR(y.at<float>({1, i, e}), want, 1e-5) << "row " << i << " elem " << e;
        }
    }
}

TEST(Attention, AdditiveMaskOverflowingToNegInfGivesZeros) {
  // Tq = 4 > Tk = 2 with causal: rows 0 and 1 see no key (every score is the fill, lowest).
  // Row 1 also gets an additive lowest: lowest + lowest overflows to -inf in f32 -> zeros; row 0
  // stays all-lowest -> the uniform average of V.
  std::mt19937 rng(8);
  Tensor q = bf16_exact({1, 4, 2 * 16}, rng), k = bf16_exact({1, 2, 2 * 16}, rng), v = bf16_exact({1, 2, 2 * 16}, rng);
  Tensor m = Tensor::zeros({1, 1, 4, 2}, DType::F32);
  for (std::int64_t j = 0; j < 2; ++j) m.at<float>({0, 0, 1, j}) = kLowest;
  AttentionAttrs a{.num_heads = 2, .causal = true, .mask = MaskKind::additive, .fill = MaskFill::lowest};
  for (const cpu::attn::Options& path : {cpu::attn::Options{}, kAvx2, cpu::attn::Options{true, 0}}) {
    Tensor y = Tensor::empty({1, 4, 32}, DType::F32);
    y.fill(std::nan(""));
    cpu::attn::attention_impl(q, k, v, m, a, y, cpu::CpuContext{1}, path);
    for (std::int64_t e = 0; e < 32; ++e) {
      EXPECT_EQ(y.at<float>({0, 1, e}), 0.0f);
      EXPECT_NEAR(y.at<float>({0, 0, e}), 0.5 * (v.at<float>({0, 0, e}) + v.at<float>({0, 1, e})), 1e-6);
    }
    const ref::RefTensor mr = ref::from_tensor(m);
    EXPECT_LE(ref::relative_error(ref::from_tensor(y), ref::attention(ref::from_tensor(q), ref::from_tensor(k),
                                                                      ref::from_tensor(v), &mr, a)),
              1e-5);
  }
}

// A NaN score makes its query row NaN on the AVX-512, AVX2 and portable loops alike, with and
// without split keys, as in torch; rows that never see the NaN key stay finite (causal rows
// before it). path: 0 the default, 1 AVX2, 2 portable.
TEST(Attention, NaNScoresMakeTheirRowsNaN) {
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const int D : {15, 16, 24, 64})
    for (const int path : {0, 1, 2})
      for (const int splits : {0, 3})
        for (const bool causal : {false, true}) {
          SCOPED_TRACE("D " + std::to_string(D) + " path " + std::to_string(path) + " splits " +
                       std::to_string(splits) + (causal ? " causal" : ""));
          const std::int64_t T = 800;  // long enough to split
          Tensor q = Tensor::empty({1, T, 2 * D}, DType::F32), k = Tensor::empty({1, T, 2 * D}, DType::F32);
          Tensor v = Tensor::empty({1, T, 2 * D}, DType::F32);
          for (Tensor* t : {&q, &k, &v})
            for (std::int64_t i = 0; i < t->numel(); ++i) t->data_ptr<float>()[i] = u(rng);
          k.at<float>({0, 500, D + 3}) = std::numeric_limits<float>::quiet_NaN();  // head 1, key 500
          q.at<float>({0, 7, 2}) = std::numeric_limits<float>::quiet_NaN();        // head 0, row 7
          Tensor y = Tensor::empty({1, T, 2 * D}, DType::F32);
          y.fill(12345.0);
          const AttentionAttrs a{.num_heads = 2, .causal = causal};
          cpu::attn::attention_impl(q, k, v, Tensor(), a, y, cpu::CpuContext{2}, {path == 2, splits, path == 1});
          for (std::int64_t t = 0; t < T; ++t)
            for (int h = 0; h < 2; ++h) {
              const bool nan_row = (h == 0 && t == 7) || (h == 1 && (!causal || t >= 500));
              const float x = y.at<float>({0, t, h * D + 1});
              if (nan_row) ASSERT_TRUE(std::isnan(x)) << "row " << t << " head " << h;
              else ASSERT_TRUE(std::isfinite(x) && x != 12345.0f) << "row " << t << " head " << h << " " << x;
            }
        }
}

TEST(Attention, MixedOutputDtypeAndExplicitScale) {
  std::mt19937 rng(9);
  Tensor q = bf16_exact({2, 5, 64}, rng), k = bf16_exact({2, 7, 64}, rng), v = bf16_exact({2, 7, 64}, rng);
  AttentionAttrs a{.num_heads = 4, .scale = 0.3f};
  Tensor y = Tensor::empty({2, 5, 64}, DType::BF16);
  y.fill(std::nan(""));
  cpu::attention(q, k, v, Tensor(), a, y, cpu::CpuContext{1});
  EXPECT_LE(ref::relative_error(ref::from_tensor(y), ref::attention(ref::from_tensor(q), ref::from_tensor(k),
                                                                    ref::from_tensor(v), nullptr, a)),
            1e-2);
}

TEST(Attention, EmptyKeysGiveZeros) {
  Tensor q = Tensor::zeros({1, 3, 32}, DType::F32), k = Tensor::zeros({1, 0, 32}, DType::F32);
  Tensor y = Tensor::empty({1, 3, 32}, DType::F32);
  y.fill(std::nan(""));
  cpu::attention(q, k, k, Tensor(), AttentionAttrs{.num_heads = 2}, y, cpu::CpuContext{1});
  for (float x : y.to_float_vector()) EXPECT_EQ(x, 0.0f);
}

// ---- errors ----------------------------------------------------------------------------------------

void expect_invalid(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected Error(invalid_argument) containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Attention, Errors) {
  const Tensor q = Tensor::zeros({2, 5, 48}, DType::F32), k = Tensor::zeros({2, 7, 32}, DType::F32);
  Tensor y = Tensor::empty({2, 5, 48}, DType::F32);
  const cpu::CpuContext ctx{1};
  // Hq = 3, Hkv = 2: neither divides the other.
  expect_invalid([&] { cpu::attention(q, k, k, Tensor(), {.num_heads = 3, .num_kv_heads = 2}, y, ctx); },
                 "num_heads 3 and num_kv_heads 2 must divide one another (q [2, 5, 48], k [2, 7, 32])");
  // Hq = 2, Hkv = 3 (reverse direction) also fails.
  expect_invalid([&] {
    cpu::attention(Tensor::zeros({2, 5, 32}, DType::F32), Tensor::zeros({2, 7, 48}, DType::F32),
                   Tensor::zeros({2, 7, 48}, DType::F32), Tensor(), {.num_heads = 2, .num_kv_heads = 3}, y, ctx);
  }, "must divide one another");
  // D mismatch: q has D = 16 (3 heads), k has 2 heads of 16 = 32 but we say 4 kv heads.
  expect_invalid([&] { cpu::attention(q, k, k, Tensor(), {.num_heads = 3, .num_kv_heads = 3}, y, ctx); },
                 "head dim mismatch: q [2, 5, 48]");
  const Tensor k48 = Tensor::zeros({2, 7, 48}, DType::F32);
  // Key padding mask of the wrong shape.
  expect_invalid([&] {
    cpu::attention(q, k48, k48, Tensor::zeros({2, 8}, DType::Bool), {.num_heads = 3, .mask = MaskKind::key_padding}, y,
                   ctx);
  }, "key padding mask is [2, 8], expected [2, 7]");
  // Additive mask whose head dim is neither 1 nor Hq.
  expect_invalid([&] {
    cpu::attention(q, k48, k48, Tensor::zeros({2, 2, 5, 7}, DType::F32), {.num_heads = 3, .mask = MaskKind::additive},
                   y, ctx);
  }, "additive mask [2, 2, 5, 7] does not broadcast to [2, 3, 5, 7]");
  // Wrong output shape, missing mask, k/v mismatch.
  Tensor bad_y = Tensor::empty({2, 5, 47}, DType::F32);
  expect_invalid([&] { cpu::attention(q, k48, k48, Tensor(), {.num_heads = 3}, bad_y, ctx); },
                 "output is [2, 5, 47], expected [2, 5, 48]");
  expect_invalid([&] { cpu::attention(q, k48, k48, Tensor(), {.num_heads = 3, .mask = MaskKind::additive}, y, ctx); },
                 "needs a mask tensor");
  expect_invalid([&] { cpu::attention(q, k48, k, Tensor(), {.num_heads = 3}, y, ctx); },
                 "k [2, 7, 48] and v [2, 7, 32]");
}

// ---- relative-position attention ----------------------------------------------------------------

struct RelCase {
  std::int64_t B, T;
  int K;
  bool masked;
  bool strided;
};

void check_rel(const RelCase& c, DType dtype, int threads) {
  std::mt19937 rng(static_cast<std::uint32_t>(c.T * 31 + c.K));
  const int H = 4;
  const std::int64_t D = 16, HD = H * D;
  Tensor q, k, v;
  if (c.strided) {
    Tensor f = bf16_exact({c.B, c.T, 3 * HD}, rng);
    q = f.slice(2, 0, HD), k = f.slice(2, HD, 2 * HD), v = f.slice(2, 2 * HD, 3 * HD);
  } else {
    q = bf16_exact({c.B, c.T, HD}, rng), k = bf16_exact({c.B, c.T, HD}, rng), v = bf16_exact({c.B, c.T, HD}, rng);
  }
  Tensor pos = bf16_exact({2 * c.K + 1, HD}, rng), u = bf16_exact({H, D}, rng, -0.5, 0.5),
         bv = bf16_exact({H, D}, rng, -0.5, 0.5);
  Tensor mask;
  if (c.masked) {  // b0: random, b1: fully masked, b2: right padding
    mask = Tensor::empty({c.B, c.T}, DType::Bool);
    for (std::int64_t b = 0; b < c.B; ++b)
      for (std::int64_t j = 0; j < c.T; ++j) mask.at<bool>({b, j}) = b == 0 ? (j % 3 != 1 || j == 0) : b == 2 && j < 5;
  }
  const RelPosAttentionAttrs a{.num_heads = H, .max_relative = c.K,
                               .mask = c.masked ? MaskKind::key_padding : MaskKind::none};
  const ref::RefTensor mr = c.masked ? ref::from_tensor(mask) : ref::RefTensor{};
  const ref::RefTensor want = ref::rel_pos_attention(ref::from_tensor(q), ref::from_tensor(k), ref::from_tensor(v),
                                                     ref::from_tensor(pos), ref::from_tensor(u), ref::from_tensor(bv),
                                                     c.masked ? &mr : nullptr, a);
  auto cvt = [&](const Tensor& t) { return dtype == DType::F32 ? t : t.to(dtype); };
  Tensor y = Tensor::empty({c.B, c.T, HD}, dtype);
  y.fill(std::nan(""));
  cpu::rel_pos_attention(cvt(q), cvt(k), cvt(v), cvt(pos), cvt(u), cvt(bv), mask, a, y, cpu::CpuContext{threads});
  EXPECT_LE(ref::relative_error(ref::from_tensor(y), want), ref::tolerance_for(dtype))
      << "T " << c.T << " K " << c.K << " masked " << c.masked << " " << dtype_name(dtype);
  if (c.masked && c.B > 1)  // batch 1 is fully masked: zeros
    for (std::int64_t i = 0; i < c.T; ++i) EXPECT_EQ(y.to(DType::F32).at<float>({1, i, 0}), 0.0f);
}

TEST(RelPosAttention, MatchesReference) {
  for (std::int64_t T : {1, 9, 40})
    for (int K : {2, 8})
      for (bool masked : {false, true})
        for (bool strided : {false, true}) {
          check_rel({3, T, K, masked, strided}, DType::F32, 2);
          check_rel({3, T, K, masked, strided}, DType::BF16, 1);
        }
}

TEST(RelPosAttention, Errors) {
  const Tensor q = Tensor::zeros({1, 9, 64}, DType::F32), u = Tensor::zeros({4, 16}, DType::F32);
  Tensor y = Tensor::empty({1, 9, 64}, DType::F32);
  expect_invalid([&] {
    cpu::rel_pos_attention(q, q, q, Tensor::zeros({4, 64}, DType::F32), u, u, Tensor(),
                           {.num_heads = 4, .max_relative = 2}, y, cpu::CpuContext{1});
  }, "pos is [4, 64], expected [5, 64]");
  expect_invalid([&] {
    cpu::rel_pos_attention(q, q, q, Tensor::zeros({5, 64}, DType::F32), u, u, Tensor::zeros({1, 8}, DType::Bool),
                           {.num_heads = 4, .max_relative = 2, .mask = MaskKind::key_padding}, y, cpu::CpuContext{1});
  }, "key padding mask is [1, 8], expected [1, 9]");
}

}  // namespace
