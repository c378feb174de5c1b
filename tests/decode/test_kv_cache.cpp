// KvCache: sizes, validation, appends across blocks, beam reorders with shared blocks and
// copy-on-write, ragged lengths, clear, 16-bit storage, and decode attention read through it.
//
// Every test keeps a naive history per sequence (the K/V rows it should hold, in order) and
// reads the cache back through block_table() / lengths() to compare.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "encore/decode/kv_cache.h"

using namespace encore;
using i64 = std::int64_t;

namespace {

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

KvCacheConfig small_config() {
  KvCacheConfig c;
  c.num_layers = 2, c.batch = 3, c.num_kv_heads = 2, c.head_dim = 4, c.max_length = 40, c.block_size = 8;
  return c;
}

// History row of one token: [layer][k or v][h * D + d].
using Token = std::vector<std::vector<std::vector<float>>>;
using History = std::vector<std::vector<Token>>;  // [b][pos]

// Random token rows for every sequence and layer; values exact in bf16 and f16.
Token random_token(const KvCacheConfig& c, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-64, 64);
  Token t(c.num_layers, std::vector<std::vector<float>>(2, std::vector<float>(c.num_kv_heads * c.head_dim)));
  for (auto& l : t)
    for (auto& kv : l)
      for (float& x : kv) x = static_cast<float>(d(rng)) / 32.0f;
  return t;
}

// Appends n tokens to every sequence: reserve (unless `reserve` is false: room reserved earlier),
// write each layer (f32 inputs, strided view), advance.
void append(KvCache& cache, History& hist, i64 n, std::mt19937& rng, bool strided = false, bool reserve = true) {
  const KvCacheConfig& c = cache.config();
  const i64 W = static_cast<i64>(c.num_kv_heads) * c.head_dim;
  std::vector<std::vector<Token>> toks(c.batch);
  for (int b = 0; b < c.batch; ++b)
    for (i64 t = 0; t < n; ++t) toks[b].push_back(random_token(c, rng));
  if (reserve) cache.reserve(n);
  for (int l = 0; l < c.num_layers; ++l) {
    Tensor k, v;
    if (strided) {  // [B, n, W] as a slice of a wider, transposed buffer
      Tensor kb = Tensor::empty({n, c.batch, W + 3}, DType::F32), vb = Tensor::empty({n, c.batch, W + 3}, DType::F32);
      k = kb.slice(2, 1, 1 + W).transpose(0, 1), v = vb.slice(2, 2, 2 + W).transpose(0, 1);
    } else {
      k = Tensor::empty({c.batch, n, W}, DType::F32), v = Tensor::empty({c.batch, n, W}, DType::F32);
    }
    for (int b = 0; b < c.batch; ++b)
      for (i64 t = 0; t < n; ++t)
        for (i64 i = 0; i < W; ++i) k.at<float>({b, t, i}) = toks[b][t][l][0][i], v.at<float>({b, t, i}) = toks[b][t][l][1][i];
    cache.write(l, k, v);
  }
  cache.advance(n);
  for (int b = 0; b < c.batch; ++b)
    for (auto& t : toks[b]) hist[b].push_back(t);
}

// Reads every stored token back through the tables and compares with the history.
void expect_matches(const KvCache& cache, const History& hist) {
  const KvCacheConfig& c = cache.config();
  const Tensor& table = cache.block_table();
  for (int b = 0; b < c.batch; ++b) {
    ASSERT_EQ(cache.length(b), static_cast<i64>(hist[b].size())) << "sequence " << b;
    ASSERT_EQ(cache.lengths().at<std::int32_t>({b}), static_cast<std::int32_t>(hist[b].size()));
    for (i64 pos = 0; pos < cache.length(b); ++pos) {
      const i64 blk = table.at<std::int32_t>({b, pos / c.block_size}), off = pos % c.block_size;
      ASSERT_GE(blk, 0);
      ASSERT_LT(blk, cache.num_blocks());
      for (int l = 0; l < c.num_layers; ++l)
        for (int h = 0; h < c.num_kv_heads; ++h)
          for (int d = 0; d < c.head_dim; ++d) {
            const i64 i = static_cast<i64>(h) * c.head_dim + d;
            ASSERT_EQ(cache.keys(l).select(0, blk).get((h * c.block_size + off) * c.head_dim + d), hist[b][pos][l][0][i])
                << "b " << b << " pos " << pos << " layer " << l;
            ASSERT_EQ(cache.values(l).select(0, blk).get((h * c.block_size + off) * c.head_dim + d), hist[b][pos][l][1][i]);
          }
    }
  }
}

// Distinct blocks referenced by the tables (within each sequence's length).
std::set<int> blocks_in_use(const KvCache& cache) {
  std::set<int> s;
  const KvCacheConfig& c = cache.config();
  for (int b = 0; b < c.batch; ++b)
    for (i64 i = 0; i < (cache.length(b) + c.block_size - 1) / c.block_size; ++i)
      s.insert(cache.block_table().at<std::int32_t>({b, i}));
  return s;
}

TEST(KvCache, BytesFormula) {
  KvCacheConfig c = small_config();
  c.dtype = DType::BF16;
  c.spare_blocks = -1;  // one per sequence (the default is none)
  const i64 max_blocks = 5, num_blocks = 3 * max_blocks + 3;
  const std::size_t kv = 2ull * 2 * num_blocks * 2 * 8 * 4 * 2, tables = 3 * max_blocks * 4 + 3 * 4;
  // host: the table's mirror and 16 bytes per sequence, 9 per block (count, free list, flag)
  const std::size_t host = 3 * max_blocks * 4 + 3 * 16 + num_blocks * 9;
  EXPECT_EQ(kv_cache_bytes(c), kv + tables + host);
  KvCache cache(c);
  EXPECT_EQ(cache.num_blocks(), num_blocks);
  EXPECT_EQ(cache.keys(1).shape(), (Shape{num_blocks, 2, 8, 4}));
  EXPECT_EQ(cache.keys(0).dtype(), DType::BF16);
  EXPECT_EQ(cache.block_table().shape(), (Shape{3, max_blocks}));
  EXPECT_EQ(cache.lengths().shape(), (Shape{3}));
  std::size_t total = cache.block_table().nbytes() + cache.lengths().nbytes();
  for (int l = 0; l < 2; ++l) total += cache.keys(l).nbytes() + cache.values(l).nbytes();
  EXPECT_EQ(total + host, kv_cache_bytes(c));
  c.spare_blocks = 0, c.max_length = 41;  // 6 blocks per sequence now
  EXPECT_EQ(KvCache(c).num_blocks(), 18);
  EXPECT_EQ(KvCacheConfig{}.spare_blocks, 0);
  for (int b = 0; b < 3; ++b) EXPECT_EQ(cache.block_table().at<std::int32_t>({b, 0}), -1);
}

TEST(KvCache, ValidatesEveryField) {
  struct Bad {
    void (*edit)(KvCacheConfig&);
    std::string text;
  };
  const Bad bad[] = {
      {[](KvCacheConfig& c) { c.num_layers = 0; }, "num_layers = 0"},
      {[](KvCacheConfig& c) { c.batch = -2; }, "batch = -2"},
      {[](KvCacheConfig& c) { c.num_kv_heads = 0; }, "num_kv_heads = 0"},
      {[](KvCacheConfig& c) { c.head_dim = 0; }, "head_dim = 0"},
      {[](KvCacheConfig& c) { c.max_length = 0; }, "max_length = 0"},
      {[](KvCacheConfig& c) { c.max_length = i64{1} << 40; }, "max_length = 1099511627776"},
      {[](KvCacheConfig& c) { c.block_size = 0; }, "block_size = 0"},
      {[](KvCacheConfig& c) { c.block_size = 1025; }, "block_size = 1025"},
      {[](KvCacheConfig& c) { c.spare_blocks = -2; }, "spare_blocks = -2"},
      {[](KvCacheConfig& c) { c.dtype = DType::I32; }, "dtype = i32"},
      {[](KvCacheConfig& c) { c.dtype = DType::I8; }, "dtype = i8"},
      {[](KvCacheConfig& c) { c.batch = 1 << 20, c.max_length = 1 << 30, c.block_size = 1; }, "i32 block table"},
      {[](KvCacheConfig& c) { c.head_dim = 1 << 30, c.num_kv_heads = 1 << 30, c.num_layers = 1 << 20; },
       "too large"},
  };
  for (const Bad& b : bad) {
    KvCacheConfig c = small_config();
    b.edit(c);
    expect_error([&] { kv_cache_bytes(c); }, ErrorCode::invalid_argument, b.text);
    expect_error([&] { KvCache cache(c); }, ErrorCode::invalid_argument, b.text);
  }
}

TEST(KvCache, AppendsAcrossBlockBoundaries) {
  KvCache cache(small_config());
  History hist(3);
  std::mt19937 rng(1);
  for (i64 n : {1, 5, 2, 9, 0, 8, 1, 14}) {
    append(cache, hist, n, rng, n % 2 == 1);
    expect_matches(cache, hist);
  }
  EXPECT_EQ(cache.length(0), 40);
  // Full: another token would pass max_length (40); the error names the sequence.
  expect_error([&] { cache.reserve(1); }, ErrorCode::invalid_argument, "sequence 0 holds 40 tokens");
  // Every sequence owns distinct blocks.
  EXPECT_EQ(blocks_in_use(cache).size(), 15u);
}

TEST(KvCache, BeamReorderSharesBlocksAndCopiesOnWrite) {
  for (int spare : {-1, 0}) {
    KvCacheConfig c = small_config();
    c.batch = 4, c.max_length = 70, c.block_size = 4, c.spare_blocks = spare;
    KvCache cache(c);
    History hist(4);
    std::mt19937 rng(spare + 10);
    append(cache, hist, 6, rng);  // prompt: a partly filled second block
    std::uniform_int_distribution<int> pick(0, 3);
    for (int step = 0; step < 64; ++step) {
      std::vector<int> parent(4);
      for (int& p : parent) p = pick(rng);
      if (step % 9 == 0) parent = {2, 2, 2, 2};  // every beam from one parent
      cache.reorder(parent);
      History next(4);
      for (int b = 0; b < 4; ++b) next[b] = hist[parent[b]];
      hist = next;
      expect_matches(cache, hist);  // shared, not copied: still reads the parent's history
      // Blocks are shared after a reorder: no more in use than the distinct parents need.
      const std::set<int> parents(parent.begin(), parent.end());
      EXPECT_LE(blocks_in_use(cache).size(), parents.size() * ((cache.length(0) + 3) / 4));
      append(cache, hist, 1, rng);  // copy-on-write of the shared partial last block
      expect_matches(cache, hist);
      EXPECT_LE(static_cast<i64>(blocks_in_use(cache).size()), cache.num_blocks());
    }
    EXPECT_EQ(cache.length(3), 70);
  }
}

static_assert(!std::is_copy_constructible_v<KvCache> && !std::is_copy_assignable_v<KvCache>,
              "a copy would share the blocks behind a second free list");
static_assert(std::is_nothrow_move_constructible_v<KvCache>);

// Two sequences of 3 tokens in blocks of 4: one partial block each, one free slot in it.
struct PartialBlocks {
  KvCache cache;
  History hist;
  std::mt19937 rng;
};
PartialBlocks partial_blocks(unsigned seed) {
  KvCacheConfig c = small_config();
  c.batch = 2, c.block_size = 4;
  PartialBlocks p{KvCache(c), History(2), std::mt19937(seed)};
  append(p.cache, p.hist, 3, p.rng);
  return p;
}

TEST(KvCache, ReserveCopiesASharedPartialBlockAfterAReorder) {
  auto [cache, hist, rng] = partial_blocks(3);
  cache.reorder(std::vector<int>{0, 0});
  hist[1] = hist[0];
  cache.reserve(1);
  const std::int32_t b0 = cache.block_table().at<std::int32_t>({0, 0}), b1 = cache.block_table().at<std::int32_t>({1, 0});
  EXPECT_NE(b0, b1);  // reserve copied the shared partial block for one of them
  append(cache, hist, 1, rng);
  expect_matches(cache, hist);
}

// Reserving room for no token copies nothing: the shared partial block stays shared until a write.
TEST(KvCache, ReserveOfNothingKeepsASharedPartialBlockShared) {
  auto [cache, hist, rng] = partial_blocks(3);
  cache.reorder(std::vector<int>{0, 0});
  hist[1] = hist[0];
  cache.reserve(0);
  EXPECT_EQ(cache.block_table().at<std::int32_t>({0, 0}), cache.block_table().at<std::int32_t>({1, 0}));
  append(cache, hist, 1, rng);
  expect_matches(cache, hist);
}

// Reserved room inside a partial block survives a reorder; the write into it, now shared by two
// sequences, copies the block first.
TEST(KvCache, WriteCopiesASharedPartialBlockWhenReorderedAfterReserve) {
  auto [cache, hist, rng] = partial_blocks(8);
  cache.reserve(1);             // fits the partial block: nothing allocated, nothing shared yet
  cache.reorder(std::vector<int>{0, 0});
  hist[1] = hist[0];
  const std::int32_t shared = cache.block_table().at<std::int32_t>({0, 0});
  EXPECT_EQ(cache.block_table().at<std::int32_t>({1, 0}), shared);
  append(cache, hist, 1, rng, false, /*reserve=*/false);  // write + advance into the reserved slot
  EXPECT_NE(cache.block_table().at<std::int32_t>({0, 0}), cache.block_table().at<std::int32_t>({1, 0}));
  expect_matches(cache, hist);
}

TEST(KvCache, SetLengthsForARaggedBatch) {
  KvCache cache(small_config());
  History hist(3);
  std::mt19937 rng(4);
  append(cache, hist, 12, rng);  // a padded prompt of 12
  const std::vector<i64> lens = {3, 12, 8};
  cache.set_lengths(lens);
  for (int b = 0; b < 3; ++b) hist[b].resize(static_cast<std::size_t>(lens[b]));
  expect_matches(cache, hist);
  EXPECT_EQ(cache.block_table().at<std::int32_t>({0, 1}), -1);  // released past the length
  EXPECT_NE(cache.block_table().at<std::int32_t>({1, 1}), -1);
  EXPECT_EQ(cache.block_table().at<std::int32_t>({2, 1}), -1);
  for (int step = 0; step < 10; ++step) append(cache, hist, 1 + step % 3, rng);
  expect_matches(cache, hist);
  expect_error([&] { cache.set_lengths(std::vector<i64>{1, 2}); }, ErrorCode::invalid_argument, "2 lengths given");
  expect_error([&] { cache.set_lengths(std::vector<i64>{1, 100, 2}); }, ErrorCode::invalid_argument, "lengths[1] = 100");
  cache.reserve(5);  // room for 5 more: set_lengths may use it
  cache.set_lengths(std::vector<i64>{cache.length(0) + 5, 0, 1});
  EXPECT_EQ(cache.length(0), 3 + 19 + 5);
  EXPECT_EQ(cache.block_table().at<std::int32_t>({1, 0}), -1);
}

TEST(KvCache, ClearForgetsEverything) {
  KvCache cache(small_config());
  History hist(3);
  std::mt19937 rng(5);
  append(cache, hist, 17, rng);
  cache.reorder(std::vector<int>{1, 1, 0});
  cache.clear();
  for (int b = 0; b < 3; ++b) {
    EXPECT_EQ(cache.length(b), 0);
    EXPECT_EQ(cache.lengths().at<std::int32_t>({b}), 0);
    for (i64 i = 0; i < cache.block_table().dim(1); ++i) EXPECT_EQ(cache.block_table().at<std::int32_t>({b, i}), -1);
  }
  History fresh(3);
  append(cache, fresh, 40, rng);  // the whole capacity is available again
  expect_matches(cache, fresh);
}

TEST(KvCache, OutOfRangeErrors) {
  KvCache cache(small_config());
  const Tensor kv = Tensor::zeros({3, 1, 8}, DType::F32);
  expect_error([&] { cache.keys(2); }, ErrorCode::invalid_argument, "layer 2");
  expect_error([&] { cache.values(-1); }, ErrorCode::invalid_argument, "layer -1");
  expect_error([&] { cache.length(3); }, ErrorCode::invalid_argument, "sequence 3");
  expect_error([&] { cache.reserve(-1); }, ErrorCode::invalid_argument, "n = -1");
  expect_error([&] { cache.reserve(41); }, ErrorCode::invalid_argument, "exceed max_length 40");
  expect_error([&] { cache.write(0, kv, kv); }, ErrorCode::invalid_argument, "call reserve(1) first");
  expect_error([&] { cache.advance(1); }, ErrorCode::invalid_argument, "advance(1)");
  cache.reserve(1);
  expect_error([&] { cache.write(2, kv, kv); }, ErrorCode::invalid_argument, "layer 2");
  expect_error([&] { cache.write(0, Tensor::zeros({2, 1, 8}, DType::F32), kv); }, ErrorCode::invalid_argument,
               "[3 (batch), n, 8 (Hkv*D)]");
  expect_error([&] { cache.write(0, kv, Tensor::zeros({3, 1, 7}, DType::F32)); }, ErrorCode::invalid_argument, "v [3, 1, 7]");
  expect_error([&] { cache.write(0, kv.to(DType::BF16), kv); }, ErrorCode::invalid_argument, "input dtype bf16");
  expect_error([&] { cache.write(0, Tensor(), kv); }, ErrorCode::invalid_argument, "must be defined");
  expect_error([&] { cache.reorder(std::vector<int>{0, 1}); }, ErrorCode::invalid_argument, "2 parents");
  expect_error([&] { cache.reorder(std::vector<int>{0, 3, 1}); }, ErrorCode::invalid_argument, "parent[1] = 3");
  expect_error([&] { cache.advance(-1); }, ErrorCode::invalid_argument, "n = -1");
  // The last block may reach past max_length; lengths may not.
  KvCacheConfig c = small_config();
  c.max_length = 37;  // 5 blocks of 8 = 40 slots
  KvCache odd(c);
  odd.reserve(37);
  expect_error([&] { odd.advance(38); }, ErrorCode::invalid_argument, "room for 37");
  expect_error([&] { odd.set_lengths(std::vector<i64>{38, 0, 0}); }, ErrorCode::invalid_argument, "[0, 37]");
  expect_error([&] { odd.write(0, Tensor::zeros({3, 38, 8}, DType::F32), Tensor::zeros({3, 38, 8}, DType::F32)); },
               ErrorCode::invalid_argument, "room for 37 more tokens");
  odd.advance(37);
  cache.write(0, kv, kv);  // still usable after the errors
  cache.write(1, kv, kv);
  cache.advance(1);
  EXPECT_EQ(cache.length(2), 1);
  // Counts near 2^63 must not wrap past the checks (length + n would overflow).
  constexpr i64 kHuge = std::numeric_limits<i64>::max();
  expect_error([&] { cache.reserve(kHuge); }, ErrorCode::invalid_argument, "exceed max_length 40");
  expect_error([&] { cache.advance(kHuge); }, ErrorCode::invalid_argument, "advance(");
  EXPECT_EQ(cache.length(2), 1);
}

TEST(KvCache, SixteenBitStorage) {
  for (DType dt : {DType::F16, DType::BF16}) {
    KvCacheConfig c = small_config();
    c.dtype = dt;
    KvCache cache(c);
    History hist(3);
    std::mt19937 rng(6);
    append(cache, hist, 11, rng);  // f32 inputs, exactly representable
    expect_matches(cache, hist);
    // Inputs in the cache dtype are stored as is; f32 inputs are rounded to nearest even.
    cache.reserve(1);
    const Tensor k32 = Tensor::empty({3, 1, 8}, DType::F32);
    for (i64 i = 0; i < 24; ++i) k32.data_ptr<float>()[i] = 1.0f + static_cast<float>(i) * 1e-3f;
    const Tensor k16 = k32.to(dt);
    for (int l = 0; l < 2; ++l) cache.write(l, k32, k16);
    cache.advance(1);
    const i64 pos = 11, blk = cache.block_table().at<std::int32_t>({2, pos / 8});
    for (int h = 0; h < 2; ++h)
      for (int d = 0; d < 4; ++d) {
        const double want = k16.get(2 * 8 + h * 4 + d);
        EXPECT_EQ(cache.keys(1).select(0, blk).get((h * 8 + pos % 8) * 4 + d), want);
        EXPECT_EQ(cache.values(0).select(0, blk).get((h * 8 + pos % 8) * 4 + d), want);
      }
    if (dt == DType::F16)
      expect_error([&] { cache.write(0, k16.to(DType::BF16), k16); }, ErrorCode::invalid_argument, "input dtype bf16");
  }
}

// End to end: beams reordered over a paged cache, then decode attention on its tensors against
// a float64 attention over each beam's naive history.
TEST(KvCache, DecodeAttentionReadsThroughTheCache) {
  KvCacheConfig c;
  c.num_layers = 1, c.batch = 3, c.num_kv_heads = 2, c.head_dim = 16, c.max_length = 300, c.block_size = 16;
  KvCache cache(c);
  History hist(3);
  std::mt19937 rng(8);
  append(cache, hist, 37, rng);
  for (int step = 0; step < 30; ++step) {
    const std::vector<int> parent = {static_cast<int>(rng() % 3), static_cast<int>(rng() % 3), 0};
    cache.reorder(parent);
    History next(3);
    for (int b = 0; b < 3; ++b) next[b] = hist[parent[b]];
    hist = next;
    append(cache, hist, 1 + step % 2, rng);
  }
  const int Hq = 4, D = 16, g = 2;
  Tensor q = Tensor::empty({3, 1, Hq * D}, DType::F32);
  std::uniform_real_distribution<float> qd(-1, 1);
  for (i64 i = 0; i < q.numel(); ++i) q.data_ptr<float>()[i] = qd(rng);
  for (DecodeStrategy s : {DecodeStrategy::plain, DecodeStrategy::split, DecodeStrategy::lean}) {
    Tensor y = Tensor::empty(q.shape(), DType::F32);
    cpu::decode_attention(q, cache.keys(0), cache.values(0), cache.block_table(), cache.lengths(),
                          DecodeAttentionAttrs{.num_heads = Hq, .num_kv_heads = 2, .strategy = s}, y,
                          cpu::CpuContext{2});
    double num = 0, den = 0;
    for (int b = 0; b < 3; ++b)
      for (int hq = 0; hq < Hq; ++hq) {
        const int h = hq / g;
        std::vector<double> sc(hist[b].size()), o(D, 0.0);
        double mx = -1e300, l = 0;
        for (std::size_t j = 0; j < hist[b].size(); ++j) {
          double acc = 0;
          for (int d = 0; d < D; ++d) acc += q.at<float>({b, 0, hq * D + d}) * hist[b][j][0][0][h * D + d];
          sc[j] = acc / 4.0, mx = std::max(mx, sc[j]);
        }
        for (std::size_t j = 0; j < hist[b].size(); ++j) {
          const double e = std::exp(sc[j] - mx);
          l += e;
          for (int d = 0; d < D; ++d) o[d] += e * hist[b][j][0][1][h * D + d];
        }
        for (int d = 0; d < D; ++d) {
          const double diff = y.at<float>({b, 0, hq * D + d}) - o[d] / l;
          num += diff * diff, den += (o[d] / l) * (o[d] / l);
        }
      }
    EXPECT_LE(std::sqrt(num / den), 1e-5) << static_cast<int>(s);
  }
}

}  // namespace

// A moved-from cache refuses every sequence and layer by name instead of reading freed state; the
// cache it moved to carries on.
TEST(KvCache, MovedFromCacheRefusesCalls) {
  KvCache a(small_config());
  a.reserve(3);
  a.advance(3);
  KvCache b = std::move(a);
  EXPECT_EQ(b.length(0), 3);
  expect_error([&] { (void)a.length(0); }, ErrorCode::invalid_argument, "out of range");
  expect_error([&] { (void)a.keys(0); }, ErrorCode::invalid_argument, "out of range");
  KvCache c(small_config());
  c = std::move(b);
  EXPECT_EQ(c.length(2), 3);
  expect_error([&] { (void)b.values(1); }, ErrorCode::invalid_argument, "out of range");
}
