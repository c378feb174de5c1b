// CPU decode attention over a paged KV cache (cpu::decode_attention) against a float64 decode
// reference written here, plus the stream-K / split schedules of kernels/common/lean_schedule.h.
//
// The paged cache is built by hand: each sequence's blocks are scattered over a shuffled pool,
// and every slot that holds no valid token (unused blocks, the tail of a last block) is NaN, so
// any read past a sequence's length poisons the output. Values are rounded to bf16 precision so
// one reference serves the f32, f16 and bf16 caches.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "kernels/common/lean_schedule.h"
#include "kernels/cpu/decode_attention_internal.h"
#include "reference/ref_tensor.h"

using namespace encore;
using i64 = std::int64_t;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Case {
  std::vector<i64> lens;
  int Hq = 1, Hkv = 1, D = 16, bs = 16, Tq = 1;
  std::string name() const {
    std::string s = "B" + std::to_string(lens.size()) + "_L";
    for (i64 l : lens) s += std::to_string(l) + ",";
    return s + "_H" + std::to_string(Hq) + "x" + std::to_string(Hkv) + "_D" + std::to_string(D) + "_bs" +
           std::to_string(bs) + "_Tq" + std::to_string(Tq);
  }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

// A paged cache plus the dense per-sequence K/V it holds.
struct Paged {
  Tensor q, kc, vc, table, lengths;  // q, caches in f32 here; converted per run
  std::vector<std::vector<float>> k, v;  // [b][pos][h][d]
};

float bf16_round(float x) { return bfloat16_to_float(float_to_bfloat16(x)); }

Paged make_paged(const Case& c, std::mt19937& rng, double q_range = 2.0) {
  const int B = static_cast<int>(c.lens.size());
  std::uniform_real_distribution<float> kd(-1.0f, 1.0f), vd(-0.5f, 1.5f), qd(static_cast<float>(-q_range),
                                                                            static_cast<float>(q_range));
  Paged p;
  i64 max_blocks = 0, used = 0;
  for (i64 l : c.lens) max_blocks = std::max(max_blocks, (l + c.bs - 1) / c.bs), used += (l + c.bs - 1) / c.bs;
  max_blocks += 1;  // a spare column of -1 entries past every sequence
  const i64 nblocks = used + 3;
  std::vector<int> pool(static_cast<std::size_t>(nblocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  p.kc = Tensor::empty({nblocks, c.Hkv, c.bs, c.D}, DType::F32);
  p.vc = Tensor::empty({nblocks, c.Hkv, c.bs, c.D}, DType::F32);
  std::fill_n(p.kc.data_ptr<float>(), p.kc.numel(), kNaN);
  std::fill_n(p.vc.data_ptr<float>(), p.vc.numel(), kNaN);
  p.table = Tensor::empty({B, max_blocks}, DType::I32);
  p.lengths = Tensor::empty({B}, DType::I32);
  std::fill_n(p.table.data_ptr<std::int32_t>(), p.table.numel(), -1);
  std::size_t next = 0;
  p.k.resize(B), p.v.resize(B);
  for (int b = 0; b < B; ++b) {
    const i64 len = c.lens[b];
    p.lengths.data_ptr<std::int32_t>()[b] = static_cast<std::int32_t>(len);
    for (i64 i = 0; i < (len + c.bs - 1) / c.bs; ++i) p.table.data_ptr<std::int32_t>()[b * max_blocks + i] = pool[next++];
    p.k[b].resize(static_cast<std::size_t>(len * c.Hkv * c.D));
    p.v[b].resize(p.k[b].size());
    for (i64 pos = 0; pos < len; ++pos) {
      const i64 blk = p.table.data_ptr<std::int32_t>()[b * max_blocks + pos / c.bs], off = pos % c.bs;
      for (int h = 0; h < c.Hkv; ++h)
        for (int d = 0; d < c.D; ++d) {
          const std::size_t i = static_cast<std::size_t>((pos * c.Hkv + h) * c.D + d);
          p.k[b][i] = bf16_round(kd(rng)), p.v[b][i] = bf16_round(vd(rng));
          const i64 ci = ((blk * c.Hkv + h) * c.bs + off) * c.D + d;
          p.kc.data_ptr<float>()[ci] = p.k[b][i], p.vc.data_ptr<float>()[ci] = p.v[b][i];
        }
    }
  }
  p.q = Tensor::empty({B, c.Tq, static_cast<i64>(c.Hq) * c.D}, DType::F32);
  for (i64 i = 0; i < p.q.numel(); ++i) p.q.data_ptr<float>()[i] = bf16_round(qd(rng));
  return p;
}

// Float64 decode attention: query token t of sequence b sits at position len - Tq + t, attends
// causally; query head hq uses kv head hq / (Hq / Hkv).
ref::RefTensor reference(const Case& c, const Paged& p) {
  const int B = static_cast<int>(c.lens.size()), g = c.Hq / c.Hkv;
  ref::RefTensor out(Shape{B, c.Tq, static_cast<i64>(c.Hq) * c.D});
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  std::vector<double> s, o(static_cast<std::size_t>(c.D));
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < c.Tq; ++t)
      for (int hq = 0; hq < c.Hq; ++hq) {
        const i64 pos = c.lens[b] - c.Tq + t;
        const int h = hq / g;
        const float* q = p.q.data_ptr<float>() + (static_cast<i64>(b) * c.Tq + t) * c.Hq * c.D + hq * c.D;
        s.assign(static_cast<std::size_t>(pos + 1), 0.0);
        double mx = -1e300;
        for (i64 j = 0; j <= pos; ++j) {
          double acc = 0;
          for (int d = 0; d < c.D; ++d) acc += static_cast<double>(q[d]) * p.k[b][(j * c.Hkv + h) * c.D + d];
          s[j] = acc * scale, mx = std::max(mx, s[j]);
        }
        double l = 0;
        std::fill(o.begin(), o.end(), 0.0);
        for (i64 j = 0; j <= pos; ++j) {
          const double e = std::exp(s[j] - mx);
          l += e;
          for (int d = 0; d < c.D; ++d) o[d] += e * p.v[b][(j * c.Hkv + h) * c.D + d];
        }
        for (int d = 0; d < c.D; ++d)
          out.data[static_cast<std::size_t>(((static_cast<i64>(b) * c.Tq + t) * c.Hq + hq) * c.D + d)] = o[d] / l;
      }
  return out;
}

struct RunCfg {
  DecodeStrategy strategy = DecodeStrategy::automatic;
  int threads = 2, num_splits = 0;
  DType kv = DType::F32, qy = DType::F32;
  bool portable = false;
  i64 tile = 0;
};

Tensor run(const Case& c, const Paged& p, const RunCfg& r) {
  const Tensor kc = r.kv == DType::F32 ? p.kc : p.kc.to(r.kv), vc = r.kv == DType::F32 ? p.vc : p.vc.to(r.kv);
  const Tensor q = r.qy == DType::F32 ? p.q : p.q.to(r.qy);
  Tensor y = Tensor::empty(p.q.shape(), r.qy);
  y.fill(kNaN);
  DecodeAttentionAttrs attrs{.num_heads = c.Hq, .num_kv_heads = c.Hkv, .strategy = r.strategy, .num_splits = r.num_splits};
  cpu::dec::decode_attention_impl(q, kc, vc, p.table, p.lengths, attrs, y, cpu::CpuContext{r.threads},
                                  cpu::dec::Options{r.portable, r.tile});
  return y;
}

const DecodeStrategy kStrategies[] = {DecodeStrategy::plain, DecodeStrategy::split, DecodeStrategy::lean,
                                      DecodeStrategy::automatic};
const char* strategy_name(DecodeStrategy s) {
  static const char* n[] = {"automatic", "plain", "split", "lean"};
  return n[static_cast<int>(s)];
}

// ---- accuracy against float64 ------------------------------------------------------------------

std::vector<Case> accuracy_cases() {
  std::vector<Case> cases;
  std::mt19937 rng(7);
  const std::pair<int, int> heads[] = {{1, 1}, {4, 4}, {8, 8}, {4, 1}, {8, 4}, {8, 1}};
  const int dims[] = {8, 16, 64, 128};
  const int batches[] = {1, 3, 5};
  int i = 0;
  for (auto [hq, hkv] : heads)
    for (int D : dims) {
      Case c;
      c.Hq = hq, c.Hkv = hkv, c.D = D;
      c.bs = (i % 2) ? 64 : 16;
      c.Tq = (i % 3 == 1) ? 3 : 1;
      const int B = batches[i % 3];
      const i64 L = (i % 4 == 0) ? 700 : 300;
      std::uniform_int_distribution<i64> ld(c.Tq, L);
      for (int b = 0; b < B; ++b) c.lens.push_back(ld(rng));
      cases.push_back(c);
      ++i;
    }
  // A few long ones (up to 32k keys), ragged, GQA.
  cases.push_back(Case{{32768}, 8, 1, 128, 64, 1});
  cases.push_back(Case{{20000, 5, 3001}, 8, 4, 64, 16, 3});
  cases.push_back(Case{{1, 9000}, 4, 4, 16, 16, 1});
  cases.push_back(Case{{16384, 16384}, 1, 1, 128, 64, 1});
  return cases;
}

class DecodeAccuracy : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeAccuracy, AllStrategiesMatchFloat64) {
  const Case& c = GetParam();
  std::mt19937 rng(11);
  const Paged p = make_paged(c, rng);
  const ref::RefTensor want = reference(c, p);
  const bool long_case = std::accumulate(c.lens.begin(), c.lens.end(), i64{0}) > 8000;
  for (DecodeStrategy s : kStrategies)
    for (bool portable : {false, true}) {
      if (portable && long_case && s != DecodeStrategy::lean) continue;  // keep the long cases quick
      for (DType kv : {DType::F32, DType::BF16, DType::F16}) {
        if (long_case && kv == DType::F16) continue;
        RunCfg r;
        r.strategy = s, r.portable = portable, r.kv = kv, r.qy = kv == DType::F16 ? DType::F16 : kv;
        r.threads = kv == DType::F16 ? 3 : 2;
        const double err = ref::relative_error(ref::from_tensor(run(c, p, r)), want);
        EXPECT_LE(err, kv == DType::F32 ? 1e-5 : 1e-2)
            << strategy_name(s) << (portable ? " portable " : " simd ") << dtype_name(kv);
      }
    }
  // Fixed split counts, small tiles (many pieces per head) and one thread.
  for (RunCfg r : {RunCfg{DecodeStrategy::split, 2, 3}, RunCfg{DecodeStrategy::split, 3, 7}, RunCfg{DecodeStrategy::lean, 3},
                RunCfg{DecodeStrategy::lean, 1}}) {
    r.tile = c.bs;
    EXPECT_LE(ref::relative_error(ref::from_tensor(run(c, p, r)), want), 1e-5) << strategy_name(r.strategy);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, DecodeAccuracy, ::testing::ValuesIn(accuracy_cases()),
                         [](const auto& info) { return "c" + std::to_string(info.index); });

// Peaky scores (large q) exercise the running-max rescaling and the merge weights.
TEST(DecodeAttention, PeakyScores) {
  const Case c{{777, 64, 1500}, 8, 2, 64, 16, 3};
  std::mt19937 rng(3);
  const Paged p = make_paged(c, rng, 40.0);
  const ref::RefTensor want = reference(c, p);
  for (DecodeStrategy s : kStrategies)
    for (bool portable : {false, true}) {
      RunCfg r;
      r.strategy = s, r.portable = portable, r.tile = 16;
      EXPECT_LE(ref::relative_error(ref::from_tensor(run(c, p, r)), want), 1e-5) << strategy_name(s);
    }
}

// A NaN score (a NaN key, or a NaN query) makes its rows NaN in every strategy and loop, as in
// torch; rows that do not see it stay finite. The output is poisoned with a finite value here, so
// an unwritten row cannot pass for NaN.
TEST(DecodeAttention, NaNScoresMakeTheirRowsNaN) {
  const Case c{{300, 40}, 4, 2, 64, 16, 1};  // kv head 0 serves query heads 0-1, kv head 1 heads 2-3
  std::mt19937 rng(21);
  Paged p = make_paged(c, rng);
  const i64 blk = p.table.at<std::int32_t>({0, 100 / c.bs});
  p.kc.at<float>({blk, 1, 100 % c.bs, 5}) = kNaN;  // sequence 0, position 100, kv head 1
  p.q.at<float>({1, 0, 3}) = kNaN;                  // sequence 1, query head 0: every score NaN
  for (DecodeStrategy st : kStrategies)
    for (bool portable : {false, true}) {
      SCOPED_TRACE(std::string(strategy_name(st)) + (portable ? " portable" : ""));
      Tensor y = Tensor::empty(p.q.shape(), DType::F32);
      y.fill(12345.0);
      DecodeAttentionAttrs attrs{.num_heads = c.Hq, .num_kv_heads = c.Hkv, .strategy = st};
      cpu::dec::decode_attention_impl(p.q, p.kc, p.vc, p.table, p.lengths, attrs, y, cpu::CpuContext{2},
                                      cpu::dec::Options{portable, 16});
      for (int b = 0; b < 2; ++b)
        for (int h = 0; h < 4; ++h) {
          const bool nan_row = (b == 0 && h >= 2) || (b == 1 && h == 0);
          for (int d = 0; d < c.D; ++d) {
            const float v = y.at<float>({b, 0, h * c.D + d});
            if (nan_row) ASSERT_TRUE(std::isnan(v)) << "b " << b << " h " << h << " d " << d;
            else ASSERT_TRUE(std::isfinite(v) && v != 12345.0f) << "b " << b << " h " << h << " d " << d << " " << v;
          }
        }
    }
}

// ---- determinism and agreement -----------------------------------------------------------------

TEST(DecodeAttention, BitwiseDeterministic) {
  const Case cases[] = {Case{{3000, 37, 900}, 8, 2, 128, 16, 1}, Case{{3001}, 4, 1, 64, 64, 3}};
  for (const Case& c : cases) {
    std::mt19937 rng(5);
    const Paged p = make_paged(c, rng);
    for (DecodeStrategy s : kStrategies)
      for (int threads : {1, 2, 3})
        for (DType kv : {DType::F32, DType::BF16}) {
          RunCfg r;
          r.strategy = s, r.threads = threads, r.kv = kv, r.tile = 16;
          const Tensor first = run(c, p, r);
          for (int rep = 0; rep < 4; ++rep) {
            const Tensor again = run(c, p, r);
            ASSERT_EQ(std::memcmp(first.data(), again.data(), first.nbytes()), 0)
                << c.name() << " " << strategy_name(s) << " threads " << threads << " rep " << rep;
          }
        }
  }
}

TEST(DecodeAttention, StrategiesAgree) {
  const Case c{{4097, 300, 65, 2222, 9}, 8, 2, 64, 16, 1};
  std::mt19937 rng(9);
  const Paged p = make_paged(c, rng);
  RunCfg base;
  base.strategy = DecodeStrategy::plain;
  const ref::RefTensor plain = ref::from_tensor(run(c, p, base));
  for (DecodeStrategy s : {DecodeStrategy::split, DecodeStrategy::lean})
    for (int threads : {2, 3, 7}) {
      RunCfg r;
      r.strategy = s, r.threads = threads, r.tile = 64;
      EXPECT_LE(ref::relative_error(ref::from_tensor(run(c, p, r)), plain), 1e-6) << strategy_name(s) << threads;
    }
}

TEST(DecodeAttention, AutomaticPicksPlainOrLean) {
  using cpu::dec::choose_strategy;
  const i64 even[4] = {100, 100, 100, 100}, ragged[4] = {400, 10, 10, 10}, one[1] = {1};
  EXPECT_EQ(choose_strategy(even, 1, 1, 1), DecodeStrategy::plain);   // one thread
  EXPECT_EQ(choose_strategy(even, 1, 1, 2), DecodeStrategy::lean);    // one head, two workers
  EXPECT_EQ(choose_strategy(even, 1, 3, 2), DecodeStrategy::lean);    // 3 heads: plain 2 : 1
  EXPECT_EQ(choose_strategy(even, 1, 4, 2), DecodeStrategy::plain);   // balanced
  EXPECT_EQ(choose_strategy(even, 4, 8, 2), DecodeStrategy::plain);   // 32 heads on 2
  EXPECT_EQ(choose_strategy(even, 4, 8, 3), DecodeStrategy::lean);    // 32 on 3: 11 vs 10.67 (3 %)
  EXPECT_EQ(choose_strategy(even, 1, 5, 2), DecodeStrategy::lean);    // 3 : 2
  EXPECT_EQ(choose_strategy(ragged, 4, 1, 2), DecodeStrategy::lean);   // one long sequence
  EXPECT_EQ(choose_strategy(ragged, 4, 2, 2), DecodeStrategy::plain);  // its 2 heads fill both
  EXPECT_EQ(choose_strategy(one, 1, 1, 2), DecodeStrategy::plain);    // a single tile
}

// ---- errors --------------------------------------------------------------------------------------

template <typename Fn>
void expect_error(Fn&& fn, ErrorCode code, const std::string& text) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected " << text;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(DecodeAttention, Errors) {
  const Case c{{40, 100}, 4, 2, 16, 16, 1};
  std::mt19937 rng(1);
  const Paged p = make_paged(c, rng);
  const DecodeAttentionAttrs attrs{.num_heads = 4, .num_kv_heads = 2};
  const cpu::CpuContext ctx{2};
  Tensor y = Tensor::empty(p.q.shape(), DType::F32);
  auto call = [&](const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& tab, const Tensor& len,
                  const DecodeAttentionAttrs& a, const Tensor& out) {
    return [=] { cpu::decode_attention(q, kc, vc, tab, len, a, out, ctx); };
  };
  EXPECT_NO_THROW(call(p.q, p.kc, p.vc, p.table, p.lengths, attrs, y)());
  // Shapes and dtypes.
  expect_error(call(p.q.slice(2, 0, 48), p.kc, p.vc, p.table, p.lengths, attrs, y), ErrorCode::invalid_argument, "q is");
  expect_error(call(p.q, p.kc, p.vc.slice(0, 0, 2), p.table, p.lengths, attrs, y), ErrorCode::invalid_argument,
               "v_cache");
  expect_error(call(p.q, p.kc, p.vc, p.table, p.lengths, DecodeAttentionAttrs{.num_heads = 4, .num_kv_heads = 3}, y),
               ErrorCode::invalid_argument, "num_kv_heads 3");
  expect_error(call(p.q, p.kc, p.vc, p.table, p.lengths, DecodeAttentionAttrs{.num_heads = 4, .num_kv_heads = 4}, y),
               ErrorCode::invalid_argument, "k_cache is");
  expect_error(call(p.q, p.kc, p.vc, p.table.to(DType::I64), p.lengths, attrs, y), ErrorCode::invalid_argument,
               "block_table");
  expect_error(call(p.q, p.kc, p.vc, p.table, p.lengths.slice(0, 0, 1), attrs, y), ErrorCode::invalid_argument,
               "lengths is");
  expect_error(call(p.q, p.kc, p.vc, p.table, p.lengths, attrs, Tensor::empty({2, 2, 64}, DType::F32)),
               ErrorCode::invalid_argument, "output is");
  expect_error(call(p.q, p.kc.to(DType::BF16), p.vc, p.table, p.lengths, attrs, y), ErrorCode::unsupported,
               "share one dtype");
  expect_error(call(p.q.to(DType::I32), p.kc, p.vc, p.table, p.lengths, attrs, y), ErrorCode::unsupported, "q (i32)");
  expect_error(call(p.q, p.kc, p.vc, p.table, p.lengths, DecodeAttentionAttrs{.num_heads = 4, .num_kv_heads = 2,
                                                                               .num_splits = -1}, y),
               ErrorCode::invalid_argument, "num_splits");
  // A hole (-1) inside sequence 1's valid length, and a block id past the pool.
  Tensor tab = p.table.clone();
  tab.at<std::int32_t>({1, 3}) = -1;
  expect_error(call(p.q, p.kc, p.vc, tab, p.lengths, attrs, y), ErrorCode::invalid_argument,
               "block_table[1][3] = -1");
  tab = p.table.clone();
  tab.at<std::int32_t>({0, 0}) = static_cast<std::int32_t>(p.kc.dim(0));
  expect_error(call(p.q, p.kc, p.vc, tab, p.lengths, attrs, y), ErrorCode::invalid_argument, "block_table[0][0]");
  // Entries past the valid length are never read: -1 or a stale block there changes nothing.
  Tensor want = Tensor::empty(p.q.shape(), DType::F32);
  call(p.q, p.kc, p.vc, p.table, p.lengths, attrs, want)();
  tab = p.table.clone();
  Tensor len_short = p.lengths.clone();
  len_short.at<std::int32_t>({1}) = 40;  // sequence 1 now ends in its third block
  call(p.q, p.kc, p.vc, p.table, len_short, attrs, want)();
  tab.at<std::int32_t>({1, 3}) = -1;                   // was a real block, now past the length
  tab.at<std::int32_t>({1, 4}) = tab.at<std::int32_t>({0, 0});  // a stale valid id
  Tensor got = Tensor::empty(p.q.shape(), DType::F32);
  call(p.q, p.kc, p.vc, tab, len_short, attrs, got)();
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.nbytes()), 0);
  // Lengths past the table's capacity, or shorter than the query.
  Tensor len = p.lengths.clone();
  len.at<std::int32_t>({1}) = static_cast<std::int32_t>(p.table.dim(1) * c.bs + 1);
  expect_error(call(p.q, p.kc, p.vc, p.table, len, attrs, y), ErrorCode::invalid_argument,
               "lengths[1] = " + std::to_string(p.table.dim(1) * c.bs + 1) + " exceeds the capacity");
  len.at<std::int32_t>({1}) = 0;
  expect_error(call(p.q, p.kc, p.vc, p.table, len, attrs, y), ErrorCode::invalid_argument, "lengths[1] = 0");
  // Undefined tensors.
  expect_error(call(Tensor(), p.kc, p.vc, p.table, p.lengths, attrs, y), ErrorCode::invalid_argument,
               "q is undefined");
}

// ---- schedules ---------------------------------------------------------------------------------

TEST(LeanSchedule, CoversEveryTileOnceWithBalancedLoads) {
  std::mt19937 rng(21);
  for (int trial = 0; trial < 400; ++trial) {
    const int B = 1 + static_cast<int>(rng() % 6), Hkv = 1 + static_cast<int>(rng() % 5);
    const int G = 1 + static_cast<int>(rng() % 20);
    const i64 T = 16 * (1 + static_cast<i64>(rng() % 4));
    std::vector<i64> lens(B), start(B + 1, 0);
    for (int b = 0; b < B; ++b) {
      lens[b] = (rng() % 5 == 0) ? 0 : 1 + static_cast<i64>(rng() % 2000);
      start[b + 1] = start[b] + Hkv * lean::tiles_for_length(lens[b], T);
    }
    const i64 W = start[B];
    const lean::LeanSplit s = lean::make_lean_split(W, G);
    std::vector<int> owner(static_cast<std::size_t>(W), -1);
    std::vector<int> slot_used(2 * G, 0);
    i64 lo = W, hi = 0;
    for (int w = 0; w < G; ++w) {
      i64 pos = lean::lean_begin(s, w);
      const i64 end = lean::lean_end(s, w);
      ASSERT_LE(pos, end);
      lo = std::min(lo, end - pos), hi = std::max(hi, end - pos);
      if (W > 0) {
        ASSERT_EQ(end - pos, w < s.high ? s.per : s.per - 1);
      }
      lean::LeanSegment sg;
      int nseg = 0;
      std::vector<lean::LeanSegment> segs;
      while (lean::lean_next_segment(start.data(), B, Hkv, s, pos, end, sg)) segs.push_back(sg), ++nseg;
      for (std::size_t k = 0; k < segs.size(); ++k) {
        const auto& g = segs[k];
        const i64 tiles = lean::tiles_for_length(lens[g.b], T);
        ASSERT_EQ(g.head_tiles, tiles);
        ASSERT_LT(g.tile_begin, g.tile_end);
        ASSERT_LE(g.tile_end, tiles);
        ASSERT_EQ(g.host, g.tile_begin == 0);
        ASSERT_EQ(g.finishing, g.tile_end == tiles);
        const i64 first = start[g.b] + g.h * tiles;
        ASSERT_EQ(g.global_begin, first + g.tile_begin);
        for (i64 t = g.tile_begin; t < g.tile_end; ++t) {
          ASSERT_EQ(owner[first + t], -1) << "tile covered twice";
          owner[first + t] = w;
        }
        ASSERT_EQ(g.first_worker, lean::lean_worker_of(s, first));
        ASSERT_EQ(g.last_worker, lean::lean_worker_of(s, first + tiles - 1));
        if (!g.host) ASSERT_EQ(k, 0u) << "only a first segment can be a non-host piece";
        if (g.host && !g.finishing) ASSERT_EQ(k + 1, segs.size()) << "only a last segment can be an unfinished host";
        if (!(g.host && g.finishing)) ++slot_used[lean::lean_partial_slot(g, w)];
        int list[64];
        const int n = lean::lean_contributors(g, list, 64);
        ASSERT_EQ(n, g.last_worker - g.first_worker + 1);
        for (int i = 1; i < n; ++i) ASSERT_EQ(list[i], list[i - 1] + 1);
      }
    }
    for (i64 t = 0; t < W; ++t) {
      ASSERT_GE(owner[t], 0) << "tile " << t << " not covered";
      ASSERT_EQ(owner[t], lean::lean_worker_of(s, t));
    }
    for (int u : slot_used) ASSERT_LE(u, 1);
    if (W > 0) ASSERT_LE(hi - lo, 1);
  }
}

TEST(LeanSchedule, SequenceOfSkipsEmptySequences) {
  const i64 start[] = {0, 0, 4, 4, 4, 10};
  EXPECT_EQ(lean::sequence_of(start, 5, 0), 1);
  EXPECT_EQ(lean::sequence_of(start, 5, 3), 1);
  EXPECT_EQ(lean::sequence_of(start, 5, 4), 4);
  EXPECT_EQ(lean::sequence_of(start, 5, 9), 4);
  EXPECT_EQ(lean::tile_tokens(16, 64), 64);
  EXPECT_EQ(lean::tile_tokens(48, 64), 96);
  EXPECT_EQ(lean::tile_tokens(128, 64), 128);
}

TEST(SplitSchedule, ItemsCoverEveryTileOnce) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 200; ++trial) {
    const int B = 1 + static_cast<int>(rng() % 5), Hkv = 1 + static_cast<int>(rng() % 4);
    const int splits = 1 + static_cast<int>(rng() % 9);
    std::vector<i64> tiles(B), start(B + 1, 0);
    for (int b = 0; b < B; ++b) {
      tiles[b] = static_cast<i64>(rng() % 30);
      start[b + 1] = start[b] + Hkv * lean::split_pieces(tiles[b], splits);
    }
    std::vector<std::vector<int>> seen(B);
    for (int b = 0; b < B; ++b) seen[b].assign(static_cast<std::size_t>(Hkv * tiles[b]), 0);
    for (i64 i = 0; i < start[B]; ++i) {
      const lean::SplitItem it = lean::split_item_at(start.data(), tiles.data(), B, splits, i);
      ASSERT_LT(it.tile_begin, it.tile_end);
      ASSERT_EQ(it.pieces, std::min<i64>(splits, tiles[it.b]));
      for (i64 t = it.tile_begin; t < it.tile_end; ++t) ++seen[it.b][it.h * tiles[it.b] + t];
    }
    for (const auto& v : seen)
      for (int x : v) ASSERT_EQ(x, 1);
  }
}

TEST(SplitSchedule, FlashAttention2Heuristic) {
  // Spec §2: one KV head at 128k over 264 slots settles on 114 splits; 8 heads on 29 (512 blocks).
  EXPECT_EQ(lean::num_splits_heuristic(1, 264, 1024, 128), 114);
  EXPECT_EQ(lean::num_splits_heuristic(8, 264, 512, 128), 29);
  EXPECT_EQ(lean::num_splits_heuristic(300, 264, 1024, 128), 1);  // a full wave: no split
  EXPECT_EQ(lean::num_splits_heuristic(1, 2, 100, 128), 2);       // CPU: 2 threads
  EXPECT_EQ(lean::num_splits_heuristic(3, 2, 100, 128), 1);
  EXPECT_EQ(lean::num_splits_heuristic(1, 8, 3, 128), 3);  // never more splits than tiles
}

}  // namespace

// kv_cache_write's shared argument checks (kernels/common/decode_checks.h, also the CUDA
// kernel's): one element size serves k and v, so mixed dtypes are refused; shapes are named.
TEST(KvCacheWrite, ArgumentErrors) {
  const Tensor kc = Tensor::zeros({2, 2, 4, 8}, DType::F32), vc = Tensor::zeros({2, 2, 4, 8}, DType::F32);
  const Tensor vc16 = Tensor::zeros({2, 2, 4, 8}, DType::BF16);
  const Tensor k = Tensor::zeros({1, 1, 16}, DType::F32), v16 = Tensor::zeros({1, 1, 16}, DType::BF16);
  Tensor table = Tensor::zeros({1, 2}, DType::I32), lengths = Tensor::zeros({1}, DType::I32);
  lengths.data_ptr<std::int32_t>()[0] = 1;
  expect_error([&] { cpu::kv_cache_write(k, v16, kc, vc16, table, lengths, {1}); }, ErrorCode::invalid_argument,
               "new entries are f32/bf16 and the caches hold f32/bf16: all must match");
  expect_error([&] { cpu::kv_cache_write(k, Tensor::zeros({1, 1, 8}, DType::F32), kc, vc, table, lengths, {1}); },
               ErrorCode::invalid_argument, "must be [B, Tq, Hkv*D]");
  expect_error([&] { cpu::kv_cache_write(k, k, kc, vc, Tensor::zeros({1, 2}, DType::I64), lengths, {1}); },
               ErrorCode::invalid_argument, "i32 [B, max_blocks] table");
  cpu::kv_cache_write(k, k, kc, vc, table, lengths, {1});  // consistent: writes position 0
  expect_error([&] { cpu::kv_cache_write(k, k, kc, Tensor(), table, lengths, {1}); }, ErrorCode::invalid_argument,
               "v_cache is undefined");
}

// A thread count below 1 means one thread (as everywhere in the CPU backend), not a huge team.
TEST(KvCacheWrite, ThreadCountBelowOneRunsOnOneThread) {
  const Tensor kc = Tensor::zeros({40, 2, 4, 8}, DType::F32), vc = Tensor::zeros({40, 2, 4, 8}, DType::F32);
  Tensor table = Tensor::zeros({40, 1}, DType::I32), lengths = Tensor::zeros({40}, DType::I32);
  for (int b = 0; b < 40; ++b) table.data_ptr<std::int32_t>()[b] = b, lengths.data_ptr<std::int32_t>()[b] = 2;
  Tensor k = Tensor::zeros({40, 2, 16}, DType::F32);  // 40 x 2 x 2 heads > 64 rows: the parallel path
  for (std::int64_t i = 0; i < k.numel(); ++i) k.data_ptr<float>()[i] = static_cast<float>(i);
  const int omp_default = omp_get_max_threads();
  for (const int threads : {0, -1}) {
    std::fill_n(kc.data_ptr<float>(), kc.numel(), -1.0f);  // every call writes into a fresh cache
    std::fill_n(vc.data_ptr<float>(), vc.numel(), -1.0f);
    cpu::kv_cache_write(k, k, kc, vc, table, lengths, {threads});
    for (int b = 0; b < 40; ++b)
      for (int t = 0; t < 2; ++t)
        for (int h = 0; h < 2; ++h)
          for (int d = 0; d < 8; ++d) {
            ASSERT_EQ(kc.at<float>({b, h, t, d}), k.at<float>({b, t, h * 8 + d})) << b << " " << t << " " << h;
            ASSERT_EQ(vc.at<float>({b, h, t, d}), k.at<float>({b, t, h * 8 + d})) << b << " " << t << " " << h;
          }
  }
  EXPECT_EQ(omp_get_max_threads(), omp_default);  // no setting left behind
}
