// Scaled dot-product attention on Hopper tensor cores (wgmma + TMA), FlashAttention-3 style.
// Compiled for sm_90a only (cmake/EncoreCudaSources.cmake); attention.cu calls launch_hopper()
// on an sm_90 device and falls back to the mma.sync kernel wherever this one cannot run.
//
// A block has 1 or 2 consumer warpgroups of 64 query rows each and one producer warpgroup, which
// gives its registers to the consumers (setmaxnreg; the accumulators of S, O and P alone take
// 128-160 per thread). Its work items are (query block, output head, batch), query blocks fastest;
// a persistent grid (choose_shape) gives each block several, one after the other, so that the
// producer loads the next item's Q and first tiles while the consumers finish the current one. At
// D = 64 two blocks of one consumer group share a multiprocessor; otherwise one block of up to two
// groups (sharing each K/V tile) does.
// The producer's first thread issues TMA copies: an item's first K tile, its Q (once the consumers
// have released the previous one), then the rest of its K and V tiles of 128 keys, into a ring of
// kStages slots that runs on across items; each slot has a "full" mbarrier (completed by the
// copy's transaction bytes) and an "empty" one (one arrival per consumer warp once the tile has
// been read). Out-of-range rows arrive as zeros from the TMA, so no bounds checks on loads.
//
// A consumer warpgroup, per key tile j:
//   S_j = Q K_j^T      wgmma m64n128k16 (n32/64/96 for a narrow last tile), both operands in
//                      shared memory (issued, not awaited)
//   O  += P_{j-1} V_{j-1}  wgmma m64nDk16, P in registers (issued behind S_j)
//   wait for S_j; release K_j; mask + online softmax of S_j (exp2) while P V runs on the tensor
//   cores; wait for P V; release V_{j-1}; rescale O; P_j = S_j packed to 16 bits.
// The S accumulator layout per warp is the mma.m16n8k16 C layout, which is also the A-register
// layout of the next wgmma, so P never goes through shared memory (as in attention_flash.cuh).
//
// Mask semantics are attention.cu's (mask_score): per element, only in tiles where a mask, the
// end of the keys or the causal diagonal can apply. Causal blocks stop at the last visible tile
// when that cannot change the result (see key_tiles), and run longest-first.
#include <cuda.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/common/fast_div.h"
#include "kernels/common/softmax_sum.h"
#include "kernels/cuda/attention_wgmma.cuh"

namespace encore::cuda::attn {
namespace {

using namespace hop;

constexpr int kRows = 64;    // query rows per consumer warpgroup (the wgmma M)
constexpr int kKeys = 128;   // keys per K/V tile (the N of S = Q K^T)
constexpr int kMaxGroups = 2;
constexpr int kMaxThreads = (kMaxGroups + 1) * 128;  // + the producer warpgroup
// setmaxnreg budgets. One block per multiprocessor (up to two consumer groups), within the launch's
// 168 per thread: 128 * (2 * 232 + 40) = 128 * (2 * 240 + 24) = 64512 <= 65536; D = 128 (64 more
// accumulators) takes the larger consumer share. Two blocks per multiprocessor (one consumer group
// each, D = 64 only): 128 per thread at launch, 128 * (232 + 24) = 32768 per block.
template <int DP, int PerSm>
constexpr int kProducerRegs = PerSm == 2 || DP != 64 ? 24 : 40;
template <int DP, int PerSm>
constexpr int kConsumerRegs = PerSm == 2 ? 232 : DP == 64 ? 232 : 240;

template <int DP>
struct Cfg {
  static constexpr int kBlocks = DP / 64;               // 128-byte column blocks per row
  static constexpr int kStages = DP == 64 ? 3 : 2;      // K/V ring depth (shared memory bound)
  static constexpr unsigned kQBytes = kRows * DP * 2;   // one warpgroup's Q
  static constexpr unsigned kTileBytes = kKeys * DP * 2;  // one K or one V tile
  static constexpr std::size_t smem(int groups) {
    return 1024 + groups * kQBytes + 2 * kStages * kTileBytes + 8 * (2 + 4 * kStages);
  }
};

/// TMA descriptors of q, k, v; `*_bt`: that map's dims are {column, batch, token} (the batch
/// stride is the smaller one, e.g. a time-major view), else {column, token, batch}.
struct Maps {
  CUtensorMap q, k, v;
  bool q_bt = false, k_bt = false, v_bt = false;
  // Work-item decoding by multiplication (fast_items: fewer than 2^31 items): by the query
  // blocks per head and by the output heads.
  bool fast_items = false;
  FastDiv by_nq, by_ho;
};

/// A box of rows [row, row + box rows) of batch b from one of the maps.
__device__ __forceinline__ void tma_rows(void* dst, const CUtensorMap* map, bool bt, std::uint64_t* bar, int col,
                                         int row, int b) {
  tma_load(dst, map, bar, col, bt ? b : row, bt ? row : b);
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

template <typename T>
__device__ __forceinline__ unsigned pack2(float lo, float hi);
template <>
__device__ __forceinline__ unsigned pack2<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&h);
}
template <>
__device__ __forceinline__ unsigned pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&h);
}

/// Key tiles a block of query rows [q0, q0 + rows) visits. Causal: keys after the last row's
/// diagonal are masked for every row of the block. With fill -inf they contribute nothing; with
/// fill lowest they contribute exp(lowest - m) = 0 once a row has a real score, which every row
/// has when there is no other mask and the first row sees key 0 (otherwise all tiles are read).
__device__ __forceinline__ int key_tiles(const AttnParams& p, i64 q0, i64 rows) {
  i64 end = p.Tk;
  if (p.causal && (p.fill_neg_inf || (p.kpm == nullptr && p.add == nullptr && q0 + p.causal_offset >= 0))) {
    const i64 last = min(q0 + rows, p.Tq) - 1 + p.causal_offset;
    end = min(end, max(last + 1, i64{0}));
  }
  return static_cast<int>((end + kKeys - 1) / kKeys);
}

/// S = Q K^T for one K slot (issued and committed, not awaited). `q` and `k` are the low words of
/// the operands' descriptors (desc_lo); each k-step only adds a constant to them, so that issuing
/// takes an add and two moves to uniform registers per instruction, not a chain of address masks.
/// W < 128: only the first W keys of the slot (a narrow last tile).
template <int DP, typename T, int W = kKeys>
__device__ __forceinline__ void issue_s(float (&s)[W / 2], std::uint32_t q, std::uint32_t k) {
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < DP / 16; ++kk) {
    const std::uint32_t off = (kk & 3) * 32u;  // k-step within the 128-byte row
    const std::uint64_t da = desc_of(q + ((kk >> 2) * (kRows * 128u) + off) / 16);
    const std::uint64_t db = desc_of(k + ((kk >> 2) * (kKeys * 128u) + off) / 16);
    if constexpr (W == 32) Wgmma<T>::ss_n32(s, da, db, kk > 0 ? 1 : 0);
    else if constexpr (W == 64) Wgmma<T>::ss_n64(s, da, db, kk > 0 ? 1 : 0);
    else if constexpr (W == 96) Wgmma<T>::ss_n96(s, da, db, kk > 0 ? 1 : 0);
    else Wgmma<T>::ss_n128(s, da, db, kk > 0 ? 1 : 0);
  }
  wg_commit();
}

/// O += P V for one V slot (issued and committed, not awaited); `v` as `k` above; W: the first W
/// keys only.
template <int DP, typename T, int W = kKeys>
__device__ __forceinline__ void issue_pv(float (&o)[DP / 2], const unsigned (&pf)[32], std::uint32_t v) {
  wg_fence();
#pragma unroll
  for (int c = 0; c < W / 16; ++c) {
    const unsigned a[4] = {pf[4 * c], pf[4 * c + 1], pf[4 * c + 2], pf[4 * c + 3]};
    const std::uint64_t db = desc_of(v + c * (16 * 128u) / 16);
    if constexpr (DP == 64) Wgmma<T>::rs_n64(o, a, db);
    else Wgmma<T>::rs_n128(o, a, db);
  }
  wg_commit();
}

/// How much masking a tile needs: none; only keys past Tk (-inf, an int compare); or per-element
/// mask_score (key padding, an additive mask, the causal diagonal, or a scale <= 0).
enum class TileMask { none, tail, full };

/// Masks one S tile of raw scores (keys j0..j0+8NC-1; this thread's rows row0 and row0 + 8) and runs
/// the online softmax on it: s becomes the unnormalised probabilities, m/l the running max (of
/// scaled scores) and partial sum, alpha the factor the previous output must be rescaled by.
/// NC: the tile's 8-key chunks (16; fewer for a narrow last tile).
template <int NC = kKeys / 8>
__device__ __forceinline__ void softmax_tile(float (&s)[4 * NC], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                             const AttnParams& p, TileMask mask, i64 j0, i64 row0, i64 b, int qh,
                                             int oh, int t4) {
  constexpr float kLog2e = 1.4426950408889634f;
  if (mask == TileMask::full) {
#pragma unroll
    for (int i = 0; i < NC; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = s[4 * i + e] * p.scale;
        const i64 qi = row0 + (e >> 1) * 8, kj = j0 + 8 * i + 2 * t4 + (e & 1);
        if (kj >= p.Tk) v = -INFINITY;  // past the end: no contribution at all
        else if (qi < p.Tq) v = mask_score(p, v, b, qh, oh, qi, kj);
        s[4 * i + e] = v;
      }
    }
  } else if (mask == TileMask::tail) {
    const int left = static_cast<int>(p.Tk - j0);  // keys of this tile that exist
#pragma unroll
    for (int i = 0; i < NC; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (8 * i + 2 * t4 + (e & 1) >= left) s[4 * i + e] = -INFINITY;
  }
  // none/tail: raw scores (scale > 0, so the max commutes with scaling) and at least one real
  // score per row, so m_new is finite: p = exp2(s * scale * log2e - m_new * log2e), one FMA.
  // Both rows at once and as trees (the max) or four partial sums, without branches: the
  // scheduler gets independent chains instead of 32-long dependent ones.
  const float c = p.scale * kLog2e;
  float mx[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float t[NC / 2];
#pragma unroll
    for (int k = 0; k < NC / 2; ++k)
      t[k] = fmaxf(fmaxf(s[8 * k + 2 * h], s[8 * k + 2 * h + 1]), fmaxf(s[8 * k + 4 + 2 * h], s[8 * k + 5 + 2 * h]));
#pragma unroll
    for (int w = NC / 2; w > 1; w = (w + 1) / 2)  // pairs k and k + ceil(w / 2); odd w keeps the middle
#pragma unroll
      for (int k = 0; k < w / 2; ++k) t[k] = fmaxf(t[k], t[k + (w + 1) / 2]);
    mx[h] = t[0];
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
#pragma unroll
  for (int h = 0; h < 2; ++h) mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
  float mu[2], mb[2], rs[2][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (mask != TileMask::full) mx[h] *= p.scale;
    const float m_new = fmaxf(m[h], mx[h]);
    // Only -inf so far: subtract 0 instead, so that exp2(-inf) = 0 everywhere and alpha = 0
    // (the output and sum are still zero then). Fill values: lowest - lowest = 0, not inf - inf.
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    alpha[h] = fast_exp2((m[h] - m_use) * kLog2e);
    m[h] = m_new;
    mu[h] = m_use;
    mb[h] = m_use * kLog2e;
#pragma unroll
    for (int k = 0; k < 4; ++k) rs[h][k] = 0.0f;
  }
  // full: subtract first (fill values); otherwise one FMA on the raw score. (One branch around
  // each loop: a select per element would evaluate both exponentials.)
  if (mask == TileMask::full) {
#pragma unroll
    for (int i = 0; i < NC; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = fast_exp2((s[4 * i + e] - mu[e >> 1]) * kLog2e);
        s[4 * i + e] = pe;
        rs[e >> 1][(i & 1) * 2 + (e & 1)] += pe;
      }
  } else {
#pragma unroll
    for (int i = 0; i < NC; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = fast_exp2(fmaf(s[4 * i + e], c, -mb[e >> 1]));
        s[4 * i + e] = pe;
        rs[e >> 1][(i & 1) * 2 + (e & 1)] += pe;
      }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h)
    l[h] = l[h] * alpha[h] + ((rs[h][0] + rs[h][1]) + (rs[h][2] + rs[h][3]));  // per-lane partial sum
}

template <typename T, int NC = kKeys / 8>
__device__ __forceinline__ void pack_p(unsigned (&pf)[32], const float (&s)[4 * NC]) {
#pragma unroll
  for (int i = 0; i < 2 * NC; ++i) pf[i] = pack2<T>(s[2 * i], s[2 * i + 1]);
}

/// The block's shared memory: Q, the K/V ring, and their barriers ("empty_q": the consumers
/// have read Q for the last time, so the producer may load the next work item's).
struct Smem {
  unsigned char *q, *k, *v;
  std::uint64_t *full_q, *empty_q, *full_k, *full_v, *empty_k, *empty_v;
};

/// A position in the K/V ring: slot and the parity of its current fill. A block's work items use
/// the ring one after the other, so the position carries over from one item to the next.
struct RingPos {
  int slot = 0;
  unsigned phase = 0;
  template <int ST>
  __device__ __forceinline__ void advance() {
    if (++slot == ST) slot = 0, phase ^= 1;
  }
};

/// A work item: 64 * groups query rows from q0 of output head oh (query head qh, K/V head kvh) in
/// batch b, and how many key tiles it visits.
struct Item {
  i64 q0, b;
  int oh, qh, kvh, ntiles;
};

/// The launch's work items: nq query blocks of `rows` rows per head and batch, `count` in all.
struct Work {
  i64 rows, nq, count;
  __device__ __forceinline__ Item at(const AttnParams& p, const Maps& maps, i64 i) const {
    Item it;
    i64 qi;
    if (maps.fast_items) {  // i < 2^31: two multiply-highs instead of two divisions
      const std::uint32_t n = static_cast<std::uint32_t>(i), hb = maps.by_nq.div(n), b = maps.by_ho.div(hb);
      qi = n - hb * maps.by_nq.d;
      it.oh = static_cast<int>(hb - b * maps.by_ho.d);
      it.b = b;
    } else {
      const i64 hb = i / nq;
      qi = i % nq;
      it.oh = static_cast<int>(hb % p.Ho);
      it.b = hb / p.Ho;
    }
    it.q0 = (p.causal ? nq - 1 - qi : qi) * rows;
    map_heads(p, it.oh, it.qh, it.kvh);
    it.ntiles = key_tiles(p, it.q0, rows);
    return it;
  }
};

/// A consumer warpgroup's whole work (see the file comment).
/// One work item (64 * groups query rows of one head); `ring` is where its first tile is, `q_phase`
/// the parity of its Q load.
template <int DP, typename T>
__device__ __forceinline__ void consume(const AttnParams& p, const Smem& sm, int ntiles, i64 q0, int oh, int qh,
                                        i64 b, RingPos& ring, unsigned q_phase) {
  using C = Cfg<DP>;
  constexpr int ST = C::kStages;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Consumer warpgroup `grp`: rows qg0..qg0+63; this thread's rows row0 and row0 + 8.
  // grp broadcast from lane 0: ptxas then knows it is warp-uniform, and so are the descriptors
  // built from it, which stay in uniform registers (no register-to-uniform move per wgmma).
  const int grp = __shfl_sync(0xffffffffu, warp >> 2, 0), t4 = lane & 3;
  const i64 qg0 = q0 + static_cast<i64>(grp) * kRows;
  const i64 row0 = qg0 + (warp & 3) * 16 + (lane >> 2);
  const std::uint32_t q_desc = desc_lo(smem_u32(sm.q + grp * C::kQBytes), 16);
  const std::uint32_t k_desc = desc_lo(smem_u32(sm.k), 16), v_desc = desc_lo(smem_u32(sm.v), kKeys * 128u);
  constexpr std::uint32_t kSlotStep = C::kTileBytes / 16;  // one ring slot, in descriptor units

  float o[DP / 2], s[64], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2];
  unsigned pf[32];
#pragma unroll
  for (int i = 0; i < DP / 2; ++i) o[i] = 0.0f;
  // Per-element masking only where a mask or the diagonal can apply: tiles from `full_from` on
  // (every tile with a mask or a scale <= 0; with causal, the first tile some key of which is
  // past the group's first row's diagonal). Tiles from `tail_from` on hold the end of the keys,
  // the cheap tail case. Both are worked out once per item, not per tile.
  int full_from = INT_MAX;
  if (p.kpm != nullptr || p.add != nullptr || !(p.scale > 0.0f)) {
    full_from = 0;
  } else if (p.causal) {  // j0 + kKeys - 1 > qg0 + causal_offset, i.e. j * kKeys > t
    const i64 t = qg0 + p.causal_offset - (kKeys - 1);
    full_from = t < 0 ? 0 : static_cast<int>(min(t / kKeys + 1, static_cast<i64>(INT_MAX)));
  }
  const int tail_from = static_cast<int>(min(p.Tk / kKeys, static_cast<i64>(INT_MAX)));
  auto tile_mask = [&](int j) {
    if (j >= full_from) return TileMask::full;
    // (D = 128 has no registers to spare for a third softmax variant: its tail takes the full path.)
    return j >= tail_from ? (DP == 64 ? TileMask::tail : TileMask::full) : TileMask::none;
  };

  // The K slot of tile j is `ring` before the loop's j-th advance; its V slot `vpos` lags by one.
  // Q is released once the last S has been computed.
  if (ntiles > 0) {
    mbar_wait(sm.full_q, q_phase);
    mbar_wait(&sm.full_k[ring.slot], ring.phase);
    issue_s<DP, T>(s, q_desc, k_desc + ring.slot * kSlotStep);
    wg_wait<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) pin(s[i]);
    if (lane == 0) {
      mbar_arrive(&sm.empty_k[ring.slot]);
      if (ntiles == 1) mbar_arrive(sm.empty_q);
    }
    // An unmasked first tile gets the softmax with no mask paths (a constant mask): the one with
    // them copies half the scores between registers to merge the paths.
    if (const TileMask mask0 = tile_mask(0); mask0 == TileMask::none)
      softmax_tile(s, m, l, alpha, p, TileMask::none, 0, row0, b, qh, oh, t4);
    else
      softmax_tile(s, m, l, alpha, p, mask0, 0, row0, b, qh, oh, t4);
    pack_p<T>(pf, s);
    RingPos vpos = ring;
    ring.advance<ST>();

    // One tile of the loop. `plain` (a std::bool_constant): the tile needs no masking, known at
    // compile time, so that loop has one softmax path: with the masked paths beside it in the same
    // loop, ptxas copied 32 of the 64 score registers on every tile to merge the paths. `width` (a
    // std::integral_constant): the keys it computes, 128 but for a narrow last tile.
    auto tile = [&](int j, auto plain, auto width) __attribute__((always_inline)) {
      constexpr int W = decltype(width)::value;
      // S of this tile, exactly as wide as the tile: one array shared with narrow tiles' partial
      // writes made ptxas serialise every wgmma of the kernel (C7511).
      float st[W / 2];
      const int sk = ring.slot, sv = vpos.slot;
      // D = 64, unmasked tiles: S goes out before the wait for V (B 32 T 1024: 2.7 % faster); at
      // D = 128 that order measured 5-9 % slower, on every tile kind of 197 tokens 0.7 % slower.
      mbar_wait(&sm.full_k[sk], ring.phase);
      if constexpr (DP == 64 && decltype(plain)::value) {
        issue_s<DP, T, W>(st, q_desc, k_desc + sk * kSlotStep);
        mbar_wait(&sm.full_v[sv], vpos.phase);
      } else {
        mbar_wait(&sm.full_v[sv], vpos.phase);
        issue_s<DP, T, W>(st, q_desc, k_desc + sk * kSlotStep);
      }
      issue_pv<DP, T>(o, pf, v_desc + sv * kSlotStep);
      vpos = ring;
      ring.advance<ST>();
      wg_wait<1>();  // S_j is done; P_{j-1} V_{j-1} may still run
#pragma unroll
      for (int i = 0; i < W / 2; ++i) pin(st[i]);
      if (lane == 0) {
        mbar_arrive(&sm.empty_k[sk]);
        if (j == ntiles - 1) mbar_arrive(sm.empty_q);
      }
      const i64 j0 = static_cast<i64>(j) * kKeys;
      // (A narrow tile is the tail tile without other masks, known at compile time.)
      const TileMask mask = W < kKeys ? TileMask::tail : decltype(plain)::value ? TileMask::none : tile_mask(j);
      softmax_tile<W / 8>(st, m, l, alpha, p, mask, j0, row0, b, qh, oh, t4);
      wg_wait<0>();
#pragma unroll
      for (int i = 0; i < DP / 2; ++i) pin(o[i]);
#pragma unroll
      for (int i = 0; i < 32; ++i) pin(pf[i]);
      if (lane == 0) mbar_arrive(&sm.empty_v[sv]);
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
        o[4 * i] *= alpha[0], o[4 * i + 1] *= alpha[0];
        o[4 * i + 2] *= alpha[1], o[4 * i + 3] *= alpha[1];
      }
      pack_p<T, W / 8>(pf, st);
    };
    // A narrow last tile: when the last tile holds the end of the keys and no other mask (D = 64),
    // it computes the 32, 64 or 96 keys it needs rather than 128, S and P V (ViT's 197 tokens:
    // 96 of the second tile's 128; the rest of its slot is loaded but not read).
    int narrow = kKeys;
    if (DP == 64 && tail_from >= 1 && tail_from == ntiles - 1 && tail_from < full_from)
      narrow = (static_cast<int>(p.Tk - static_cast<i64>(tail_from) * kKeys) + 31) / 32 * 32;
    using Full = std::integral_constant<int, kKeys>;
    // The unmasked tiles, if any, are a prefix (the causal diagonal and the end of the keys reach
    // only the last ones; a mask or a scale <= 0 makes every tile masked), then the rest.
    const int plain_end = min(ntiles, min(full_from, tail_from));
    int j = 1;
    for (; j < plain_end; ++j) tile(j, std::true_type{}, Full{});
    for (; j < ntiles; ++j) {
      if (j < ntiles - 1 || narrow == kKeys) tile(j, std::false_type{}, Full{});
      else if (narrow == 32) tile(j, std::false_type{}, std::integral_constant<int, 32>{});
      else if (narrow == 64) tile(j, std::false_type{}, std::integral_constant<int, 64>{});
      else tile(j, std::false_type{}, std::integral_constant<int, 96>{});
    }
    // The last P V, as wide as the last tile (each issue awaited on its own path).
    auto last_pv = [&](auto width) __attribute__((always_inline)) {
      issue_pv<DP, T, decltype(width)::value>(o, pf, v_desc + vpos.slot * kSlotStep);
      wg_wait<0>();
#pragma unroll
      for (int i = 0; i < DP / 2; ++i) pin(o[i]);
#pragma unroll
      for (int i = 0; i < 32; ++i) pin(pf[i]);
    };
    mbar_wait(&sm.full_v[vpos.slot], vpos.phase);
    if (narrow == kKeys) last_pv(Full{});
    else if (narrow == 32) last_pv(std::integral_constant<int, 32>{});
    else if (narrow == 64) last_pv(std::integral_constant<int, 64>{});
    else last_pv(std::integral_constant<int, 96>{});
    if (lane == 0) mbar_arrive(&sm.empty_v[vpos.slot]);
  }

  // O / l; rows past Tq are not stored. l == 0 (every score -inf, or no tile) gives zeros. Both
  // rows' sums are reduced before the first store: after it, a shuffle into a register a store
  // still has to read waited for the store (Nsight: ~4 % of the samples at 197 tokens).
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // softmax_row_scale with the hardware reciprocal (a kept row's sum is >= 1: its max counts 1)
    // instead of an IEEE division and its slow-path branches.
    const float lt = l[h] + __shfl_xor_sync(0xffffffffu, l[h], 2);
    inv[h] = softmax_row_kept(lt) ? __fdividef(1.0f, lt) : 0.0f;
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const i64 qi = row0 + 8 * h;
    if (qi >= p.Tq) continue;
    const i64 off = ((b * p.Tq + qi) * p.Ho + oh) * DP;
    if (p.dt_out == p.dt_in) {
      T* y = static_cast<T*>(p.y) + off;
#pragma unroll
      for (int i = 0; i < DP / 8; ++i)
        *reinterpret_cast<unsigned*>(y + 8 * i + 2 * t4) =
            pack2<T>(o[4 * i + 2 * h] * inv[h], o[4 * i + 2 * h + 1] * inv[h]);
    } else {
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
        kc::store_f(p.y, off + 8 * i + 2 * t4, p.dt_out, o[4 * i + 2 * h] * inv[h]);
        kc::store_f(p.y, off + 8 * i + 2 * t4 + 1, p.dt_out, o[4 * i + 2 * h + 1] * inv[h]);
      }
    }
  }
}

/// PerSm: blocks per multiprocessor the launch bounds allow (1: up to two consumer groups; 2: one).
template <int DP, typename T, int PerSm>
__global__ void __launch_bounds__(PerSm == 2 ? 256 : kMaxThreads, PerSm)
    attn_hopper_kernel(const AttnParams p, const __grid_constant__ Maps maps) {
  using C = Cfg<DP>;
  constexpr int ST = C::kStages;
  extern __shared__ unsigned char smem_raw[];
  pdl::begin();
  // 128B-swizzle atoms start on 1024-byte boundaries.
  unsigned char* base = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const int groups = static_cast<int>(blockDim.x) / 128 - 1;
  Smem sm;
  sm.q = base;                                  // [groups][kBlocks][64 rows][128 B]
  sm.k = sm.q + groups * C::kQBytes;            // [ST][kBlocks][128 keys][128 B]
  sm.v = sm.k + ST * C::kTileBytes;             // [ST][kBlocks][128 keys][128 B]
  sm.full_q = reinterpret_cast<std::uint64_t*>(sm.v + ST * C::kTileBytes);
  sm.empty_q = sm.full_q + 1;
  sm.full_k = sm.empty_q + 1;
  sm.full_v = sm.full_k + ST;
  sm.empty_k = sm.full_v + ST;
  sm.empty_v = sm.empty_k + ST;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Work items: (query block, output head, batch), query blocks fastest (neighbouring blocks
  // share their head's K/V in L2); causal problems run their longest blocks first. A block takes
  // items blockIdx.x, + gridDim.x, ...: one each when the grid covers them all, several when it
  // is persistent (sized to what is co-resident). Each role works the count out inside its own
  // branch: values live across the branch were spilled to local memory, and with the one-block
  // D = 64 shape (40 producer registers) the consumers reloaded them on every item. Now no
  // consumer touches local memory in any shape (the 24-register producers spill a few words
  // more). The empty asm keeps ptxas from hoisting the common computation above the branch.
  auto work = [&p, groups] __attribute__((always_inline)) {
    Work w;
    i64 tq = p.Tq;
    asm volatile("" : "+l"(tq));
    w.rows = static_cast<i64>(kRows) * groups;
    w.nq = (tq + w.rows - 1) / w.rows;
    w.count = w.nq * p.Ho * p.B;
    return w;
  };

  if (threadIdx.x == 0) {
    mbar_init(sm.full_q, 1);
    mbar_init(sm.empty_q, 4 * groups);
    for (int s = 0; s < ST; ++s) {
      mbar_init(&sm.full_k[s], 1);
      mbar_init(&sm.full_v[s], 1);
      mbar_init(&sm.empty_k[s], 4 * groups);
      mbar_init(&sm.empty_v[s], 4 * groups);
    }
    mbar_fence_init();
  }
  __syncthreads();

  // The two roles are the two branches of one if/else (setmaxnreg needs that); no block-wide
  // barrier after this point. Items without key tiles load nothing (their rows are zeros).
  if (warp >= 4 * groups) {  // producer warpgroup: its first thread issues every copy
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs<DP, PerSm>));
    if (warp == 4 * groups && lane == 0) {
      RingPos ring;
      bool reused = false;  // a slot's previous fill must have been released first
      unsigned loaded = 0;  // items whose Q has been loaded
      // Tile j's K (then V) into the ring slot at `ring`; load_v advances the ring.
      auto load_k = [&](const Item& it, int bi, int j) __attribute__((always_inline)) {
        const int s = ring.slot;
        if (reused) mbar_wait(&sm.empty_k[s], ring.phase ^ 1);
        mbar_expect_tx(&sm.full_k[s], C::kTileBytes);
        for (int c = 0; c < C::kBlocks; ++c)
          tma_rows(sm.k + s * C::kTileBytes + c * (kKeys * 128), &maps.k, maps.k_bt, &sm.full_k[s],
                   it.kvh * DP + c * 64, j * kKeys, bi);
      };
      auto load_v = [&](const Item& it, int bi, int j) __attribute__((always_inline)) {
        const int s = ring.slot;
        if (reused) mbar_wait(&sm.empty_v[s], ring.phase ^ 1);
        mbar_expect_tx(&sm.full_v[s], C::kTileBytes);
        for (int c = 0; c < C::kBlocks; ++c)
          tma_rows(sm.v + s * C::kTileBytes + c * (kKeys * 128), &maps.v, maps.v_bt, &sm.full_v[s],
                   it.kvh * DP + c * 64, j * kKeys, bi);
        ring.advance<ST>();
        reused = reused || ring.slot == 0;
      };
      const Work w = work();
      for (i64 i = blockIdx.x; i < w.count; i += gridDim.x) {
        const Item it = w.at(p, maps, i);
        if (it.ntiles == 0) continue;
        const int bi = static_cast<int>(it.b);
        // The item's first K goes before its Q: with 3 stages its slot was released by the S three
        // tiles back (in this item's predecessors), so the copy overlaps the consumers' last tile.
        // Its first V goes after Q: it is needed only by the second S, and with 2 stages its slot
        // is released only after the previous item's last softmax, later than Q's (with 3 stages
        // either order would do).
        load_k(it, bi, 0);
        if (loaded > 0) mbar_wait(sm.empty_q, (loaded - 1) & 1);
        ++loaded;
        mbar_expect_tx(sm.full_q, groups * C::kQBytes);
        for (int g = 0; g < groups; ++g)
          for (int c = 0; c < C::kBlocks; ++c)
            tma_rows(sm.q + g * C::kQBytes + c * (kRows * 128), &maps.q, maps.q_bt, sm.full_q, it.qh * DP + c * 64,
                     static_cast<int>(it.q0) + g * kRows, bi);
        load_v(it, bi, 0);
        for (int j = 1; j < it.ntiles; ++j) load_k(it, bi, j), load_v(it, bi, j);
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs<DP, PerSm>));
    RingPos ring;
    unsigned loaded = 0;
    const Work w = work();
    for (i64 i = blockIdx.x; i < w.count; i += gridDim.x) {
      const Item it = w.at(p, maps, i);
      consume<DP, T>(p, sm, it.ntiles, it.q0, it.oh, it.qh, it.b, ring, loaded & 1);
      loaded += it.ntiles > 0 ? 1 : 0;
    }
  }
}

// ---- host ----------------------------------------------------------------------------------------------

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/// cuTensorMapEncodeTiled through the runtime (no link against libcuda); null when unavailable.
EncodeTiled encode_tiled() {
  static const EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      f = nullptr;
    }
    return reinterpret_cast<EncodeTiled>(f);
  }();
  return fn;
}

/// A 3-d map of a [B, T, width] f16/bf16 view (element strides st, sb), read in boxes of 64
/// columns x box_rows tokens, 128B-swizzled; false when the encoder refuses it. The dims go in
/// increasing stride order, as the encoder documents them: {column, token, batch}, or {column,
/// batch, token} (then `bt`) when the batch stride is the smaller.
bool make_map(CUtensorMap& map, bool& bt, EncodeTiled fn, const void* ptr, bool bf16, i64 width, i64 rows, i64 batch,
              i64 st, i64 sb, unsigned box_rows) {
  if (rows == 1) st = width;  // an extent-1 dim may carry any stride: give it one the encoder takes
  if (batch == 1) sb = rows * st;
  bt = sb < st;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(width), static_cast<cuuint64_t>(bt ? batch : rows),
                              static_cast<cuuint64_t>(bt ? rows : batch)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(bt ? sb : st) * 2, static_cast<cuuint64_t>(bt ? st : sb) * 2};
  const cuuint32_t box[3] = {64, bt ? 1u : box_rows, bt ? box_rows : 1u};
  const cuuint32_t elem[3] = {1, 1, 1};
  return fn(&map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, const_cast<void*>(ptr),
            dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/// Whether the process has loaded this kernel's sm_90a code (checked once).
template <int DP, typename T, int PerSm>
bool kernel_loaded() {
  static const bool ok = [] {
    cudaFuncAttributes a{};
    const bool loaded = cudaFuncGetAttributes(&a, attn_hopper_kernel<DP, T, PerSm>) == cudaSuccess;
    if (!loaded) cudaGetLastError();
    return loaded;
  }();
  return ok;
}

/// How a launch is shaped: consumer groups per block, blocks per multiprocessor, persistence.
struct Shape {
  int groups = 2, per_sm = 1;
  bool persistent = false;  // a grid of per_sm blocks per multiprocessor, each taking several items
};

template <int DP, typename T, int PerSm>
bool launch(const AttnParams& p, Maps maps, const Shape& shape, int num_sms, bool pdl, cudaStream_t stream,
            const char** why) {
  if (!kernel_loaded<DP, T, PerSm>()) {
    if (why != nullptr) *why = "this binary's sm_90a code does not load on the device";
    return false;
  }
  const std::size_t smem = Cfg<DP>::smem(shape.groups);
  kc::check_cuda(cudaFuncSetAttribute(attn_hopper_kernel<DP, T, PerSm>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(Cfg<DP>::smem(PerSm == 2 ? 1 : kMaxGroups))),
                 "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  const i64 rows = static_cast<i64>(kRows) * shape.groups;
  const i64 nq = (p.Tq + rows - 1) / rows, items = nq * p.Ho * p.B;
  maps.fast_items = items < (i64{1} << 31) && FastDiv::valid(nq) && FastDiv::valid(p.Ho);
  if (maps.fast_items) {
    maps.by_nq = FastDiv(static_cast<std::uint32_t>(nq));
    maps.by_ho = FastDiv(static_cast<std::uint32_t>(p.Ho));
  }
  // Blocks that fit at once (MPS limits or a carveout could make it fewer than the launch bounds
  // promise; then a persistent grid of per_sm per multiprocessor would run in two waves).
  static const int fit = [] {
    kc::check_cuda(cudaFuncSetAttribute(attn_hopper_kernel<DP, T, PerSm>,
                                        cudaFuncAttributePreferredSharedMemoryCarveout,
                                        cudaSharedmemCarveoutMaxShared),
                   "cudaFuncSetAttribute(PreferredSharedMemoryCarveout)");
    int n = 0;
    kc::check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, attn_hopper_kernel<DP, T, PerSm>,
                                                                 (PerSm == 2 ? 2 : kMaxGroups + 1) * 128,
                                                                 Cfg<DP>::smem(PerSm == 2 ? 1 : kMaxGroups)),
                   "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    return n;
  }();
  const i64 resident = static_cast<i64>(std::clamp(fit, 1, shape.per_sm)) * num_sms;
  // More items than a grid can have blocks: persistent whatever the shape says.
  const i64 blocks = shape.persistent || items > INT32_MAX ? std::min(items, resident) : items;
  kc::check_cuda(pdl::launch(pdl, attn_hopper_kernel<DP, T, PerSm>, dim3(static_cast<unsigned>(blocks)),
                             dim3((shape.groups + 1) * 128), smem,
                             stream, p, maps),
                 "attention (wgmma)");
  return true;
}

/// The launch shape for a problem (measured on the H200, docs/benchmarks.md, 2026-11-30): the grid
/// is persistent, so a block's next item loads while it finishes the last one. D = 64: one consumer
/// group per block and two blocks per multiprocessor; the two blocks' softmax and matrix products
/// interleave without coordination, which beat two groups sharing K/V tiles (with or without
/// taking turns on the tensor cores) at every ViT-B shape. D = 128 (no shared memory for two
/// blocks): two groups sharing each K/V tile, or one group, for twice the blocks, when the problem
/// cannot fill half the device with pairs. hopper_shape_override() forces another.
Shape choose_shape(const AttnParams& p, int num_sms) {
  if (const int forced = hopper_shape_override(); forced != 0) {
    Shape s;
    s.groups = forced & 3;
    s.per_sm = s.groups == 1 && p.D == 64 && ((forced >> 2) & 3) == 2 ? 2 : 1;
    s.persistent = (forced >> 4) & 1;
    return s;
  }
  if (p.D == 64) return Shape{1, 2, true};
  const i64 big_blocks = (p.Tq + 2 * kRows - 1) / (2 * kRows) * p.Ho * p.B;
  return 2 * big_blocks >= num_sms ? Shape{2, 1, true} : Shape{1, 1, true};
}

}  // namespace

bool launch_hopper(const AttnParams& p, int device_sm, int num_sms, bool pdl, cudaStream_t stream, const char** why) {
  auto refuse = [why](const char* reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (device_sm != 90) return refuse("the device is not sm_90 (the kernel is built for sm_90a)");
  if (p.dt_in != kc::kF16 && p.dt_in != kc::kBF16) return refuse("the dtype is not f16 or bf16");
  if (p.D != 64 && p.D != 128) return refuse("the head dim is not 64 or 128");
  if (p.Tq >= (i64{1} << 31) - kKeys || p.Tk >= (i64{1} << 31) - kKeys) return refuse("too many tokens for TMA");
  const EncodeTiled fn = encode_tiled();
  if (fn == nullptr) return refuse("the driver has no cuTensorMapEncodeTiled");
  const bool bf16 = p.dt_in == kc::kBF16;
  Maps maps;
  if (!make_map(maps.q, maps.q_bt, fn, p.q, bf16, static_cast<i64>(p.Hq) * p.D, p.Tq, p.B, p.q_st, p.q_sb, kRows) ||
      !make_map(maps.k, maps.k_bt, fn, p.k, bf16, static_cast<i64>(p.Hkv) * p.D, p.Tk, p.B, p.k_st, p.k_sb, kKeys) ||
      !make_map(maps.v, maps.v_bt, fn, p.v, bf16, static_cast<i64>(p.Hkv) * p.D, p.Tk, p.B, p.v_st, p.v_sb, kKeys))
    return refuse("the TMA encoder refused the q/k/v layout (strides or alignment)");
  const Shape shape = choose_shape(p, num_sms);
  if (p.D == 64) {
    if (shape.per_sm == 2)
      return bf16 ? launch<64, __nv_bfloat16, 2>(p, maps, shape, num_sms, pdl, stream, why)
                  : launch<64, __half, 2>(p, maps, shape, num_sms, pdl, stream, why);
    return bf16 ? launch<64, __nv_bfloat16, 1>(p, maps, shape, num_sms, pdl, stream, why)
                : launch<64, __half, 1>(p, maps, shape, num_sms, pdl, stream, why);
  }
  return bf16 ? launch<128, __nv_bfloat16, 1>(p, maps, shape, num_sms, pdl, stream, why)
              : launch<128, __half, 1>(p, maps, shape, num_sms, pdl, stream, why);
}

}  // namespace encore::cuda::attn
