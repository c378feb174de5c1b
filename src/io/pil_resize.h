// Internal: Pillow's separable resampling (ImagingResample) for interleaved 8-bit images.
#pragma once

#include <cstdint>

#include "encore/io/image.h"

namespace encore::io::detail {

/// Resizes `src` (src_w x src_h pixels of `channels` interleaved bytes, rows packed) into `dst`
/// (dst_w x dst_h, same layout), reproducing Pillow's uint8 results exactly. Sizes must be >= 1
/// (the caller validates); channels 1..4.
void pil_resample(const std::uint8_t* src, int src_w, int src_h, int channels, std::uint8_t* dst, int dst_w,
                  int dst_h, Resample filter, PillowPassOrder order);

/// Whether Pillow 13+ runs the vertical pass first for this resize (found by comparing with
/// Pillow 13.0 on thousands of sizes; Pillow 12 and earlier never do).
bool pillow13_vertical_first(int src_w, int src_h, int dst_w, int dst_h) noexcept;

}  // namespace encore::io::detail
