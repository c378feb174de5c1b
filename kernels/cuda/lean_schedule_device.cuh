// What each CTA of the CUDA decode attention does, derived on the device from the lengths in device
// memory with kernels/common/lean_schedule.h's arithmetic. Plain C++ apart from the host/device
// markers, so the tests compile it for the host and compare it with lean_schedule.h directly.
//
// On top of lean_schedule.h this adds what is specific to the CUDA kernels:
// - Row blocks. A kv head packs its g = Hq/Hkv query heads times Tq tokens as rows (row r is token
//   r / g, query head h*g + r % g), so every K/V byte is read once. A kernel holds at most RB rows
//   (16 for the tensor-core kernel); larger groups become MT = ceil(rows / RB) "virtual heads" per kv
//   head, scheduled like heads (virtual head v = h * MT + mt).
// - Merge roles for stream-K. A head cut over workers first..last is merged by every worker whose
//   range *ends* in it (first..last-1: the host and the workers wholly inside the head, which have
//   nothing else to do); each merges an equal slice of the head's rows x D outputs, all in the same
//   contributor order. The last worker only publishes its piece and moves on to its next heads.
// - Split (FlashDecoding) items on a grid padded to B x Hv x splits CTAs (the grid is fixed when a
//   CUDA graph is captured; CTAs past a head's piece count exit).
#pragma once

#include <cstdint>

#include "kernels/common/lean_schedule.h"

namespace encore::cuda::dec {

using i64 = std::int64_t;

/// Virtual heads per kv head: row blocks of at most `rb` rows.
ENCORE_LEAN_HD inline int row_blocks(int rows, int rb) { return (rows + rb - 1) / rb; }

/// A length read from device memory, clamped to [0, capacity] so nothing reads past a block table.
ENCORE_LEAN_HD inline i64 clamp_length(i64 len, i64 capacity) {
  return len < 0 ? 0 : (len > capacity ? capacity : len);
}

/// Tiles of one sequence over all its virtual heads (the term of the prefix sums).
ENCORE_LEAN_HD inline i64 sequence_tiles(i64 len, i64 tile, int virtual_heads) {
  return virtual_heads * lean::tiles_for_length(len, tile);
}

/// One piece of work of a lean worker.
struct LeanWork {
  int b = 0, h = 0, mt = 0;  ///< sequence, kv head, row block
  i64 k0 = 0, k1 = 0;        ///< keys [k0, k1)
  bool store = false;        ///< holds the whole head: normalise and write the output
  int slot = -1;             ///< otherwise: partial slot it publishes (lean_partial_slot)
  bool merge = false;        ///< after publishing: wait for the head's pieces, merge a slice
  int first = 0, last = 0;   ///< workers holding the head, in merge order
  int merge_index = 0;       ///< this worker's slice ...
  int mergers = 1;           ///< ... of this many (workers first .. last - 1)
};

ENCORE_LEAN_HD inline LeanWork lean_work(const lean::LeanSegment& sg, int worker, int row_blocks_per_head, i64 tile,
                                         i64 len) {
  LeanWork w;
  w.b = sg.b;
  w.h = sg.h / row_blocks_per_head;
  w.mt = sg.h % row_blocks_per_head;
  w.k0 = sg.tile_begin * tile;
  const i64 end = sg.tile_end * tile;
  w.k1 = end < len ? end : len;
  w.store = sg.host && sg.finishing;
  w.slot = w.store ? -1 : lean::lean_partial_slot(sg, worker);
  w.merge = !sg.finishing;  // the head continues past this worker's range end
  w.first = sg.first_worker;
  w.last = sg.last_worker;
  w.mergers = sg.last_worker - sg.first_worker;
  w.merge_index = worker - sg.first_worker;
  return w;
}

/// Partial slot of contributor i (merge order) of a head held by workers first, first + 1, ...:
/// the host's own piece is its last segment (slot 2w+1), the others' their first (slot 2w).
ENCORE_LEAN_HD inline int contributor_slot(int first, int i) { return i == 0 ? 2 * first + 1 : 2 * (first + i); }

/// Slice [slice_begin(k), slice_begin(k + 1)) of `elements` for merger k of n.
ENCORE_LEAN_HD inline i64 slice_begin(i64 elements, int n, int k) { return elements * k / n; }

/// One CTA of the split (and plain: splits = 1) grid, CTA index = ((b * Hv) + v) * splits + piece.
struct SplitWork {
  int b = 0, h = 0, mt = 0;
  i64 piece = 0, pieces = 0;  ///< pieces of this head (0 for an empty sequence)
  i64 k0 = 0, k1 = 0;         ///< keys of this piece when piece < pieces
};

ENCORE_LEAN_HD inline SplitWork split_work(i64 cta, int virtual_heads, int row_blocks_per_head, int splits, i64 tile,
                                           i64 len) {
  SplitWork s;
  s.piece = cta % splits;
  const i64 head = cta / splits;
  const int v = static_cast<int>(head % virtual_heads);
  s.b = static_cast<int>(head / virtual_heads);
  s.h = v / row_blocks_per_head;
  s.mt = v % row_blocks_per_head;
  const i64 tiles = lean::tiles_for_length(len, tile);
  s.pieces = lean::split_pieces(tiles, splits);
  if (s.piece < s.pieces) {
    s.k0 = lean::split_piece_begin(tiles, s.pieces, s.piece) * tile;
    const i64 end = lean::split_piece_begin(tiles, s.pieces, s.piece + 1) * tile;
    s.k1 = end < len ? end : len;
  }
  return s;
}

}  // namespace encore::cuda::dec
