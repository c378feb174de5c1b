// Work partitions of decode attention over a paged KV cache, shared by the CPU kernel and (later)
// the CUDA kernel: header-only, C++17, no allocation, no standard-library containers, every
// function usable in host and device code. Background: the LeanAttention (stream-K) and
// FlashDecoding notes of the decode-attention spec; measurements: docs/benchmarks/decode_attention.md.
//
// Vocabulary. A *tile* is T consecutive keys of one (sequence b, kv head h), T a multiple of the
// cache block size so a tile never straddles a block. Sequence b has tiles_b = ceil(len_b / T)
// tiles per head. All tiles are numbered globally in (b, h, tile) order; seq_start[b] is the
// first global tile of sequence b (prefix sums of Hkv * tiles_b, seq_start[B] = W).
//
// Strategies:
// - lean (stream-K): the W tiles are cut into G contiguous ranges of ceil(W/G) or ceil(W/G) - 1
//   tiles (the first `high` workers take the longer ones), ranges cross head boundaries. A range
//   is a list of segments, each one piece of one head. The *host* of a head is the worker holding
//   its first tile, the *finishing* worker holds its last. A head split over several workers is
//   held by the contiguous run of workers first_worker..last_worker; its partial results are
//   merged by the host in exactly that order, which makes the result bitwise reproducible.
//   Only a worker's first segment can be a non-host piece and only its last segment can be a
//   host-but-not-finishing piece, so two partial slots per worker are enough.
// - split (FlashDecoding): each (b, h) is cut into s_b = min(s, tiles_b) pieces of near-equal
//   tile counts; pieces are independent work items merged in piece order. s comes from the
//   caller or from num_splits_heuristic (FlashAttention-2's 85 % wave-efficiency rule).
// - plain: one work item per (b, h).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ENCORE_LEAN_HD __host__ __device__
#else
#define ENCORE_LEAN_HD
#endif

namespace encore {
namespace lean {

using i64 = std::int64_t;

ENCORE_LEAN_HD inline i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }

/// Tokens per tile: the smallest multiple of block_size that is >= min_tokens (a tile never
/// straddles a cache block).
ENCORE_LEAN_HD inline i64 tile_tokens(i64 block_size, i64 min_tokens) {
  const i64 k = ceil_div(min_tokens, block_size);
  return block_size * (k < 1 ? 1 : k);
}

/// Tiles of one head of a sequence of `length` tokens.
ENCORE_LEAN_HD inline i64 tiles_for_length(i64 length, i64 tile) { return length <= 0 ? 0 : ceil_div(length, tile); }

/// The index of the sequence that holds global unit `g` given prefix sums start[0..B] (start[B]
/// is the total). Sequences holding no units (equal consecutive starts) are skipped. Binary
/// search, so ragged batches cost O(log B).
ENCORE_LEAN_HD inline int sequence_of(const i64* start, int B, i64 g) {
  int lo = 0, hi = B;  // invariant: start[lo] <= g < start[hi]
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (start[mid] <= g)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// ---- lean (stream-K) ---------------------------------------------------------------------------

/// The even split of W tiles over G workers.
struct LeanSplit {
  i64 total = 0;    ///< W
  int workers = 1;  ///< G
  i64 per = 0;      ///< ceil(W / G): tiles of a "high" worker; the others get per - 1
  i64 high = 0;     ///< workers 0 .. high-1 take `per` tiles
};

ENCORE_LEAN_HD inline LeanSplit make_lean_split(i64 total_tiles, int workers) {
  LeanSplit s;
  s.total = total_tiles < 0 ? 0 : total_tiles;
  s.workers = workers < 1 ? 1 : workers;
  s.per = ceil_div(s.total, s.workers);
  s.high = s.total - (s.per - 1) * s.workers;  // in [1, G] when W > 0
  if (s.total == 0) s.per = 0, s.high = 0;
  return s;
}

/// First global tile of worker w.
ENCORE_LEAN_HD inline i64 lean_begin(const LeanSplit& s, int w) {
  if (s.total == 0) return 0;
  return w < s.high ? w * s.per : s.high * s.per + (w - s.high) * (s.per - 1);
}
/// One past the last global tile of worker w (== lean_begin for an idle worker).
ENCORE_LEAN_HD inline i64 lean_end(const LeanSplit& s, int w) { return w + 1 >= s.workers ? s.total : lean_begin(s, w + 1); }

/// The worker that holds global tile g (0 <= g < W).
ENCORE_LEAN_HD inline int lean_worker_of(const LeanSplit& s, i64 g) {
  const i64 split_point = s.high * s.per;
  if (g < split_point) return static_cast<int>(g / s.per);
  return static_cast<int>(s.high + (g - split_point) / (s.per - 1));  // per >= 2 here
}

/// One piece of one head inside a worker's range.
struct LeanSegment {
  int b = 0, h = 0;
  i64 tile_begin = 0, tile_end = 0;  ///< tiles of head (b, h): [tile_begin, tile_end)
  i64 head_tiles = 0;                ///< tiles_b
  i64 global_begin = 0;              ///< global index of tile_begin
  bool host = false;                 ///< holds tile 0 of the head
  bool finishing = false;            ///< holds the head's last tile
  int first_worker = 0;              ///< workers first_worker..last_worker hold the head, in
  int last_worker = 0;               ///< merge order; first_worker is the host
};

/// Decodes the segment starting at global tile `pos` of a range ending at `end` (pos < end).
ENCORE_LEAN_HD inline LeanSegment lean_segment_at(const i64* seq_start, int B, int Hkv, const LeanSplit& s, i64 pos,
                                                  i64 end) {
  LeanSegment seg;
  seg.b = sequence_of(seq_start, B, pos);
  const i64 tiles = (seq_start[seg.b + 1] - seq_start[seg.b]) / Hkv;
  const i64 within = pos - seq_start[seg.b];
  seg.h = static_cast<int>(within / tiles);
  seg.head_tiles = tiles;
  seg.tile_begin = within % tiles;
  const i64 head_first = pos - seg.tile_begin, head_end = head_first + tiles;
  const i64 stop = end < head_end ? end : head_end;
  seg.tile_end = seg.tile_begin + (stop - pos);
  seg.global_begin = pos;
  seg.host = seg.tile_begin == 0;
  seg.finishing = stop == head_end;
  seg.first_worker = lean_worker_of(s, head_first);
  seg.last_worker = lean_worker_of(s, head_end - 1);
  return seg;
}

/// Iterates the segments of a worker: start with pos = lean_begin(s, w); each call fills `out`
/// and advances pos; returns false when the range is done.
ENCORE_LEAN_HD inline bool lean_next_segment(const i64* seq_start, int B, int Hkv, const LeanSplit& s, i64& pos,
                                             i64 end, LeanSegment& out) {
  if (pos >= end) return false;
  out = lean_segment_at(seq_start, B, Hkv, s, pos, end);
  pos = out.global_begin + (out.tile_end - out.tile_begin);
  return true;
}

/// Fills workers[0..n) with the workers holding a head, in merge order (host first); returns n.
/// The run is contiguous, so this is first_worker, first_worker + 1, ..., last_worker.
ENCORE_LEAN_HD inline int lean_contributors(const LeanSegment& seg, int* workers, int capacity) {
  int n = 0;
  for (int w = seg.first_worker; w <= seg.last_worker && n < capacity; ++w) workers[n++] = w;
  return n;
}

/// Partial slots: each worker owns two. Slot 0 takes its first segment when that is not a host
/// piece; slot 1 takes its last segment when that is a host piece of a head it does not finish.
/// Host-and-finishing segments write the output directly and need no slot.
ENCORE_LEAN_HD inline int lean_partial_slot(const LeanSegment& seg, int worker) {
  return seg.host ? 2 * worker + 1 : 2 * worker;
}

/// Upper bound on the pieces one head is cut into (sizes a workspace that is per head).
ENCORE_LEAN_HD inline i64 lean_max_pieces(const LeanSplit& s, i64 max_head_tiles) {
  if (s.per <= 1) return max_head_tiles;
  return 1 + ceil_div(max_head_tiles - 1, s.per - 1) + 1;
}

// ---- split (FlashDecoding) ---------------------------------------------------------------------

/// Whether s splits change the tiles per split compared with s - 1 (FlashAttention-2 skips the
/// others: they add merge work and balance nothing).
ENCORE_LEAN_HD inline bool split_eligible(i64 n_blocks, i64 s) {
  return s == 1 || ceil_div(n_blocks, s) != ceil_div(n_blocks, s - 1);
}

/// Wave efficiency of work * s items over `slots` workers: w / ceil(w), w = work * s / slots.
ENCORE_LEAN_HD inline double split_efficiency(i64 work, i64 slots, i64 s) {
  const double waves = static_cast<double>(work * s) / static_cast<double>(slots);
  return waves / static_cast<double>(ceil_div(work * s, slots));
}

/// FlashAttention-2's num_splits_heuristic: `work` = independent (sequence, head) items, `slots`
/// = workers that run at once, `n_blocks` = tiles of the longest head. Returns 1 when the items
/// alone fill 80 % of the slots; otherwise, among split counts s <= min(max_splits, slots,
/// n_blocks) that change the tiles per split, the smallest whose wave efficiency reaches 85 % of
/// the best.
ENCORE_LEAN_HD inline int num_splits_heuristic(i64 work, i64 slots, i64 n_blocks, int max_splits) {
  if (work <= 0 || slots <= 0 || n_blocks <= 0) return 1;
  if (static_cast<double>(work) >= 0.8 * static_cast<double>(slots)) return 1;
  i64 cap = max_splits;
  if (slots < cap) cap = slots;
  if (n_blocks < cap) cap = n_blocks;
  double best = 0.0;
  for (i64 s = 1; s <= cap; ++s)
    if (split_eligible(n_blocks, s) && split_efficiency(work, slots, s) > best) best = split_efficiency(work, slots, s);
  for (i64 s = 1; s <= cap; ++s)
    if (split_eligible(n_blocks, s) && split_efficiency(work, slots, s) >= 0.85 * best) return static_cast<int>(s);
  return 1;
}

/// Pieces of a head of `tiles` tiles under `splits` splits (never more pieces than tiles).
ENCORE_LEAN_HD inline i64 split_pieces(i64 tiles, int splits) { return tiles < splits ? tiles : splits; }

/// Tiles [begin, end) of piece i of `pieces` over `tiles` tiles: floor(i * tiles / pieces).
ENCORE_LEAN_HD inline i64 split_piece_begin(i64 tiles, i64 pieces, i64 i) { return i * tiles / pieces; }

/// One work item of the split strategy (or of plain, with one piece per head).
struct SplitItem {
  int b = 0, h = 0;
  i64 piece = 0, pieces = 1;         ///< piece index within the head, pieces of the head
  i64 tile_begin = 0, tile_end = 0;  ///< tiles of the head
};

/// Decodes item `g` given item_start (prefix sums of Hkv * pieces_b, item_start[B] = total) and
/// the tiles per head of each sequence. Items of one head are consecutive, in piece order.
ENCORE_LEAN_HD inline SplitItem split_item_at(const i64* item_start, const i64* seq_tiles, int B, int splits, i64 g) {
  SplitItem it;
  it.b = sequence_of(item_start, B, g);
  const i64 tiles = seq_tiles[it.b];
  it.pieces = split_pieces(tiles, splits);
  const i64 within = g - item_start[it.b];
  it.h = static_cast<int>(within / it.pieces);
  it.piece = within % it.pieces;
  it.tile_begin = split_piece_begin(tiles, it.pieces, it.piece);
  it.tile_end = split_piece_begin(tiles, it.pieces, it.piece + 1);
  return it;
}

}  // namespace lean
}  // namespace encore
