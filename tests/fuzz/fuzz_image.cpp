// libFuzzer target: decode_image on arbitrary bytes, then resize and preprocess_vit of what it
// decodes. Undecodable input must end in encore::Error(invalid_argument), the one code image.h
// documents for decode_image; resize and preprocess_vit are then called with valid arguments and
// must not throw at all. Anything else (a crash, a sanitizer report, another exception, a broken
// invariant) is a bug.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "encore/core/error.h"
#include "encore/io/image.h"

namespace {

using encore::io::Image;
using encore::io::PillowPassOrder;
using encore::io::Resample;

// An invariant broke: stop here so libFuzzer saves the input.
void require(bool ok) {
  if (!ok) __builtin_trap();
}

// Small limits keep each execution fast; the limit checks run all the same.
constexpr std::int32_t kMaxSide = 1024;
constexpr std::int64_t kMaxPixels = std::int64_t{1} << 20;

constexpr Resample kFilters[] = {Resample::lanczos, Resample::bilinear, Resample::bicubic, Resample::box,
                                 Resample::hamming};
constexpr PillowPassOrder kOrders[] = {PillowPassOrder::pillow13, PillowPassOrder::pillow12};

// The resize's size, filter and pass order, taken from the input's last bytes: the first bytes are
// the format's magic, the same in every decodable input, whereas all three decoders ignore what
// follows the image, so the fuzzer can vary these bytes without breaking it.
struct Knobs {
  std::int32_t width, height;
  Resample filter;
  PillowPassOrder order;
};

Knobs knobs_of(std::span<const std::uint8_t> data) {
  auto last = [&](std::size_t k) -> int { return k < data.size() ? data[data.size() - 1 - k] : 0; };
  return {1 + last(0) % 48, 1 + last(1) % 48, kFilters[last(2) % 5], kOrders[last(2) / 5 % 2]};
}

bool well_formed(const Image& im) {
  return im.width >= 1 && im.height >= 1 &&
         im.rgb.size() == static_cast<std::size_t>(im.width) * static_cast<std::size_t>(im.height) * 3;
}

Image check_resize(const Image& image, const Knobs& k) {
  Image out = encore::io::resize(image, k.width, k.height, k.filter, k.order);
  require(out.width == k.width && out.height == k.height && well_formed(out));
  if (k.width == image.width && k.height == image.height) require(out.rgb == image.rgb);  // a copy
  return out;
}

// preprocess_vit with the same resize: pixel_values [3, H, W], every value finite and the
// documented function of the resized byte ((byte / 255 - mean) / std, mean = std = 0.5).
void check_preprocess(const Image& image, const Knobs& k, const Image& resized) {
  encore::io::VitPreprocessOptions options;
  options.width = k.width;
  options.height = k.height;
  options.resample = k.filter;
  options.pass_order = k.order;
  const encore::Tensor t = encore::io::preprocess_vit(image, options);
  require(t.dtype() == encore::DType::F32 && t.shape() == encore::Shape({3, k.height, k.width}));
  require(t.is_contiguous());
  const float* v = t.data_ptr<float>();
  const std::size_t plane = static_cast<std::size_t>(k.width) * static_cast<std::size_t>(k.height);
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t i = 0; i < plane; ++i) {
      const float x = v[c * plane + i];
      const auto level = static_cast<double>(resized.rgb[i * 3 + c]);
      const float expect = (static_cast<float>(level * options.rescale_factor) - 0.5f) / 0.5f;
      require(std::isfinite(x) && x >= -1.0f && x <= 1.0f && x == expect);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);
  encore::io::ImageLimits limits;
  limits.max_side = kMaxSide;
  limits.max_pixels = kMaxPixels;
  std::optional<Image> image;
  try {
    image.emplace(encore::io::decode_image(std::as_bytes(input), "fuzz", limits));
  } catch (const encore::Error& e) {
    require(e.code() == encore::ErrorCode::invalid_argument);
    return 0;
  }
  require(well_formed(*image) && image->width <= kMaxSide && image->height <= kMaxSide &&
          std::int64_t{image->width} * image->height <= kMaxPixels);
  const Knobs k = knobs_of(input);
  check_preprocess(*image, k, check_resize(*image, k));
  return 0;
}
