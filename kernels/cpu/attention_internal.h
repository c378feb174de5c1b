// Shared machinery of the fused CPU attention kernel (kernels/cpu/attention*.cpp).
//
// The algorithm is flash-style: work is cut into blocks of query rows that share one kv head
// (rows = GQA group heads x a run of query tokens), and each block walks the keys in tiles of
// kTile with an online softmax (running max m, running sum l, f32 accumulator O). No more than
// one tile of scores per block is ever materialised.
//
// The driver below is a template over a "tile kernel" K that supplies the three inner loops
// (scores, softmax update, P·V). attention.cpp instantiates it with a portable K,
// attention_avx512.cpp with an AVX-512 K and attention_avx2.cpp with an AVX2 one. Everything but
// the plain declarations lives in an unnamed namespace so each translation unit keeps its own
// copy: code compiled with -mavx512f or -mavx2 must never be picked by the linker for the portable
// path (ODR merging of inline functions would allow that; the std templates used here still could
// in an unoptimised build, where they are not inlined).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <vector>

#include "encore/core/dtype.h"
#include "encore/core/tensor.h"
#include "encore/graph/op_attrs.h"
#include "backends/cpu/kernels.h"
#include "kernels/common/softmax_sum.h"
#include "kernels/cpu/omp_guard.h"

namespace encore::cpu::attn {

/// Keys per tile and the most query rows per block.
inline constexpr int kTile = 64;
inline constexpr int kMaxRows = 96;

/// Testing/benchmark knobs for attention_impl (the public entry uses the defaults).
struct Options {
  bool force_portable = false;  ///< skip the AVX-512 and AVX2 paths even when they are usable.
  int force_splits = 0;         ///< > 0: split the keys of every block into this many parts.
  bool force_avx2 = false;      ///< take the AVX2 path where AVX-512 is usable too (tests).
};

/// attention() with knobs; validates like attention().
void attention_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                    const AttentionAttrs& attrs, const Tensor& y, const CpuContext& ctx,
                    const Options& opts);

/// Everything the tile loops need, resolved from the tensors (element strides; head h of a token
/// row starts at h*D, the head dim is contiguous).
struct Problem {
  bool bf16_in = false, bf16_out = false;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* y = nullptr;  // contiguous [B, Tq, Ho*D]
  std::int64_t B = 0, Tq = 0, Tk = 0;
  int Hq = 1, Hkv = 1, Ho = 1, D = 0;
  std::int64_t q_sb = 0, q_st = 0, k_sb = 0, k_st = 0, v_sb = 0, v_st = 0;
  float scale = 1.0f;
  bool causal = false;
  std::int64_t causal_offset = 0;  // query t sees keys j <= t + causal_offset
  float fill = 0.0f;               // value a masked score takes (lowest or -inf)
  bool fill_is_neg_inf = false;
  const std::uint8_t* kpm = nullptr;  // key padding [B, Tk], nonzero = attend
  std::int64_t kpm_sb = 0, kpm_st = 0;
  const float* add = nullptr;  // additive mask, strides for [B, H, Tq, Tk] (0 = broadcast)
  std::int64_t add_sb = 0, add_sh = 0, add_sq = 0, add_sk = 0;
  bool add_by_out_head = false;  // mask head dim is Ho (reverse SQA) rather than Hq
  int threads = 1;
  int force_splits = 0;
};

/// The AVX-512 instantiation (attention_avx512.cpp); needs p.D % 16 == 0 and has_avx512().
void run_avx512(const Problem& p);
/// The AVX2 instantiation (attention_avx2.cpp); needs p.D % 8 == 0 and has_avx2().
void run_avx2(const Problem& p);

namespace {  // everything below is per translation unit (see the file comment)

inline float bf16_bits_to_float(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline std::uint16_t float_to_bf16_bits(float f) {  // round to nearest even, NaN stays quiet NaN
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float load_elem(const void* base, std::int64_t i, bool bf16) {
  return bf16 ? bf16_bits_to_float(static_cast<const std::uint16_t*>(base)[i]) : static_cast<const float*>(base)[i];
}

/// 64-byte aligned float scratch owned by one thread.
struct Scratch {
  std::unique_ptr<float[]> mem;
  float* p = nullptr;
  void reserve(std::size_t n) {
    mem.reset(new float[n + 16]);
    auto addr = reinterpret_cast<std::uintptr_t>(mem.get());
    p = mem.get() + ((64 - addr % 64) % 64) / sizeof(float);
  }
};

/// Per-thread buffers of one block.
struct Workspace {
  int D = 0;
  Scratch qp_, qt_, s_, o_, kp_, vp_, kb_;
  float* Qp;     // [kMaxRows][D]  queries pre-multiplied by the scale, f32
  float* Qt;     // [D][kMaxRows]  the same transposed (AVX-512 and AVX2 paths)
  float* S;      // kMaxRows x kTile scores, then probabilities; score (r, c) at S[r*rs + c*cs]
  float* O;      // [kMaxRows][D]  unnormalised output accumulator
  float* Kp;     // [kTile][D]     key tile converted to f32 (bf16 inputs)
  float* Vp;     // [kTile][D]     value tile converted to f32 (bf16 inputs)
  float* kbuf;   // [D]            one converted key/value row (portable path)
  int rs = kTile, cs = 1;  // layout of S, chosen per block by the tile kernel
  alignas(64) float m[kMaxRows];
  alignas(64) float l[kMaxRows];
  alignas(64) float alpha[kMaxRows];
  explicit Workspace(int d) : D(d) {
    const std::size_t rd = static_cast<std::size_t>(kMaxRows) * d, td = static_cast<std::size_t>(kTile) * d;
    qp_.reserve(rd); qt_.reserve(rd); s_.reserve(static_cast<std::size_t>(kMaxRows) * kTile); o_.reserve(rd);
    kp_.reserve(td); vp_.reserve(td); kb_.reserve(static_cast<std::size_t>(d));
    Qp = qp_.p; Qt = qt_.p; S = s_.p; O = o_.p; Kp = kp_.p; Vp = vp_.p; kbuf = kb_.p;
  }
};

/// One block of query rows of batch `b` sharing kv head `unit` (reverse SQA: output head `unit`):
/// group heads [g0, g0+gc), tokens [t0, t0+tb).
/// Row r is token t0 + r / gc, group head g0 + r % gc.
struct Block {
  std::int64_t b, t0;
  int unit, g0, gc, tb;
  int rows() const { return gc * tb; }
};

/// How blocks are laid out for a problem.
struct Layout {
  int G = 1;       // query heads per kv head (1 for reverse SQA)
  int units = 1;   // kv heads (Hq >= Hkv) or output heads (Hq < Hkv)
  int gc = 1, ng = 1, tb = 1;
  std::int64_t nt = 1, nblocks = 0;

  explicit Layout(const Problem& p) {
    const bool gqa = p.Hq >= p.Hkv;
    G = gqa ? p.Hq / p.Hkv : 1;
    units = gqa ? p.Hkv : p.Ho;
    gc = std::min(G, kMaxRows);
    ng = (G + gc - 1) / gc;
    tb = std::max(1, kMaxRows / gc);
    // Keep enough blocks for the threads when the query run is short (ViT: 197 tokens, 12 heads).
    while (tb > 1 && static_cast<std::int64_t>(p.B) * units * ng * ((p.Tq + tb - 1) / tb) < 4LL * p.threads)
      tb /= 2;
    // Even blocks with rows a multiple of 16 where possible (the AVX-512 kernel puts 16 rows in a
    // vector): 197 tokens -> 80 + 80 + 37, not 96 + 96 + 5 or 3 x 66.
    nt = (p.Tq + tb - 1) / tb;
    const int unit = 16 / std::gcd(gc, 16);
    const std::int64_t even = (p.Tq + nt - 1) / nt;
    tb = static_cast<int>(std::min<std::int64_t>(tb, (even + unit - 1) / unit * unit));
    nt = (p.Tq + tb - 1) / tb;
    nblocks = p.B * units * ng * nt;
  }
  Block block(std::int64_t i, const Problem& p) const {
    Block bl{};
    const std::int64_t ti = i % nt;
    i /= nt;
    const int gi = static_cast<int>(i % ng);
    i /= ng;
    bl.unit = static_cast<int>(i % units);
    bl.b = i / units;
    bl.g0 = gi * gc;
    bl.gc = std::min(gc, G - bl.g0);
    bl.t0 = ti * tb;
    bl.tb = static_cast<int>(std::min<std::int64_t>(tb, p.Tq - bl.t0));
    return bl;
  }
  // Head indices of row r of a block.
  int out_head(const Block& bl, int r, const Problem& p) const {
    return p.Hq >= p.Hkv ? bl.unit * G + bl.g0 + r % bl.gc : bl.unit;
  }
  int q_head(const Block& bl, int r, const Problem& p) const {
    return p.Hq >= p.Hkv ? out_head(bl, r, p) : bl.unit % p.Hq;
  }
};

// Masks one tile of scores (r, c) = S[r*rs + c*cs] for keys j0.. in place: causal and key padding
// replace the score with the fill value, then the additive mask is added (GPT-2 order:
// where(tril), then + mask).
inline void apply_masks(const Problem& p, const Layout& L, const Block& bl, std::int64_t j0, int nc, float* S,
                        const int rs, const int cs) {
  const int nr = bl.rows();
  if (p.causal) {
    for (int r = 0; r < nr; ++r) {
      const std::int64_t first_masked = bl.t0 + r / bl.gc + p.causal_offset + 1 - j0;
      for (std::int64_t c = std::max<std::int64_t>(first_masked, 0); c < nc; ++c) S[r * rs + c * cs] = p.fill;
    }
  }
  if (p.kpm) {
    const std::uint8_t* km = p.kpm + bl.b * p.kpm_sb + j0 * p.kpm_st;
    for (int c = 0; c < nc; ++c)
      if (!km[c * p.kpm_st])
        for (int r = 0; r < nr; ++r) S[r * rs + c * cs] = p.fill;
  }
  if (p.add) {
    for (int r = 0; r < nr; ++r) {
      const int h = p.add_by_out_head ? L.out_head(bl, r, p) : L.q_head(bl, r, p);
      const float* a = p.add + bl.b * p.add_sb + h * p.add_sh + (bl.t0 + r / bl.gc) * p.add_sq + j0 * p.add_sk;
      float* s = S + r * rs;
      for (int c = 0; c < nc; ++c) s[c * cs] += a[c * p.add_sk];
    }
  }
}

// Loads the block's queries into ws.Qp as f32, multiplied by the scale.
inline void pack_queries(const Problem& p, const Layout& L, const Block& bl, Workspace& ws) {
  for (int r = 0; r < bl.rows(); ++r) {
    const std::int64_t off = bl.b * p.q_sb + (bl.t0 + r / bl.gc) * p.q_st +
                             static_cast<std::int64_t>(L.q_head(bl, r, p)) * p.D;
    float* dst = ws.Qp + static_cast<std::int64_t>(r) * p.D;
    for (int d = 0; d < p.D; ++d) dst[d] = load_elem(p.q, off + d, p.bf16_in) * p.scale;
  }
}

// Runs the online softmax of one block over keys [kb, ke); leaves m, l, O in ws.
template <class K>
void run_block(const Problem& p, const Layout& L, const Block& bl, std::int64_t kb, std::int64_t ke, Workspace& ws) {
  const int nr = bl.rows();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < kMaxRows; ++r) ws.m[r] = neg_inf, ws.l[r] = 0.0f;  // vector kernels read padded rows
  std::fill(ws.O, ws.O + static_cast<std::int64_t>(nr) * p.D, 0.0f);
  const std::int64_t last_visible = bl.t0 + bl.tb - 1 + p.causal_offset;  // causal limit of the block
  for (std::int64_t j0 = kb; j0 < ke; j0 += kTile) {
    if (p.causal && j0 > last_visible) {
      // Every row masks this tile and the rest. Masked keys contribute exp(fill - m) == 0 exactly
      // once a row has a score far above `lowest`, so skip then; a row that has seen only masked
      // scores still needs them (HF: a fully masked row averages all keys uniformly).
      bool all_live = true;
      for (int r = 0; r < nr && all_live; ++r) all_live = ws.m[r] > -1e30f;
      if (p.fill_is_neg_inf || all_live) break;
    }
    const int nc = static_cast<int>(std::min<std::int64_t>(kTile, ke - j0));
    K::scores(p, bl, j0, nc, ws);
    apply_masks(p, L, bl, j0, nc, ws.S, ws.rs, ws.cs);
    K::softmax_update(nr, nc, ws);
    K::accumulate_pv(p, bl, j0, nc, ws);
  }
}

// Writes O / l of a finished block to y; a row with l == 0 (every score -inf) outputs zeros.
inline void store_rows(const Problem& p, const Layout& L, const Block& bl, const float* O, const float* l) {
  const std::int64_t row_len = static_cast<std::int64_t>(p.Ho) * p.D;
  for (int r = 0; r < bl.rows(); ++r) {
    const std::int64_t off = (bl.b * p.Tq + bl.t0 + r / bl.gc) * row_len +
                             static_cast<std::int64_t>(L.out_head(bl, r, p)) * p.D;
    const float inv = softmax_row_scale(l[r]);
    const float* o = O + static_cast<std::int64_t>(r) * p.D;
    if (p.bf16_out) {
      std::uint16_t* dst = static_cast<std::uint16_t*>(p.y) + off;
      for (int d = 0; d < p.D; ++d) dst[d] = float_to_bf16_bits(o[d] * inv);
    } else {
      float* dst = static_cast<float*>(p.y) + off;
      for (int d = 0; d < p.D; ++d) dst[d] = o[d] * inv;
    }
  }
}

// Number of key splits: only when blocks alone cannot feed the threads (decode: Tq = 1, few heads).
inline int choose_splits(const Problem& p, const Layout& L) {
  if (p.force_splits > 0) return p.force_splits;
  if (L.nblocks >= p.threads) return 1;
  const std::int64_t want = (p.threads + L.nblocks - 1) / L.nblocks;
  const std::int64_t most = std::max<std::int64_t>(1, p.Tk / (4 * kTile));  // >= 256 keys a split
  return static_cast<int>(std::min(want, most));
}

/// Runs the whole problem with tile kernel K.
template <class K>
void run(const Problem& p) {
  const Layout L(p);
  const int splits = choose_splits(p, L);
  // Per-thread workspaces are allocated inside the regions: a failure there is kept by the guard
  // (every thread still reaches the worksharing loops) and rethrown after the region.
  RegionGuard guard;
  if (splits <= 1) {
#pragma omp parallel num_threads(p.threads)
    {
      std::optional<Workspace> ws;
      guard.run([&] { ws.emplace(p.D); });
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t i = 0; i < L.nblocks; ++i)
        guard.run([&] {
          const Block bl = L.block(i, p);
          pack_queries(p, L, bl, *ws);
          K::prepare_block(p, bl, *ws);
          run_block<K>(p, L, bl, 0, p.Tk, *ws);
          store_rows(p, L, bl, ws->O, ws->l);
        });
    }
    guard.rethrow();
    return;
  }
  // Split-K: each (block, split) leaves (m, l, O) for its key range; a second pass merges them
  // with log-sum-exp weights exp(m_s - max m).
  const std::int64_t per = ((p.Tk + splits - 1) / splits + kTile - 1) / kTile * kTile;
  const std::int64_t tasks = L.nblocks * splits;
  const std::size_t row_stride = static_cast<std::size_t>(kMaxRows) * (p.D + 2);
  std::vector<float> part(static_cast<std::size_t>(tasks) * row_stride);
#pragma omp parallel num_threads(p.threads)
  {
    std::optional<Workspace> ws_slot;
    guard.run([&] { ws_slot.emplace(p.D); });
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t i = 0; i < tasks; ++i) {
      if (!ws_slot) continue;  // this thread's workspace failed: the guard holds the error
      Workspace& ws = *ws_slot;
      const Block bl = L.block(i / splits, p);
      const std::int64_t kb = std::min(p.Tk, (i % splits) * per), ke = std::min(p.Tk, kb + per);
      pack_queries(p, L, bl, ws);
      K::prepare_block(p, bl, ws);
      run_block<K>(p, L, bl, kb, ke, ws);
      float* dst = part.data() + static_cast<std::size_t>(i) * row_stride;
      const int nr = bl.rows();
      std::memcpy(dst, ws.O, sizeof(float) * static_cast<std::size_t>(nr) * p.D);
      std::memcpy(dst + static_cast<std::size_t>(kMaxRows) * p.D, ws.m, sizeof(float) * nr);
      std::memcpy(dst + static_cast<std::size_t>(kMaxRows) * (p.D + 1), ws.l, sizeof(float) * nr);
    }
#pragma omp for schedule(static)
    for (std::int64_t bi = 0; bi < L.nblocks; ++bi) {
      if (!ws_slot) continue;
      Workspace& ws = *ws_slot;
      const Block bl = L.block(bi, p);
      const int nr = bl.rows();
      const std::size_t md = static_cast<std::size_t>(kMaxRows) * p.D;
      for (int r = 0; r < nr; ++r) {
        float M = -std::numeric_limits<float>::infinity();
        for (int s = 0; s < splits; ++s)
          M = std::max(M, part[static_cast<std::size_t>(bi * splits + s) * row_stride + md + r]);
        float* o = ws.O + static_cast<std::int64_t>(r) * p.D;
        std::fill(o, o + p.D, 0.0f);
        float lsum = 0.0f;
        for (int sp = 0; sp < splits; ++sp)  // a split whose scores held a NaN makes the row NaN
          if (std::isnan(part[static_cast<std::size_t>(bi * splits + sp) * row_stride + md + kMaxRows + r]))
            lsum = std::numeric_limits<float>::quiet_NaN();
        if (M != -std::numeric_limits<float>::infinity()) {  // else every score was -inf: zeros
          for (int s = 0; s < splits; ++s) {
            const float* src = part.data() + static_cast<std::size_t>(bi * splits + s) * row_stride;
            const float w = std::exp(src[md + r] - M);  // 0 for a split that saw only -inf
            if (w == 0.0f) continue;
            lsum += w * src[md + kMaxRows + r];
            const float* so = src + static_cast<std::int64_t>(r) * p.D;
            for (int d = 0; d < p.D; ++d) o[d] += w * so[d];
          }
        }
        ws.l[r] = lsum;
      }
      store_rows(p, L, bl, ws.O, ws.l);
    }
  }
  guard.rethrow();
}

}  // namespace
}  // namespace encore::cpu::attn
