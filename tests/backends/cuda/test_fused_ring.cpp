// The fused decoder step's weight ring (RingSpace in kernels/cuda/fused_decoder_step_internal.h),
// swept on the host: slices are placed in order with up to kSlots in flight and consumed in order,
// as the kernel does. Every placement must lie inside the ring and clear of the slices still held,
// and a ring with nothing in flight must take any slice up to its size (otherwise the kernel would
// wait forever for a copy it never issued). Runs without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <random>
#include <vector>

#include "kernels/cuda/fused_decoder_step_internal.h"

namespace encore::cuda::fused {
namespace {

struct Held {
  unsigned offset, bytes, span;
};

// Places `sizes` in order through a ring of `cap` bytes; returns false (with a gtest failure) on
// the first violation.
bool run_sequence(const std::vector<unsigned>& sizes, unsigned cap) {
  RingSpace ring;
  std::deque<Held> held;
  std::size_t next = 0;
  while (next < sizes.size()) {
    // Issue as many as fit (at most kSlots in flight), like top_up.
    bool placed_any = false;
    while (next < sizes.size() && held.size() < static_cast<std::size_t>(kSlots)) {
      unsigned offset = 0, span = 0;
      if (!ring.place(sizes[next], cap, offset, span)) break;
      placed_any = true;
      EXPECT_LE(static_cast<unsigned long long>(offset) + sizes[next], cap) << "slice " << next << " past the end";
      for (const Held& h : held)
        if (sizes[next] != 0 && h.bytes != 0)
          EXPECT_TRUE(offset + sizes[next] <= h.offset || h.offset + h.bytes <= offset)
              << "slice " << next << " overlaps a slice still held";
      held.push_back({offset, sizes[next], span});
      ++next;
      if (::testing::Test::HasFailure()) return false;
    }
    if (held.empty()) {
      EXPECT_TRUE(placed_any) << "an empty ring refused slice " << next << " of " << sizes[next] << " bytes (cap "
                              << cap << ")";
      return false;
    }
    ring.release(held.front().span);  // consume the oldest
    held.pop_front();
  }
  return true;
}

TEST(FusedRing, RandomSlicesStayInsideAndApart) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const unsigned cap = 16u * std::uniform_int_distribution<unsigned>(4, 4096)(rng);
    std::vector<unsigned> sizes(std::uniform_int_distribution<int>(1, 64)(rng));
    for (unsigned& b : sizes) {
      const int kind = std::uniform_int_distribution<int>(0, 9)(rng);
      b = kind == 0 ? 0u : kind == 1 ? cap : 16u * std::uniform_int_distribution<unsigned>(1, cap / 16)(rng);
    }
    ASSERT_TRUE(run_sequence(sizes, cap)) << "trial " << trial;
  }
}

// The kernel's own sequence for GPT-2 shapes: per layer the CTA's columns of QKV, proj, cross-Q,
// cross-proj, fc, fc2, over every CTA of a 132-SM grid and ring sizes around the multiples of a
// row (2 * d bytes) where a slice can end exactly at the ring's end.
TEST(FusedRing, DecoderLayerSequencesOnEveryCta) {
  const int grid = 132;
  for (unsigned d : {768u, 1024u, 1280u}) {
    const unsigned f = 4 * d, row = 2 * d;
    auto cols = [&](unsigned n, int b) { return n * (b + 1) / grid - n * b / grid; };
    for (int b = 0; b < grid; ++b) {
      std::vector<unsigned> sizes;
      for (int layer = 0; layer < 4; ++layer)
        for (unsigned s : {cols(3 * d, b) * row, cols(d, b) * row, cols(d, b) * row, cols(d, b) * row,
                           cols(f, b) * row, cols(d, b) * 2 * f})
          sizes.push_back(s);
      const unsigned largest = *std::max_element(sizes.begin(), sizes.end());
      for (unsigned cap = largest / 16 * 16; cap <= 160000u; cap += largest < 40000u ? 1536u : 4096u) {
        if (cap < largest) continue;
        ASSERT_TRUE(run_sequence(sizes, cap)) << "d " << d << " CTA " << b << " cap " << cap;
        ASSERT_TRUE(run_sequence(sizes, cap / row * row)) << "d " << d << " CTA " << b << " cap " << cap / row * row;
      }
    }
  }
}

// The two cases the first version got wrong: a slice ending exactly at the ring's end (the next one
// must start at 0, not past the end), and an empty ring whose head sits where the next slice does
// not fit before the end.
TEST(FusedRing, EdgeCases) {
  RingSpace r;
  unsigned off = 0, span = 0;
  ASSERT_TRUE(r.place(64, 128, off, span));
  ASSERT_TRUE(r.place(64, 128, off, span));
  EXPECT_EQ(off, 64u);
  r.release(64);
  ASSERT_TRUE(r.place(32, 128, off, span));
  EXPECT_EQ(off, 0u) << "a slice after one ending at the ring's end starts at 0";

  RingSpace e;
  ASSERT_TRUE(e.place(80, 128, off, span));
  e.release(span);
  EXPECT_TRUE(e.place(100, 128, off, span)) << "an empty ring takes any slice up to its size";
  EXPECT_EQ(off, 0u);
}

}  // namespace
}  // namespace encore::cuda::fused
