// CPU decode attention over a paged KV cache (see DecodeAttentionAttrs): validation, the three
// work partitions of kernels/common/lean_schedule.h, the merge of partial softmax states and the
// portable segment loop (any head dim, any float dtype).
//
// Determinism: a segment's result depends only on its key range, never on the thread that runs
// it, and partial states are merged in a fixed order (split: piece order; lean: worker order, by
// the head's host). So for a given strategy and ctx.num_threads the output is bitwise the same on
// every run; plain and split may therefore hand out their items dynamically. Lean's partition is a
// function of ctx.num_threads (G workers); the OpenMP team runs workers tid, tid + team, ... and
// merges after a barrier, so even a smaller team than G gives the same bits (no spin-waits that a
// missing thread could deadlock).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/check.h"
#include "kernels/common/decode_checks.h"
#include "kernels/common/lean_schedule.h"
#include "kernels/common/softmax_sum.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/decode_attention_internal.h"
#include "kernels/cpu/omp_guard.h"

namespace encore::cpu {
namespace dec {
namespace {

using i64 = std::int64_t;

/// Smallest tile: a multiple of the block size of at least one softmax step.
constexpr i64 kMinTileTokens = kChunk;

inline float load_f(const void* base, i64 i, Elem t) {
  switch (t) {
    case Elem::f32: return static_cast<const float*>(base)[i];
    case Elem::bf16: return bfloat16_to_float(static_cast<const BFloat16*>(base)[i]);
    case Elem::f16: return half_to_float(static_cast<const Half*>(base)[i]);
  }
  return 0.0f;
}

Elem elem_of(DType t) { return t == DType::F32 ? Elem::f32 : t == DType::BF16 ? Elem::bf16 : Elem::f16; }

// Plain C++ segment loop with the same structure as the AVX-512 one.
void run_segment_portable(const Problem& p, int b, int h, i64 k0, i64 k1, const Scratch& ws) {
  const int rows = p.rows, D = p.D, bs = p.block_size;
  const i64 len = p.lens[b];
  const std::int32_t* table = p.table + b * p.max_blocks;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < rows; ++r) {
    const i64 off = b * p.q_sb + (r / p.g) * p.q_st + static_cast<i64>(h * p.g + r % p.g) * D;
    for (int d = 0; d < D; ++d) ws.q[static_cast<i64>(r) * D + d] = load_f(p.q, off + d, p.q_type) * p.scale;
    ws.m[r] = neg_inf, ws.l[r] = 0.0f;
    std::fill(ws.o + static_cast<i64>(r) * D, ws.o + static_cast<i64>(r + 1) * D, 0.0f);
  }
  for (i64 j0 = k0; j0 < k1; j0 += kChunk) {
    const int nc = static_cast<int>(std::min<i64>(kChunk, k1 - j0));
    for (int c = 0; c < nc; ++c) {  // convert the step's keys and values once
      const i64 j = j0 + c, blk = table[j / bs], off = j % bs;
      const i64 ko = blk * p.k_sn + h * p.k_sh + off * p.k_st, vo = blk * p.v_sn + h * p.v_sh + off * p.v_st;
      for (int d = 0; d < D; ++d) {
        ws.kc[static_cast<i64>(c) * D + d] = load_f(p.k, ko + d, p.kv_type);
        ws.vc[static_cast<i64>(c) * D + d] = load_f(p.v, vo + d, p.kv_type);
      }
    }
    for (int r = 0; r < rows; ++r) {
      float* s = ws.s + static_cast<i64>(r) * kChunk;
      const float* q = ws.q + static_cast<i64>(r) * D;
      // Causal: row r (token t = r / g) sits at position len - Tq + t and sees keys up to it.
      const i64 visible = std::min<i64>(nc, len - p.Tq + r / p.g + 1 - j0);
      float mx = neg_inf;
      for (int c = 0; c < nc; ++c) {
        float acc = neg_inf;
        if (c < visible) {
          acc = 0.0f;
          for (int d = 0; d < D; ++d) acc += q[d] * ws.kc[static_cast<i64>(c) * D + d];
        }
        s[c] = acc;
        mx = std::max(mx, acc);
      }
      const float m_new = std::max(ws.m[r], mx);
      float* o = ws.o + static_cast<i64>(r) * D;
      if (m_new == neg_inf) {  // every key so far is masked for this row (a NaN score: a NaN row)
        if (std::any_of(s, s + nc, [](float v) { return std::isnan(v); })) ws.l[r] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      const float alpha = ws.m[r] == neg_inf ? 0.0f : std::exp(ws.m[r] - m_new);
      float sum = 0.0f;
      for (int d = 0; d < D; ++d) o[d] *= alpha;
      for (int c = 0; c < nc; ++c) {
        const float e = s[c] == neg_inf ? 0.0f : std::exp(s[c] - m_new);
        sum += e;
        for (int d = 0; d < D; ++d) o[d] += e * ws.vc[static_cast<i64>(c) * D + d];
      }
      ws.l[r] = ws.l[r] * alpha + sum;
      ws.m[r] = m_new;
    }
  }
}

using SegmentFn = void (*)(const Problem&, int, int, i64, i64, const Scratch&);

// Per-thread scratch, kept across calls (OpenMP reuses its threads).
const Scratch& thread_scratch(const Problem& p) {
  thread_local std::vector<float> buf;
  thread_local Scratch ws;
  const auto up16 = [](i64 n) { return (n + 15) / 16 * 16; };
  const i64 rd = up16(static_cast<i64>(p.rows) * p.D), r1 = up16(p.rows), rs = up16(static_cast<i64>(p.rows) * kChunk),
            cd = up16(static_cast<i64>(kChunk) * p.D);
  const i64 need = 2 * rd + 3 * r1 + rs + 2 * cd + 16;
  if (static_cast<i64>(buf.size()) < need) buf.assign(static_cast<std::size_t>(need), 0.0f);
  float* a = buf.data() + (16 - reinterpret_cast<std::uintptr_t>(buf.data()) / sizeof(float) % 16) % 16;
  ws.q = a, a += rd;
  ws.o = a, a += rd;
  ws.m = a, a += r1;
  ws.l = a, a += r1;
  ws.alpha = a, a += r1;
  ws.s = a, a += rs;
  ws.kc = a, a += cd;
  ws.vc = a;
  return ws;
}

/// The output tensor, resolved.
struct Out {
  void* y;
  DType dtype;
};

// y rows of head (b, h) = o / l.
void store_rows(const Problem& p, const Out& out, int b, int h, const float* o, const float* l) {
  for (int r = 0; r < p.rows; ++r) {
    const i64 off = ((static_cast<i64>(b) * p.Tq + r / p.g) * p.Hq + h * p.g + r % p.g) * p.D;
    const float inv = softmax_row_scale(l[r]);
    const float* src = o + static_cast<i64>(r) * p.D;
    if (out.dtype == DType::F32) {
      float* dst = static_cast<float*>(out.y) + off;
      for (int d = 0; d < p.D; ++d) dst[d] = src[d] * inv;
    } else if (out.dtype == DType::BF16) {
      BFloat16* dst = static_cast<BFloat16*>(out.y) + off;
      for (int d = 0; d < p.D; ++d) dst[d] = float_to_bfloat16(src[d] * inv);
    } else {
      Half* dst = static_cast<Half*>(out.y) + off;
      for (int d = 0; d < p.D; ++d) dst[d] = float_to_half(src[d] * inv);
    }
  }
}

// A partial state in a workspace slot: m [rows], l [rows], O [rows][D].
i64 slot_floats(const Problem& p) { return static_cast<i64>(p.rows) * (p.D + 2); }

void save_partial(const Problem& p, const Scratch& ws, float* slot) {
  std::memcpy(slot, ws.m, sizeof(float) * p.rows);
  std::memcpy(slot + p.rows, ws.l, sizeof(float) * p.rows);
  std::memcpy(slot + 2 * p.rows, ws.o, sizeof(float) * p.rows * p.D);
}

// Merges n partial states of head (b, h) in the given order and stores the result.
void merge_store(const Problem& p, const Out& out, int b, int h, const float* const* parts, int n, const Scratch& ws) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < p.rows; ++r) {
    float M = neg_inf;
    for (int i = 0; i < n; ++i) M = std::max(M, parts[i][r]);
    float* o = ws.o + static_cast<i64>(r) * p.D;
    std::fill(o, o + p.D, 0.0f);
    float l = 0.0f;
    for (int i = 0; i < n; ++i)  // a piece whose scores held a NaN makes the row NaN
      if (std::isnan(parts[i][p.rows + r])) l = std::numeric_limits<float>::quiet_NaN();
    for (int i = 0; i < n && M != neg_inf; ++i) {
      if (parts[i][r] == neg_inf) continue;  // this piece saw only masked keys for the row
      const float w = std::exp(parts[i][r] - M);
      l += w * parts[i][p.rows + r];
      const float* po = parts[i] + 2 * p.rows + static_cast<i64>(r) * p.D;
      for (int d = 0; d < p.D; ++d) o[d] += w * po[d];
    }
    ws.l[r] = l;
  }
  store_rows(p, out, b, h, ws.o, ws.l);
}

std::vector<float>& partial_buffer(i64 floats) {
  thread_local std::vector<float> buf;
  if (static_cast<i64>(buf.size()) < floats) buf.resize(static_cast<std::size_t>(floats));
  return buf;
}

// ---- strategies ------------------------------------------------------------------------------------

void run_plain(const Problem& p, const Out& out, int threads, SegmentFn seg) {
  const i64 items = static_cast<i64>(p.B) * p.Hkv;
  RegionGuard guard;
#pragma omp parallel num_threads(static_cast<int>(std::min<i64>(threads, items)))
  {
    const Scratch* ws = nullptr;
    guard.run([&] { ws = &thread_scratch(p); });
#pragma omp for schedule(dynamic, 1)
    for (i64 i = 0; i < items; ++i)
      guard.run([&] {
        const int b = static_cast<int>(i / p.Hkv), h = static_cast<int>(i % p.Hkv);
        seg(p, b, h, 0, p.lens[b], *ws);
        store_rows(p, out, b, h, ws->o, ws->l);
      });
  }
  guard.rethrow();
}

void run_split(const Problem& p, const Out& out, int threads, int num_splits, i64 T, SegmentFn seg) {
  std::vector<i64> tiles(p.B), start(p.B + 1, 0);
  i64 max_tiles = 0;
  for (int b = 0; b < p.B; ++b) tiles[b] = lean::tiles_for_length(p.lens[b], T), max_tiles = std::max(max_tiles, tiles[b]);
  const int s = num_splits > 0 ? num_splits
                               : lean::num_splits_heuristic(static_cast<i64>(p.B) * p.Hkv, threads, max_tiles, 128);
  for (int b = 0; b < p.B; ++b) start[b + 1] = start[b] + p.Hkv * lean::split_pieces(tiles[b], s);
  const i64 items = start[p.B], heads = static_cast<i64>(p.B) * p.Hkv, sf = slot_floats(p);
  float* parts = partial_buffer(items * sf).data();
  RegionGuard guard;
#pragma omp parallel num_threads(threads)
  {
    const Scratch* ws = nullptr;
    guard.run([&] { ws = &thread_scratch(p); });
#pragma omp for schedule(dynamic, 1)
    for (i64 i = 0; i < items; ++i)
      guard.run([&] {
        const lean::SplitItem it = lean::split_item_at(start.data(), tiles.data(), p.B, s, i);
        seg(p, it.b, it.h, it.tile_begin * T, std::min(it.tile_end * T, p.lens[it.b]), *ws);
        if (it.pieces == 1)
          store_rows(p, out, it.b, it.h, ws->o, ws->l);
        else
          save_partial(p, *ws, parts + i * sf);
      });  // implicit barrier: every piece is saved before any merge
#pragma omp for schedule(dynamic, 1)
    for (i64 hi = 0; hi < heads; ++hi)
      guard.run([&] {
        const int b = static_cast<int>(hi / p.Hkv), h = static_cast<int>(hi % p.Hkv);
        const i64 pieces = lean::split_pieces(tiles[b], s);
        if (pieces <= 1) return;
        std::vector<const float*> list(static_cast<std::size_t>(pieces));
        for (i64 k = 0; k < pieces; ++k) list[k] = parts + (start[b] + h * pieces + k) * sf;
        merge_store(p, out, b, h, list.data(), static_cast<int>(pieces), *ws);
      });
  }
  guard.rethrow();
}

void run_lean(const Problem& p, const Out& out, int G, i64 T, SegmentFn seg) {
  std::vector<i64> start(p.B + 1, 0);
  for (int b = 0; b < p.B; ++b) start[b + 1] = start[b] + p.Hkv * lean::tiles_for_length(p.lens[b], T);
  const lean::LeanSplit split = lean::make_lean_split(start[p.B], G);
  const i64 sf = slot_floats(p);
  float* parts = partial_buffer(2 * G * sf).data();
  std::vector<lean::LeanSegment> last(G);
  std::vector<char> has_last(G, 0);
  RegionGuard guard;
#pragma omp parallel num_threads(G)
  {
    const int team = omp_get_num_threads(), tid = omp_get_thread_num();
    const Scratch* ws = nullptr;
    guard.run([&] { ws = &thread_scratch(p); });
    for (int w = tid; w < G; w += team)
      guard.run([&] {
        i64 pos = lean::lean_begin(split, w);
        const i64 end = lean::lean_end(split, w);
        lean::LeanSegment sg;
        while (lean::lean_next_segment(start.data(), p.B, p.Hkv, split, pos, end, sg)) {
          seg(p, sg.b, sg.h, sg.tile_begin * T, std::min(sg.tile_end * T, p.lens[sg.b]), *ws);
          if (sg.host && sg.finishing)
            store_rows(p, out, sg.b, sg.h, ws->o, ws->l);
          else
            save_partial(p, *ws, parts + lean::lean_partial_slot(sg, w) * sf);
          last[w] = sg, has_last[w] = 1;
        }
      });
#pragma omp barrier
    // Each host merges its head's pieces: its own (slot 1), then workers host+1 .. last (slot 0).
    for (int w = tid; w < G; w += team)
      guard.run([&] {
        if (!has_last[w] || !last[w].host || last[w].finishing) return;
        const lean::LeanSegment& sg = last[w];
        std::vector<int> workers(static_cast<std::size_t>(sg.last_worker - sg.first_worker + 1));
        const int n = lean::lean_contributors(sg, workers.data(), static_cast<int>(workers.size()));
        std::vector<const float*> list(static_cast<std::size_t>(n));
        for (int k = 0; k < n; ++k) list[k] = parts + (k == 0 ? 2 * workers[k] + 1 : 2 * workers[k]) * sf;
        merge_store(p, out, sg.b, sg.h, list.data(), n, *ws);
      });
  }
  guard.rethrow();
}

bool is_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

Tensor last_dim_contiguous(const Tensor& t) {
  return (t.dim(-1) <= 1 || t.strides()[t.rank() - 1] == 1) ? t : t.contiguous();
}

}  // namespace

DecodeStrategy choose_strategy(const std::int64_t* tiles, int B, int Hkv, int threads) {
  // Plain streams whole heads (no partial states, no merge) but its finishing time is that of
  // the busiest worker; lean always finishes after ceil(W / G) tiles plus a small merge. So
  // estimate plain's makespan by replaying its dynamic schedule (each head goes to the worker
  // that frees up first) and keep plain only when it is within ~1.5 % of lean. Measured on the
  // 2-core Xeon (docs/benchmarks/decode_attention.md): lean's merge and barrier cost less than
  // that, and split never beats lean (FlashAttention-2's rule splits only when B * Hkv < 0.8 G).
  if (threads <= 1) return DecodeStrategy::plain;
  std::vector<i64> load(static_cast<std::size_t>(threads), 0);
  i64 total = 0;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h) {
      *std::min_element(load.begin(), load.end()) += tiles[b];
      total += tiles[b];
    }
  if (total <= 1) return DecodeStrategy::plain;
  const i64 plain = *std::max_element(load.begin(), load.end()), lean = lean::ceil_div(total, threads);
  return plain * 64 <= lean * 65 ? DecodeStrategy::plain : DecodeStrategy::lean;
}

void decode_attention_impl(const Tensor& q_in, const Tensor& kc_in, const Tensor& vc_in, const Tensor& block_table,
                           const Tensor& lengths, const DecodeAttentionAttrs& attrs, const Tensor& y,
                           const CpuContext& ctx, const Options& opts) {
  const char* op = "decode_attention";
  const std::pair<const char*, const Tensor*> all[] = {{"q", &q_in},         {"k_cache", &kc_in}, {"v_cache", &vc_in},
                                                       {"block_table", &block_table}, {"lengths", &lengths}, {"output", &y}};
  for (const auto& [name, t] : all) {
    ENCORE_CHECK(t->defined(), invalid_argument, "{}: {} is undefined", op, name);
    ENCORE_CHECK(t->device().is_cpu(), invalid_argument, "{}: {} is on {}, expected the CPU", op, name,
                 t->device().str());
  }
  ENCORE_CHECK(is_float(q_in.dtype()) && is_float(y.dtype()), unsupported,
               "{}: q ({}) and the output ({}) must be f32, bf16 or f16", op, dtype_name(q_in.dtype()),
               dtype_name(y.dtype()));
  ENCORE_CHECK(is_float(kc_in.dtype()), unsupported, "{}: k_cache ({}) must be f32, bf16 or f16", op,
               dtype_name(kc_in.dtype()));
  const decode_checks::DecodeDims dims =
      decode_checks::check_decode_attention(op, q_in, kc_in, vc_in, block_table, lengths, attrs, y);
  const int Hq = dims.Hq, Hkv = dims.Hkv;
  const i64 num_blocks = dims.num_blocks, bs = dims.block_size, D = dims.D, B = dims.B, Tq = dims.Tq;

  // Host copies of the tables, checked so the loops never read outside the cache.
  const i64 max_blocks = dims.max_blocks;
  std::vector<std::int32_t> table(static_cast<std::size_t>(B * max_blocks));
  std::vector<i64> lens(static_cast<std::size_t>(B));
  const auto* tp = block_table.data_ptr<std::int32_t>();
  const auto* lp = lengths.data_ptr<std::int32_t>();
  for (i64 b = 0; b < B; ++b) {
    const i64 len = lp[b * lengths.strides()[0]];
    ENCORE_CHECK(len >= Tq, invalid_argument, "{}: lengths[{}] = {} is less than the {} query tokens", op, b, len, Tq);
    ENCORE_CHECK(len <= max_blocks * bs, invalid_argument,
                 "{}: lengths[{}] = {} exceeds the capacity of block_table ({} blocks x {} tokens)", op, b, len,
                 max_blocks, bs);
    lens[b] = len;
    for (i64 i = 0; i < max_blocks; ++i) {
      const std::int32_t blk = tp[b * block_table.strides()[0] + i * block_table.strides()[1]];
      if (i < (len + bs - 1) / bs)
        ENCORE_CHECK(blk >= 0 && blk < num_blocks, invalid_argument,
                     "{}: block_table[{}][{}] = {} is not a cache block (num_blocks {}) but sequence {} holds {} tokens",
                     op, b, i, blk, num_blocks, b, len);
      table[b * max_blocks + i] = blk;
    }
  }
  if (B == 0 || Tq == 0) return;

  const Tensor q = last_dim_contiguous(q_in), kc = last_dim_contiguous(kc_in), vc = last_dim_contiguous(vc_in);
  Problem p{};
  p.q = q.data(), p.q_type = elem_of(q.dtype()), p.q_sb = q.strides()[0], p.q_st = q.strides()[1];
  p.k = kc.data(), p.v = vc.data(), p.kv_type = elem_of(kc.dtype());
  p.k_sn = kc.strides()[0], p.k_sh = kc.strides()[1], p.k_st = kc.strides()[2];
  p.v_sn = vc.strides()[0], p.v_sh = vc.strides()[1], p.v_st = vc.strides()[2];
  p.table = table.data(), p.max_blocks = max_blocks, p.lens = lens.data();
  p.B = static_cast<int>(B), p.Tq = static_cast<int>(Tq), p.Hq = Hq, p.Hkv = Hkv, p.g = Hq / Hkv;
  p.D = static_cast<int>(D), p.rows = p.g * p.Tq, p.block_size = static_cast<int>(bs);
  p.scale = attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(D));
  const Out out{y.data(), y.dtype()};

  const SegmentFn seg = (!opts.force_portable && D % 16 == 0 && has_avx512()) ? run_segment_avx512 : run_segment_portable;
  const int threads = std::max(1, ctx.num_threads);
  const i64 T = lean::tile_tokens(bs, opts.tile_tokens > 0 ? opts.tile_tokens : kMinTileTokens);
  DecodeStrategy strategy = attrs.strategy;
  if (strategy == DecodeStrategy::automatic) {
    std::vector<i64> tiles(static_cast<std::size_t>(B));
    for (i64 b = 0; b < B; ++b) tiles[b] = lean::tiles_for_length(lens[b], T);
    strategy = choose_strategy(tiles.data(), p.B, Hkv, threads);
  }
  switch (strategy) {
    case DecodeStrategy::split: return run_split(p, out, threads, attrs.num_splits, T, seg);
    case DecodeStrategy::lean: return run_lean(p, out, threads, T, seg);
    default: return run_plain(p, out, threads, seg);
  }
}

}  // namespace dec

void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& lengths, const DecodeAttentionAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  dec::decode_attention_impl(q, k_cache, v_cache, block_table, lengths, attrs, y, ctx, dec::Options{});
}

}  // namespace encore::cpu
