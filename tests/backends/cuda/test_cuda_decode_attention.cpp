// CUDA decode attention over a paged KV cache (cuda::decode_attention): every strategy and both
// segment kernels against the CPU kernel (same paged inputs) and a float64 dense reference; ragged
// batches, GQA, Tq > 1, long contexts, bitwise determinism, CUDA-graph capture and replay over
// growing lengths. A host-only test (no GPU) checks the device schedule (lean_schedule_device.cuh)
// against kernels/common/lean_schedule.h.
//
// The paged cache scatters each sequence over a shuffled block pool and fills every slot that holds
// no valid token with NaN, so a kernel that reads past a length poisons its output. Values are
// rounded to bf16 precision, so one float64 reference serves f32, f16 and bf16 caches.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cuda/cuda_kernels.h"
#include "cuda_test_util.h"
#include "kernels/common/lean_schedule.h"
#include "kernels/cuda/decode_attention_internal.h"
#include "kernels/cuda/lean_schedule_device.cuh"

using namespace encore;
using namespace encore::cuda::test;
using i64 = std::int64_t;

namespace {

namespace dec = encore::cuda::dec;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- host-only: the device schedule -------------------------------------------------------------

struct Piece {
  i64 k0, k1;
  int worker;
  dec::LeanWork w;
};

// Every worker's segments, checked against lean_schedule.h's partition and the merge protocol.
void check_lean_schedule(const std::vector<i64>& lens, int Hkv, int MT, i64 T, int G) {
  const int B = static_cast<int>(lens.size()), Hv = Hkv * MT;
  std::vector<i64> start(B + 1, 0);
  for (int b = 0; b < B; ++b) start[b + 1] = start[b] + dec::sequence_tiles(lens[b], T, Hv);
  const lean::LeanSplit split = lean::make_lean_split(start[B], G);
  std::map<std::pair<int, int>, std::vector<Piece>> heads;  // (b, v) -> pieces in worker order
  std::set<int> slots;
  for (int w = 0; w < G; ++w) {
    i64 pos = lean::lean_begin(split, w);
    const i64 end = lean::lean_end(split, w);
    ASSERT_LE(end - pos, split.per);
    lean::LeanSegment sg;
    int seg_index = 0, nseg = 0;
    for (i64 p2 = pos; lean::lean_next_segment(start.data(), B, Hv, split, p2, end, sg);) ++nseg;
    while (lean::lean_next_segment(start.data(), B, Hv, split, pos, end, sg)) {
      const dec::LeanWork wk = dec::lean_work(sg, w, MT, T, lens[sg.b]);
      ASSERT_EQ(wk.h * MT + wk.mt, sg.h);
      ASSERT_LT(wk.k0, wk.k1);
      if (!wk.store) {
        ASSERT_TRUE(slots.insert(wk.slot).second) << "slot " << wk.slot << " used twice";
        ASSERT_LT(wk.slot, 2 * G);
      }
      if (wk.merge) ASSERT_EQ(seg_index, nseg - 1) << "a worker may wait only at its range end";
      if (!wk.store && !wk.merge) ASSERT_EQ(seg_index, 0) << "the last worker's piece is its first segment";
      heads[{wk.b, sg.h}].push_back({wk.k0, wk.k1, w, wk});
      ++seg_index;
    }
  }
  for (int b = 0; b < B; ++b)
    for (int v = 0; v < Hv; ++v) {
      const auto it = heads.find({b, v});
      if (lens[b] == 0) {
        ASSERT_TRUE(it == heads.end());
        continue;
      }
      ASSERT_TRUE(it != heads.end());
      const std::vector<Piece>& ps = it->second;
      i64 next = 0;
      const int n = static_cast<int>(ps.size());
      const i64 E = 37 * 16;  // any element count: the slices must partition it
      i64 covered = 0;
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(ps[i].k0, next) << "keys not covered exactly once";
        next = ps[i].k1;
        const dec::LeanWork& wk = ps[i].w;
        ASSERT_EQ(ps[i].worker, ps[0].worker + i) << "pieces come from consecutive workers";
        ASSERT_EQ(wk.first, ps[0].worker);
        ASSERT_EQ(wk.last, ps[0].worker + n - 1);
        ASSERT_EQ(wk.store, n == 1);
        if (n == 1) continue;
        ASSERT_EQ(wk.slot, dec::contributor_slot(wk.first, i));
        ASSERT_EQ(wk.merge, i < n - 1);
        if (wk.merge) {
          ASSERT_EQ(wk.mergers, n - 1);
          ASSERT_EQ(wk.merge_index, i);
          covered += dec::slice_begin(E, wk.mergers, i + 1) - dec::slice_begin(E, wk.mergers, i);
        }
      }
      ASSERT_EQ(next, lens[b]);
      if (n > 1) ASSERT_EQ(covered, E);
    }
}

// The padded split grid against lean_schedule.h's compact item list.
void check_split_schedule(const std::vector<i64>& lens, int Hkv, int MT, i64 T, int s) {
  const int B = static_cast<int>(lens.size()), Hv = Hkv * MT;
  std::vector<i64> tiles(B), item_start(B + 1, 0);
  for (int b = 0; b < B; ++b) {
    tiles[b] = lean::tiles_for_length(lens[b], T);
    item_start[b + 1] = item_start[b] + Hv * lean::split_pieces(tiles[b], s);
  }
  std::map<std::tuple<int, int, i64>, std::pair<i64, i64>> want;
  for (i64 g = 0; g < item_start[B]; ++g) {
    const lean::SplitItem it = lean::split_item_at(item_start.data(), tiles.data(), B, s, g);
    want[{it.b, it.h, it.piece}] = {it.tile_begin * T, std::min(it.tile_end * T, lens[it.b])};
  }
  std::size_t seen = 0;
  for (i64 cta = 0; cta < static_cast<i64>(B) * Hv * s; ++cta) {
    const int b = static_cast<int>(cta / (static_cast<i64>(s) * Hv));
    const dec::SplitWork w = dec::split_work(cta, Hv, MT, s, T, lens[b]);
    ASSERT_EQ(w.b, b);
    if (w.piece >= w.pieces) continue;
    const auto it = want.find({w.b, w.h * MT + w.mt, w.piece});
    ASSERT_TRUE(it != want.end());
    ASSERT_EQ(it->second.first, w.k0);
    ASSERT_EQ(it->second.second, w.k1);
    ++seen;
  }
  ASSERT_EQ(seen, want.size());
}

TEST(CudaDecodeSchedule, DeviceArithmeticMatchesLeanSchedule) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const int B = std::uniform_int_distribution<int>(1, 24)(rng);
    const int Hkv = std::uniform_int_distribution<int>(1, 8)(rng), MT = std::uniform_int_distribution<int>(1, 3)(rng);
    const i64 T = i64{16} << std::uniform_int_distribution<int>(0, 4)(rng);
    const int G = std::uniform_int_distribution<int>(1, 300)(rng);
    const i64 maxlen = trial % 3 == 0 ? 40 : (trial % 3 == 1 ? 3000 : 200000);
    std::vector<i64> lens(B);
    for (i64& l : lens) l = std::uniform_int_distribution<i64>(0, maxlen)(rng) * (rng() % 7 != 0);
    SCOPED_TRACE("trial " + std::to_string(trial));
    check_lean_schedule(lens, Hkv, MT, T, G);
    for (int s : {1, 3, 16, 129}) check_split_schedule(lens, Hkv, MT, T, s);
  }
}

TEST(CudaDecodeSchedule, StrategyRule) {
  // Shapes of the H200 matrix (docs/benchmarks/decode_attention.md) and the edges of each rule.
  auto pick = [](std::int64_t batch, std::int64_t heads, std::int64_t rows, std::int64_t capacity,
                 std::int64_t tile, int resident = 132) {
    const dec::StrategyChoice c =
        dec::choose_strategy({.batch = batch, .virtual_heads = heads, .rows = rows, .resident_ctas = resident,
                              .capacity_tokens = capacity, .tile_tokens = tile});
    EXPECT_EQ(c.splits, 0);  // without clusters no rule fixes the piece count
    return c.strategy;
  };
  EXPECT_EQ(pick(1, 1, 1, 16384, 64), DecodeStrategy::lean);      // one head: only lean spreads it
  EXPECT_EQ(pick(1, 8, 1, 16384, 64), DecodeStrategy::split);     // MHA, one sequence
  EXPECT_EQ(pick(1, 7, 1, 16384, 64), DecodeStrategy::lean);      // too few heads for split
  EXPECT_EQ(pick(1, 12, 1, 1024, 128), DecodeStrategy::split);    // short, but one sequence: split
  EXPECT_EQ(pick(1, 8, 4, 32768, 64), DecodeStrategy::lean);      // GQA 32/8: rows per kv head
  EXPECT_EQ(pick(1, 1, 8, 131072, 64), DecodeStrategy::lean);     // GQA 8/1
  EXPECT_EQ(pick(2, 4, 1, 131072, 64), DecodeStrategy::lean);     // two sequences may be ragged
  EXPECT_EQ(pick(4, 12, 1, 1024, 128), DecodeStrategy::plain);    // 8 tiles per head, one wave
  EXPECT_EQ(pick(4, 12, 1, 1025, 128), DecodeStrategy::lean);     // 9 tiles
  EXPECT_EQ(pick(1, 1, 8, 1024, 64), DecodeStrategy::lean);       // 16 tiles: lean ahead
  EXPECT_EQ(pick(16, 12, 1, 1024, 128), DecodeStrategy::lean);    // short, but 1.45 waves
  EXPECT_EQ(pick(16, 1, 8, 131072, 64), DecodeStrategy::lean);    // ragged GQA batch
  EXPECT_EQ(pick(8, 32, 1, 4096, 128), DecodeStrategy::lean);     // 1.9 waves
  EXPECT_EQ(pick(33, 8, 1, 4096, 128), DecodeStrategy::plain);    // 2 waves exactly
  EXPECT_EQ(pick(64, 32, 1, 4096, 128), DecodeStrategy::plain);   // 15.5 waves
  EXPECT_EQ(pick(2000, 1, 1, 4096, 128), DecodeStrategy::plain);  // more than lean schedules
  EXPECT_EQ(pick(1, 12, 1, 128, 128), DecodeStrategy::plain);     // one tile per sequence
  EXPECT_EQ(pick(1, 12, 1, 129, 128), DecodeStrategy::split);
  EXPECT_EQ(pick(1, 105, 1, 131072, 64), DecodeStrategy::split);  // 105 < 0.8 x 132
  EXPECT_EQ(pick(1, 112, 1, 131072, 64), DecodeStrategy::lean);   // split would keep one piece
  EXPECT_EQ(pick(1, 8, 2, 16384, 64), DecodeStrategy::lean);      // MHA with 2 query tokens
  EXPECT_EQ(pick(11, 12, 1, 1024, 128), DecodeStrategy::plain);   // 132 items: one wave
  EXPECT_EQ(pick(12, 12, 1, 1024, 128), DecodeStrategy::lean);    // 144 items: 1.09 waves
  EXPECT_EQ(pick(1, 1, 8, 512, 64), DecodeStrategy::plain);       // one short head
  EXPECT_EQ(pick(4, 12, 1, 1024, 128, 264), DecodeStrategy::plain);  // two CTAs per SM
  EXPECT_EQ(pick(40, 12, 1, 4096, 128, 264), DecodeStrategy::lean);  // 1.8 waves of 264
  EXPECT_EQ(pick(44, 12, 1, 4096, 128, 264), DecodeStrategy::plain); // 2 waves of 264
  EXPECT_EQ(pick(1, 1, 1, 4096, 0, 0), DecodeStrategy::lean);     // clamped: tile 1, one slot
  // With clusters of 8 resident (sm_90): one sequence of at most 8192 tokens with several query rows
  // per kv head, whose heads' clusters all fit at once, splits in 8; otherwise the rules above.
  auto pick_clusters = [](std::int64_t batch, std::int64_t heads, std::int64_t rows, std::int64_t capacity,
                          int clusters) {
    return dec::choose_strategy({.batch = batch, .virtual_heads = heads, .rows = rows, .resident_ctas = 132,
                                 .capacity_tokens = capacity, .tile_tokens = 64, .resident_clusters = clusters});
  };
  for (auto [heads, rows, capacity] : {std::tuple{1, 8, 1000}, {8, 4, 4097}, {8, 8, 8192}, {16, 2, 1024}}) {
    const dec::StrategyChoice c = pick_clusters(1, heads, rows, capacity, 16);
    EXPECT_EQ(c.strategy, DecodeStrategy::split) << heads << " " << rows << " " << capacity;
    EXPECT_EQ(c.splits, dec::kClusterSplit);
  }
  EXPECT_EQ(pick_clusters(1, 1, 8, 8193, 16).strategy, DecodeStrategy::lean);   // pieces > 1024 tokens
  EXPECT_EQ(pick_clusters(1, 16, 4, 8192, 16).splits, dec::kClusterSplit);      // every cluster resident
  EXPECT_EQ(pick_clusters(1, 17, 4, 8192, 16).strategy, DecodeStrategy::lean);   // a second wave of clusters
  EXPECT_EQ(pick_clusters(1, 12, 1, 1024, 16).splits, 0);                         // MHA: FlashDecoding's split
  EXPECT_EQ(pick_clusters(2, 4, 1, 4096, 16).strategy, DecodeStrategy::lean);    // may be ragged
  EXPECT_EQ(pick_clusters(1, 1, 8, 1000, 0).strategy, DecodeStrategy::lean);     // no clusters
  EXPECT_EQ(pick_clusters(1, 1, 8, 64, 16).strategy, DecodeStrategy::plain);     // one tile
  EXPECT_EQ(dec::clamp_length(-5, 100), 0);
  EXPECT_EQ(dec::clamp_length(500, 100), 100);
  EXPECT_EQ(dec::row_blocks(24, 16), 2);
}

// ---- GPU: accuracy ----------------------------------------------------------------------------

struct Case {
  std::vector<i64> lens;
  int Hq = 1, Hkv = 1, D = 64, bs = 16, Tq = 1;
  std::string name() const {
    std::string s = "L";
    for (i64 l : lens) s += std::to_string(l) + ",";
    return s + " H" + std::to_string(Hq) + "/" + std::to_string(Hkv) + " D" + std::to_string(D) + " bs" +
           std::to_string(bs) + " Tq" + std::to_string(Tq);
  }
};

float bf16_round(float x) { return bfloat16_to_float(float_to_bfloat16(x)); }

// Host inputs (f32, bf16-representable) and the dense K/V behind the paged cache. `copies` pools of
// blocks hold the same data; table(c) addresses pool c.
struct Paged {
  Tensor q, kc, vc, lengths;
  std::vector<Tensor> tables;
  std::vector<std::vector<float>> k, v;  // [b][(pos * Hkv + h) * D + d]
};

Paged make_paged(const Case& c, std::mt19937& rng, int copies = 1) {
  const int B = static_cast<int>(c.lens.size());
  std::uniform_real_distribution<float> kd(-1.0f, 1.0f), vd(-0.5f, 1.5f), qd(-2.0f, 2.0f);
  Paged p;
  i64 max_blocks = 1, used = 0;
  for (i64 l : c.lens) max_blocks = std::max(max_blocks, (l + c.bs - 1) / c.bs), used += (l + c.bs - 1) / c.bs;
  max_blocks += 1;  // a column of -1 past every sequence
  const i64 nblocks = copies * used + 2;
  std::vector<int> pool(static_cast<std::size_t>(nblocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  p.kc = Tensor::empty({nblocks, c.Hkv, c.bs, c.D}, DType::F32);
  p.vc = Tensor::empty({nblocks, c.Hkv, c.bs, c.D}, DType::F32);
  std::fill_n(p.kc.data_ptr<float>(), p.kc.numel(), kNaN);
  std::fill_n(p.vc.data_ptr<float>(), p.vc.numel(), kNaN);
  p.lengths = Tensor::empty({B}, DType::I32);
  p.k.resize(B), p.v.resize(B);
  for (int b = 0; b < B; ++b) {
    p.lengths.data_ptr<std::int32_t>()[b] = static_cast<std::int32_t>(c.lens[b]);
    p.k[b].resize(static_cast<std::size_t>(c.lens[b] * c.Hkv * c.D));
    p.v[b].resize(p.k[b].size());
    for (std::size_t i = 0; i < p.k[b].size(); ++i) p.k[b][i] = bf16_round(kd(rng)), p.v[b][i] = bf16_round(vd(rng));
  }
  std::size_t next = 0;
  for (int copy = 0; copy < copies; ++copy) {
    Tensor t = Tensor::empty({B, max_blocks}, DType::I32);
    std::int32_t* tp = t.data_ptr<std::int32_t>();
    std::fill_n(tp, t.numel(), -1);
    for (int b = 0; b < B; ++b) {
      for (i64 i = 0; i < (c.lens[b] + c.bs - 1) / c.bs; ++i) tp[b * max_blocks + i] = pool[next++];
      for (i64 pos = 0; pos < c.lens[b]; ++pos)
        for (int h = 0; h < c.Hkv; ++h) {
          const i64 ci = ((tp[b * max_blocks + pos / c.bs] * i64{c.Hkv} + h) * c.bs + pos % c.bs) * c.D;
          const std::size_t di = static_cast<std::size_t>((pos * c.Hkv + h) * c.D);
          std::copy_n(p.k[b].data() + di, c.D, p.kc.data_ptr<float>() + ci);
          std::copy_n(p.v[b].data() + di, c.D, p.vc.data_ptr<float>() + ci);
        }
    }
    p.tables.push_back(t);
  }
  p.q = Tensor::empty({B, c.Tq, static_cast<i64>(c.Hq) * c.D}, DType::F32);
  for (i64 i = 0; i < p.q.numel(); ++i) p.q.data_ptr<float>()[i] = bf16_round(qd(rng));
  return p;
}

// Float64 dense decode attention with the first lens[b] keys of each sequence.
ref::RefTensor reference(const Case& c, const Paged& p, const std::vector<i64>& lens) {
  const int B = static_cast<int>(lens.size()), g = c.Hq / c.Hkv, D = c.D;
  ref::RefTensor out(Shape{B, c.Tq, static_cast<i64>(c.Hq) * D});
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> s, o(static_cast<std::size_t>(D));
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < c.Tq; ++t)
      for (int hq = 0; hq < c.Hq; ++hq) {
        const i64 pos = lens[b] - c.Tq + t;
        const int h = hq / g;
        const float* q = p.q.data_ptr<float>() + (static_cast<i64>(b) * c.Tq + t) * c.Hq * D + static_cast<i64>(hq) * D;
        s.assign(static_cast<std::size_t>(pos + 1), 0.0);
        double mx = -1e300, l = 0;
        for (i64 j = 0; j <= pos; ++j) {
          const float* k = p.k[b].data() + (j * c.Hkv + h) * D;
          double acc = 0;
          for (int d = 0; d < D; ++d) acc += static_cast<double>(q[d]) * k[d];
          s[j] = acc * scale, mx = std::max(mx, s[j]);
        }
        std::fill(o.begin(), o.end(), 0.0);
        for (i64 j = 0; j <= pos; ++j) {
          const double e = std::exp(s[j] - mx);
          const float* v = p.v[b].data() + (j * c.Hkv + h) * D;
          l += e;
          for (int d = 0; d < D; ++d) o[d] += e * v[d];
        }
        for (int d = 0; d < D; ++d)
          out.data[static_cast<std::size_t>(((static_cast<i64>(b) * c.Tq + t) * c.Hq + hq) * D + d)] = o[d] / l;
      }
  return out;
}

// Device copies of one dtype.
struct Dev {
  Tensor q, kc, vc, lengths;
  std::vector<Tensor> tables;
};
Dev upload_all(const Paged& p, DType dt) {
  Dev d{upload(p.q.to(dt)), upload(p.kc.to(dt)), upload(p.vc.to(dt)), upload(p.lengths), {}};
  for (const Tensor& t : p.tables) d.tables.push_back(upload(t));
  return d;
}

struct RunCfg {
  DecodeStrategy strategy = DecodeStrategy::automatic;
  int splits = 0;
  dec::Path path = dec::Path::automatic;
  i64 tile = 0;
  int workers = 0;
  bool separate_combine = false;
  bool cluster_merge = true;
};
const char* strategy_name(DecodeStrategy s) {
  static const char* n[] = {"automatic", "plain", "split", "lean"};
  return n[static_cast<int>(s)];
}

Tensor run_gpu(const Case& c, const Dev& d, DType dt, const RunCfg& r, dec::LaunchInfo* info = nullptr, int table = 0) {
  Tensor y = poisoned(d.q.shape(), dt);
  const DecodeAttentionAttrs attrs{
      .num_heads = c.Hq, .num_kv_heads = c.Hkv, .strategy = r.strategy, .num_splits = r.splits};
  const dec::LaunchInfo li = dec::decode_attention_impl(d.q, d.kc, d.vc, d.tables[table], d.lengths, attrs, y,
                                                        context(),
                                                        dec::Options{.path = r.path,
                                                                     .tile_tokens = r.tile,
                                                                     .workers = r.workers,
                                                                     .separate_combine = r.separate_combine,
                                                                     .cluster_merge = r.cluster_merge});
  if (info != nullptr) *info = li;
  return y;
}

// Whether split's pieces can merge inside clusters here: sm_90 code on an sm_90 device, and room
// for every head's cluster in the tests' shapes (at most 6 clusters of at most 8 CTAs).
bool clusters_expected() {
  return runtime().sm() >= 90 && runtime().sm90_code() && runtime().multiprocessors() >= 64;
}

Tensor run_cpu(const Case& c, const Paged& p, DType dt) {
  Tensor y = Tensor::empty(p.q.shape(), DType::F32);
  const DecodeAttentionAttrs attrs{.num_heads = c.Hq, .num_kv_heads = c.Hkv};
  cpu::decode_attention(p.q.to(dt), p.kc.to(dt), p.vc.to(dt), p.tables[0], p.lengths, attrs, y, cpu::CpuContext{4});
  return y;
}

double rel_error(const Tensor& got_device, const ref::RefTensor& want) {
  return ref::relative_error(ref::from_tensor(download(got_device)), want);
}

// Runs every strategy (and both kernels where the tensor-core one applies) on one case.
void check_case(const Case& c, std::uint32_t seed, bool small_tiles) {
  std::mt19937 rng(seed);
  const Paged p = make_paged(c, rng);
  const ref::RefTensor want = reference(c, p, c.lens);
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    const Dev d = upload_all(p, dt);
    const Tensor cpu_y = run_cpu(c, p, dt);
    const double tol = tolerance(dt);
    const bool tc = dt != DType::F32 && (c.D == 64 || c.D == 128);
    for (dec::Path path : {dec::Path::generic, dec::Path::tensor_core}) {
      if (path == dec::Path::tensor_core && !tc) continue;
      const RunCfg runs[] = {{DecodeStrategy::lean},
                             {DecodeStrategy::plain},
                             {DecodeStrategy::split, 0},
                             {DecodeStrategy::split, 3},
                             {DecodeStrategy::automatic},
                             // Short tiles and few workers: heads cut over many workers, ranges over many heads.
                             {DecodeStrategy::lean, 0, path, small_tiles ? 16 : 0, 7},
                             {DecodeStrategy::lean, 0, path, small_tiles ? 32 : 0, 40},
                             {DecodeStrategy::split, 5, path, small_tiles ? 16 : 0},
                             {DecodeStrategy::split, 3, path, 0, 0, true}};  // merged by a second kernel
      for (RunCfg r : runs) {
        r.path = path;
        dec::LaunchInfo info;
        const Tensor y = run_gpu(c, d, dt, r, &info);
        SCOPED_TRACE(c.name() + " " + dtype_name(dt) + " " + strategy_name(r.strategy) + " splits " +
                     std::to_string(r.splits) + (path == dec::Path::generic ? " generic" : " tensor-core") + " tile " +
                     std::to_string(info.tile) + " ctas " + std::to_string(info.ctas));
        EXPECT_EQ(info.tensor_cores, path == dec::Path::tensor_core);
        EXPECT_LE(rel_error(y, want), tol) << "vs float64";
        EXPECT_TRUE(close_to(y, cpu_y, tol)) << "vs the CPU kernel";
      }
    }
  }
}

std::vector<Case> small_cases() {
  std::vector<Case> cases;
  std::mt19937 rng(5);
  const std::pair<int, int> heads[] = {{1, 1}, {4, 4}, {8, 8}, {4, 1}, {8, 4}, {8, 1}};
  int i = 0;
  for (auto [hq, hkv] : heads)
    for (int D : {8, 16, 64, 128})
      for (int Tq : {1, 3}) {
        Case c;
        c.Hq = hq, c.Hkv = hkv, c.D = D, c.Tq = Tq, c.bs = (i % 3 == 0) ? 64 : 16;
        const int B = 1 + i % 4;
        std::uniform_int_distribution<i64> ld(Tq, i % 2 ? 300 : 700);
        for (int b = 0; b < B; ++b) c.lens.push_back(ld(rng));
        if (i % 5 == 0) c.lens[0] = Tq;  // the shortest legal sequence
        cases.push_back(c);
        ++i;
      }
  cases.push_back(Case{{5, 1500, 33}, 16, 1, 128, 16, 3});  // 48 rows: three row blocks per kv head
  cases.push_back(Case{{700, 90}, 6, 2, 96, 32, 1});        // generic head dim
  // Blocks of 24 and 8 tokens: 16-key steps of the tensor-core loop straddle blocks, so they take the
  // per-key copies beside the one-lookup-per-step path of whole steps inside a block.
  cases.push_back(Case{{1000, 37, 250}, 8, 2, 128, 24, 1});
  cases.push_back(Case{{517, 64}, 4, 4, 64, 8, 3});
  return cases;
}

// Under MPS with an SM limit (or in a green context) lean's cooperative grid cannot launch: the
// call runs split instead, with the same results within tolerance.
TEST(CudaDecodeLean, RunsSplitWhenItsGridCannotLaunch) {
  ENCORE_REQUIRE_GPU();
  const Case c{{3000, 700}, 8, 2, 128, 64, 1};
  std::mt19937 rng(31);
  const Paged p = make_paged(c, rng);
  const ref::RefTensor want = reference(c, p, c.lens);
  const Dev d = upload_all(p, DType::BF16);
  Tensor y = poisoned(d.q.shape(), DType::BF16);
  const DecodeAttentionAttrs attrs{.num_heads = c.Hq, .num_kv_heads = c.Hkv, .strategy = DecodeStrategy::lean};
  dec::Options opts;
  opts.lean_grid_for_testing = 1 << 20;  // more CTAs than any GPU holds at once
  const dec::LaunchInfo info = dec::decode_attention_impl(d.q, d.kc, d.vc, d.tables[0], d.lengths, attrs, y, context(), opts);
  EXPECT_NE(info.strategy, DecodeStrategy::lean);
  EXPECT_LE(rel_error(y, want), tolerance(DType::BF16));
  // A test grid that could be co-resident is refused rather than run.
  opts.lean_grid_for_testing = 1;
  EXPECT_THROW(dec::decode_attention_impl(d.q, d.kc, d.vc, d.tables[0], d.lengths, attrs, y, context(), opts), Error);

  // Many sequences on the CUDA-core kernel: lean's shared-memory layout (prefix sums of 300
  // sequences ahead of the warp areas) must not leak into the split launch that replaces it.
  {
    Case many{{}, 4, 2, 32, 16, 1};
    std::uniform_int_distribution<i64> len(1, 200);
    for (int b = 0; b < 300; ++b) many.lens.push_back(len(rng));
    const Paged pm = make_paged(many, rng);
    const Dev dm = upload_all(pm, DType::F32);
    Tensor ym = poisoned(dm.q.shape(), DType::F32);
    dec::Options generic;
    generic.path = dec::Path::generic;
    generic.lean_grid_for_testing = 1 << 20;
    const DecodeAttentionAttrs lean{.num_heads = many.Hq, .num_kv_heads = many.Hkv, .strategy = DecodeStrategy::lean};
    const dec::LaunchInfo mi =
        dec::decode_attention_impl(dm.q, dm.kc, dm.vc, dm.tables[0], dm.lengths, lean, ym, context(), generic);
    EXPECT_NE(mi.strategy, DecodeStrategy::lean);
    EXPECT_LE(rel_error(ym, reference(many, pm, many.lens)), tolerance(DType::F32));
  }

  // Under stream capture a grid never launched is not tried (a refused launch would invalidate the
  // capture): the graph records split and replays it.
  cuda::CudaRuntime& rt = runtime();
  const cudaStream_t stream = rt.stream();
  opts.lean_grid_for_testing = 3 << 18;  // a size no call has tried yet
  Tensor yg = poisoned(d.q.shape(), DType::BF16);
  rt.synchronize();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  dec::LaunchInfo captured;
  EXPECT_NO_THROW(captured = dec::decode_attention_impl(d.q, d.kc, d.vc, d.tables[0], d.lengths, attrs, yg, context(), opts));
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_NE(captured.strategy, DecodeStrategy::lean);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  EXPECT_LE(rel_error(yg, want), tolerance(DType::BF16));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

class CudaDecodeAccuracy : public ::testing::TestWithParam<Case> {};

TEST_P(CudaDecodeAccuracy, AllStrategiesMatchCpuAndFloat64) {
  ENCORE_REQUIRE_GPU();
  check_case(GetParam(), 17, true);
}

INSTANTIATE_TEST_SUITE_P(Small, CudaDecodeAccuracy, ::testing::ValuesIn(small_cases()));

TEST(CudaDecodeAttention, LongContexts) {
  ENCORE_REQUIRE_GPU();
  // 300k keys of one kv head (the stream-K showcase: 8/1 heads at batch 1) and a ragged GQA batch.
  const Case cases[] = {Case{{300000}, 8, 1, 128, 64, 1}, Case{{100000, 77, 4099}, 8, 4, 64, 16, 3}};
  for (const Case& c : cases) {
    std::mt19937 rng(23);
    const Paged p = make_paged(c, rng);
    const ref::RefTensor want = reference(c, p, c.lens);
    for (DType dt : {DType::BF16, DType::F32}) {
      const Dev d = upload_all(p, dt);
      const Tensor cpu_y = run_cpu(c, p, dt);
      for (const RunCfg& r :
           {RunCfg{DecodeStrategy::lean}, RunCfg{DecodeStrategy::split}, RunCfg{DecodeStrategy::plain}}) {
        SCOPED_TRACE(c.name() + " " + dtype_name(dt) + " " + strategy_name(r.strategy));
        const Tensor y = run_gpu(c, d, dt, r);
        EXPECT_LE(rel_error(y, want), tolerance(dt)) << "vs float64";
        EXPECT_TRUE(close_to(y, cpu_y, tolerance(dt))) << "vs the CPU kernel";
      }
    }
  }
}

TEST(CudaDecodeAttention, BitwiseDeterministic) {
  ENCORE_REQUIRE_GPU();
  const Case c{{9000, 17, 4000, 1200}, 8, 2, 128, 16, 1};
  std::mt19937 rng(29);
  const Paged p = make_paged(c, rng);
  const Dev d = upload_all(p, DType::BF16);
  for (const RunCfg& r : {RunCfg{DecodeStrategy::lean}, RunCfg{DecodeStrategy::lean, 0, dec::Path::automatic, 16, 100},
                          RunCfg{DecodeStrategy::split, 7}, RunCfg{DecodeStrategy::lean, 0, dec::Path::generic, 16}}) {
    const Tensor first = download(run_gpu(c, d, DType::BF16, r));
    for (int i = 0; i < 10; ++i) {
      const Tensor again = download(run_gpu(c, d, DType::BF16, r));
      ASSERT_EQ(std::memcmp(first.data(), again.data(), first.nbytes()), 0)
          << strategy_name(r.strategy) << " run " << i << " differs";
    }
  }
}

// A NaN score makes its rows NaN in every strategy and kernel, as on the CPU and in torch; rows that
// do not see it stay finite.
TEST(CudaDecodeAttention, NaNScoresMakeTheirRowsNaN) {
  ENCORE_REQUIRE_GPU();
  const Case c{{3000, 40}, 4, 2, 64, 16, 1};  // kv head 0 serves query heads 0-1, kv head 1 heads 2-3
  std::mt19937 rng(31);
  Paged p = make_paged(c, rng);
  const i64 blk = p.tables[0].at<std::int32_t>({0, 1000 / c.bs});
  p.kc.at<float>({blk, 1, 1000 % c.bs, 5}) = std::numeric_limits<float>::quiet_NaN();  // seq 0, pos 1000, kv head 1
  p.q.at<float>({1, 0, 3}) = std::numeric_limits<float>::quiet_NaN();                  // seq 1, query head 0
  for (DType dt : {DType::F32, DType::BF16}) {
    const Dev d = upload_all(p, dt);
    for (DecodeStrategy st : {DecodeStrategy::plain, DecodeStrategy::split, DecodeStrategy::lean})
      for (dec::Path path : {dec::Path::automatic, dec::Path::generic}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + strategy_name(st) +
                     (path == dec::Path::generic ? " generic" : ""));
        Tensor sentinel = Tensor::empty(d.q.shape(), DType::F32);
        sentinel.fill(1000.0);  // exact in f16/bf16; an unwritten row is neither NaN nor a plausible output
        Tensor out = upload(sentinel.to(dt));
        const DecodeAttentionAttrs attrs{.num_heads = c.Hq, .num_kv_heads = c.Hkv, .strategy = st,
                                         .num_splits = st == DecodeStrategy::split ? 8 : 0};
        dec::decode_attention_impl(d.q, d.kc, d.vc, d.tables[0], d.lengths, attrs, out, context(),
                                   dec::Options{.path = path, .tile_tokens = 64});
        const Tensor y = download(out).to(DType::F32);
        for (int b = 0; b < 2; ++b)
          for (int h = 0; h < 4; ++h) {
            const bool nan_row = (b == 0 && h >= 2) || (b == 1 && h == 0);
            const float x = y.at<float>({b, 0, h * c.D + 1});
            if (nan_row) ASSERT_TRUE(std::isnan(x)) << "b " << b << " h " << h;
            else ASSERT_TRUE(std::isfinite(x) && x != 1000.0f) << "b " << b << " h " << h << " " << x;
          }
      }
  }
}

// The pieces of a split head are merged inside their thread-block cluster (sm_90, up to 8 pieces),
// by the piece that finishes last, or by a second kernel when asked or when the merge scratch of all
// pieces would not fit the split kernel's shared memory. Both segment kernels (CUDA cores, tensor
// cores), with lengths that leave some heads fewer pieces than CTAs (idle CTAs in a cluster).
TEST(CudaDecodeAttention, SplitMergesInItsClusterLastPieceOrACombineKernel) {
  ENCORE_REQUIRE_GPU();
  const bool clusters = clusters_expected();
  struct Shape {
    Case c, other;  // other: a second shape whose heads reuse the counters and workspace
    DType dt;
    dec::Path path;
    bool many_pieces_combine;  // 150 pieces' merge scratch does not fit the warp areas
  };
  // D 8: the CUDA-core kernel, whose warp areas are small; D 64: the tensor-core kernel.
  const Shape shapes[] = {
      {Case{{4000, 333}, 4, 2, 8, 16, 1}, Case{{900, 2500, 77}, 8, 8, 8, 16, 1}, DType::F32, dec::Path::generic,
       true},
      {Case{{3000, 200, 1}, 8, 2, 64, 16, 1}, Case{{700, 2100}, 8, 8, 64, 16, 1}, DType::BF16,
       dec::Path::tensor_core, false}};
  for (const Shape& sh : shapes) {
    const Case& c = sh.c;
    SCOPED_TRACE("D " + std::to_string(c.D));
    std::mt19937 rng(41);
    const Paged p1 = make_paged(c, rng), p2 = make_paged(c, rng), po = make_paged(sh.other, rng);
    const ref::RefTensor want1 = reference(c, p1, c.lens), want2 = reference(c, p2, c.lens),
                         want_other = reference(sh.other, po, sh.other.lens);
    const Dev d1 = upload_all(p1, sh.dt), d2 = upload_all(p2, sh.dt), dother = upload_all(po, sh.dt);
    struct Run {
      int splits;
      i64 tile;
      bool separate, cluster, combine_kernel, cluster_merge;
    };
    for (const Run& r : {Run{7, 0, false, true, false, clusters}, Run{7, 0, false, false, false, false},
                         Run{7, 0, true, true, true, false},
                         Run{150, 16, false, true, sh.many_pieces_combine, false}}) {
      SCOPED_TRACE("splits " + std::to_string(r.splits) + (r.separate ? " separate" : "") +
                   (r.cluster ? "" : " no cluster"));
      RunCfg cfg{DecodeStrategy::split, r.splits, sh.path, r.tile, 0, r.separate};
      cfg.cluster_merge = r.cluster;
      dec::LaunchInfo info;
      const Tensor first = download(run_gpu(c, d1, sh.dt, cfg, &info));
      EXPECT_EQ(info.strategy, DecodeStrategy::split);
      EXPECT_EQ(info.splits, r.splits);
      EXPECT_EQ(info.combine_kernel, r.combine_kernel);
      EXPECT_EQ(info.cluster_merge, r.cluster_merge);
      EXPECT_LE(ref::relative_error(ref::from_tensor(first), want1), tolerance(sh.dt));
      // Other inputs next, then two shapes back to back without a host synchronisation: a merge
      // from stale partials, or counters not back at 0, would show in one of them.
      EXPECT_LE(rel_error(run_gpu(c, d2, sh.dt, cfg), want2), tolerance(sh.dt));
      const Tensor y_other = run_gpu(sh.other, dother, sh.dt, cfg);
      const Tensor again = download(run_gpu(c, d1, sh.dt, cfg));
      EXPECT_LE(rel_error(y_other, want_other), tolerance(sh.dt));
      EXPECT_EQ(std::memcmp(first.data(), again.data(), first.nbytes()), 0);  // deterministic
    }
  }
}

// automatic on one GQA sequence of a short cache: 8 pieces merged inside their cluster on sm_90,
// and the same result as the other strategies.
TEST(CudaDecodeAttention, AutomaticSplitsShortGqaCachesInClusters) {
  ENCORE_REQUIRE_GPU();
  const bool clusters = clusters_expected();
  const Case c{{1000}, 8, 1, 128, 16, 1};
  std::mt19937 rng(57);
  const Paged p = make_paged(c, rng);
  const ref::RefTensor want = reference(c, p, c.lens);
  const Dev d = upload_all(p, DType::BF16);
  dec::LaunchInfo info;
  const Tensor y = run_gpu(c, d, DType::BF16, RunCfg{DecodeStrategy::automatic}, &info);
  EXPECT_LE(rel_error(y, want), tolerance(DType::BF16));
  if (clusters) {
    EXPECT_EQ(info.strategy, DecodeStrategy::split);
    EXPECT_EQ(info.splits, dec::kClusterSplit);
    EXPECT_TRUE(info.cluster_merge);
    EXPECT_EQ(info.workspace_bytes, 0u);
  } else {
    EXPECT_FALSE(info.cluster_merge);
  }
  RunCfg no_cluster{DecodeStrategy::automatic};
  no_cluster.cluster_merge = false;  // then the rule does not apply: lean, as before
  EXPECT_LE(rel_error(run_gpu(c, d, DType::BF16, no_cluster, &info), want), tolerance(DType::BF16));
  EXPECT_FALSE(info.cluster_merge);
  EXPECT_EQ(info.strategy, DecodeStrategy::lean);
}

TEST(CudaDecodeAttention, StridedQueryAndHalfOutputs) {
  ENCORE_REQUIRE_GPU();
  const Case c{{333, 1000}, 8, 2, 64, 16, 2};
  std::mt19937 rng(31);
  const Paged p = make_paged(c, rng);
  const ref::RefTensor want = reference(c, p, c.lens);
  // q as a strided view: [B, Tq, Hq*D] slice of a wider buffer.
  const Tensor wide_host = Tensor::zeros({2, 2, 8 * 64 + 24}, DType::BF16);
  wide_host.slice(2, 8, 8 + 8 * 64).copy_from(p.q.to(DType::BF16));
  const Tensor wide = upload(wide_host);
  Dev d = upload_all(p, DType::BF16);
  d.q = wide.slice(2, 8, 8 + 8 * 64);
  for (DecodeStrategy s : {DecodeStrategy::lean, DecodeStrategy::split}) {
    const Tensor y = run_gpu(c, d, DType::BF16, RunCfg{s});
    EXPECT_LE(rel_error(y, want), 1e-2) << strategy_name(s);
  }
}

// ---- GPU: CUDA-graph capture and replay ----------------------------------------------------------

TEST(CudaDecodeAttention, GraphReplayOverGrowingLengths) {
  ENCORE_REQUIRE_GPU();
  // Final lengths; earlier steps use prefixes. Two block pools with the same data: the table is
  // swapped every step, so a replay that kept stale tables or lengths would read NaN or stale keys.
  const Case c{{3000, 700, 1200}, 8, 2, 128, 16, 1};
  std::mt19937 rng(37);
  const Paged p = make_paged(c, rng, 2);
  const std::vector<std::vector<i64>> steps = {
      {1, 1, 1}, {17, 2, 300}, {400, 129, 301}, {1500, 600, 1200}, {3000, 700, 1200}};
  cuda::CudaRuntime& rt = runtime();
  const cudaStream_t stream = rt.stream();
  for (DType dt : {DType::BF16, DType::F32})
    for (const RunCfg& r : {RunCfg{DecodeStrategy::lean}, RunCfg{DecodeStrategy::split, 4},
                            RunCfg{DecodeStrategy::plain}, RunCfg{DecodeStrategy::automatic}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + strategy_name(r.strategy));
      Dev d = upload_all(p, dt);
      Tensor table = upload(p.tables[0]);  // the graph's table: rewritten in place each step
      Tensor y = poisoned(d.q.shape(), dt);
      const DecodeAttentionAttrs attrs{
          .num_heads = c.Hq, .num_kv_heads = c.Hkv, .strategy = r.strategy, .num_splits = r.splits};
      std::vector<std::int32_t> host_len(steps[0].begin(), steps[0].end());
      ASSERT_EQ(cudaMemcpy(d.lengths.data(), host_len.data(), 4 * host_len.size(), cudaMemcpyHostToDevice),
                cudaSuccess);
      run_gpu(c, Dev{d.q, d.kc, d.vc, d.lengths, {table}}, dt, r);  // warm-up outside the capture
      rt.synchronize();
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
      cuda::decode_attention(d.q, d.kc, d.vc, table, d.lengths, attrs, y, context());
      ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
      ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
      for (std::size_t st = 0; st < steps.size(); ++st) {
        for (std::size_t b = 0; b < host_len.size(); ++b) host_len[b] = static_cast<std::int32_t>(steps[st][b]);
        const Tensor& src = d.tables[st % 2];
        ASSERT_EQ(
            cudaMemcpyAsync(d.lengths.data(), host_len.data(), 4 * host_len.size(), cudaMemcpyHostToDevice, stream),
            cudaSuccess);
        ASSERT_EQ(cudaMemcpyAsync(table.data(), src.data(), src.nbytes(), cudaMemcpyDeviceToDevice, stream),
                  cudaSuccess);
        rt.memset(y.data(), 0xFF, y.nbytes());
        for (int rep = 0; rep < 2; ++rep) ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
        const Tensor replayed = download(y);
        const Tensor fresh = download(run_gpu(c, d, dt, r, nullptr, static_cast<int>(st % 2)));
        ASSERT_EQ(std::memcmp(replayed.data(), fresh.data(), fresh.nbytes()), 0) << "step " << st;
        EXPECT_LE(ref::relative_error(ref::from_tensor(replayed), reference(c, p, steps[st])), tolerance(dt))
            << "step " << st;
      }
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    }
}

// ---- validation ----------------------------------------------------------------------------------

TEST(CudaDecodeAttention, RejectsBadShapes) {
  ENCORE_REQUIRE_GPU();
  const Case c{{10}, 4, 2, 64, 16, 1};
  std::mt19937 rng(41);
  const Paged p = make_paged(c, rng);
  const Dev d = upload_all(p, DType::F16);
  const Tensor y = poisoned(d.q.shape(), DType::F16);
  const DecodeAttentionAttrs ok{.num_heads = 4, .num_kv_heads = 2};
  EXPECT_THROW(cuda::decode_attention(d.q, d.kc, d.vc, d.tables[0], d.lengths, {.num_heads = 4, .num_kv_heads = 3}, y,
                                      context()),
               Error);
  EXPECT_THROW(cuda::decode_attention(d.q, d.kc, d.vc, upload(p.tables[0].to(DType::I64)), d.lengths, ok, y, context()),
               Error);
  EXPECT_THROW(
      cuda::decode_attention(d.q, d.kc, d.vc, d.tables[0], d.lengths, ok, poisoned({1, 1, 8}, DType::F16), context()),
      Error);
  EXPECT_THROW(cuda::decode_attention(p.q, d.kc, d.vc, d.tables[0], d.lengths, ok, y, context()), Error);  // host q
  EXPECT_THROW(dec::decode_attention_impl(d.q, upload(p.kc), upload(p.vc), d.tables[0], d.lengths, ok, y, context(),
                                          dec::Options{dec::Path::tensor_core}),
               Error);
}

}  // namespace
