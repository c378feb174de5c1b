// encore — images for vision models: decoding (JPEG, PNG, BMP), Pillow-exact resizing, and the
// ViT preprocessing of Hugging Face's ViTImageProcessor (PIL path).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>
#include <vector>

#include "encore/core/tensor.h"

namespace encore::io {

/// An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B (HWC).
struct Image {
  std::int32_t width = 0;
  std::int32_t height = 0;
  std::vector<std::uint8_t> rgb;  ///< width * height * 3 bytes

  /// Copies `rgb` (width*height*3 bytes). Throws Error(invalid_argument) for non-positive sizes
  /// or a byte count that does not match.
  static Image from_rgb(std::span<const std::uint8_t> rgb, std::int32_t width, std::int32_t height);
  /// The pixels as a U8 tensor [height, width, 3] (a copy).
  Tensor to_tensor() const;
  bool empty() const noexcept { return rgb.empty(); }
};

/// Limits checked on the header before any pixel is decoded, so that a small file declaring a
/// huge image cannot exhaust memory.
struct ImageLimits {
  std::int32_t max_side = 16384;
  /// Pillow's decompression-bomb threshold (Image.MAX_IMAGE_PIXELS), about 89.5 megapixels.
  std::int64_t max_pixels = 89'478'485;
};

/// Decodes a JPEG, PNG or BMP file image held in memory and converts it to RGB like Pillow's
/// convert("RGB"): grey is replicated, alpha is dropped (not composited), palettes are expanded,
/// 16-bit samples keep their high byte. PNG and BMP decode exactly as Pillow does; JPEG through
/// stb_image differs from Pillow's libjpeg-turbo by a few levels on some pixels (IDCT rounding
/// and chroma upsampling; at most 8 and under 1 on average on the test images, mostly 0-3). EXIF
/// orientation is not applied, as by Pillow's
/// Image.open; transformers' `load_image` (its pipelines' loader) does apply it
/// (ImageOps.exif_transpose), so a rotated phone photo is captioned as stored here.
/// Throws Error(invalid_argument) naming `source` and the decoder's reason when the data is not
/// a decodable image, or when it exceeds `limits`.
Image decode_image(std::span<const std::byte> data, std::string_view source = "<buffer>",
                   const ImageLimits& limits = {});
/// Reads and decodes `path`. Throws Error(io) when the file cannot be read, otherwise as
/// decode_image.
Image load_image(const std::filesystem::path& path, const ImageLimits& limits = {});

/// Pillow's resampling filters (Image.Resampling); the numbers are Pillow's codes, as found in
/// preprocessor_config.json's "resample" (2 = bilinear). NEAREST (0) is not implemented.
enum class Resample : std::int32_t { lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5 };

/// Pillow releases differ in the order of the two resampling passes, which changes some bytes
/// (the uint8 rounding between passes; up to one level for bilinear, more for lanczos/bicubic).
enum class PillowPassOrder {
  /// Pillow 13 and later: vertical pass first when the height shrinks and the width shrinks by
  /// less than half as many pixels (2 * (in_w - out_w) < in_h - out_h), else horizontal first.
  pillow13,
  /// Pillow 12 and earlier: always horizontal first.
  pillow12,
};

/// The filter for a Pillow resample code; throws Error(unsupported) for 0 (NEAREST) and
/// Error(invalid_argument) for unknown codes.
Resample resample_from_pil_code(std::int64_t code);

/// Resizes like Pillow's Image.resize((width, height), filter) on an RGB image, bit for bit:
/// separable, antialiased (the filter widens by the downscale factor), 22-bit fixed-point
/// weights, rounding and clipping to uint8 between the two passes, whose order follows `order`.
/// Throws Error(invalid_argument) for an empty image or a size outside [1, 65535].
Image resize(const Image& image, std::int32_t width, std::int32_t height, Resample filter = Resample::bilinear,
             PillowPassOrder order = PillowPassOrder::pillow13);

/// ViTImageProcessor settings (preprocessor_config.json). Defaults: nlpconnect/vit-gpt2.
struct VitPreprocessOptions {
  bool do_resize = true;
  std::int32_t height = 224;
  std::int32_t width = 224;
  Resample resample = Resample::bilinear;
  PillowPassOrder pass_order = PillowPassOrder::pillow13;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::array<float, 3> image_mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> image_std{0.5f, 0.5f, 0.5f};
};

/// pixel_values of one image as Hugging Face's PIL-backed ViT processor computes them: resize
/// (uint8), x = float32(double(x) * rescale_factor), then (x - mean[c]) / std[c] in float32.
/// Returns an F32 tensor [3, H, W]. Throws Error(invalid_argument) for an empty image, a
/// non-positive size, a zero or non-finite std, or a non-finite rescale factor.
Tensor preprocess_vit(const Image& image, const VitPreprocessOptions& options = {});

/// The same for a batch: F32 [B, 3, H, W]. Without resizing, all images must have one size.
Tensor preprocess_vit_batch(std::span<const Image> images, const VitPreprocessOptions& options = {});

}  // namespace encore::io
