// Image decoding (stb_image, JPEG/PNG/BMP only), resizing and ViT preprocessing.
#include "encore/io/image.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <system_error>

#include "core/check.h"
#include "io/pil_resize.h"

namespace {
// stb reports internal inconsistencies through STBI_ASSERT; on hostile input that must become an
// exception, not an abort (the decoder's allocations at that point are leaked, not freed twice).
[[noreturn]] void stbi_assert_failed(const char* what) {
  throw encore::Error(encore::ErrorCode::invalid_argument,
                      std::string("image decoder internal check failed: ") + what);
}

// stb's allocations go through these. Zeroing: corrupt JPEGs can make stb read Huffman tables
// it never filled (valgrind: uninitialised reads), zeroed memory keeps that deterministic and in
// bounds. The cap: a corrupt zlib stream in a tiny PNG can make stb grow a buffer to 2 GiB; no
// single allocation needs more than a small multiple of the declared image (set per decode).
thread_local std::size_t t_stbi_alloc_cap = 0;

void* stbi_capped_malloc(std::size_t n) { return n > t_stbi_alloc_cap ? nullptr : std::calloc(1, n); }
void* stbi_capped_realloc(void* p, std::size_t n) { return n > t_stbi_alloc_cap ? nullptr : std::realloc(p, n); }
}  // namespace

#define STBI_MALLOC(n) stbi_capped_malloc(n)
#define STBI_REALLOC(p, n) stbi_capped_realloc(p, n)
#define STBI_FREE(p) std::free(p)
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC  // private copy: no clash with another stb_image in the process
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS (1 << 16)
#define STBI_ASSERT(x) ((x) ? (void)0 : stbi_assert_failed(#x))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wshadow"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace encore::io {

namespace fs = std::filesystem;
using encore::detail::fail;

namespace {

constexpr std::int32_t kMaxResizeSide = 65535;

std::int64_t pixel_count(std::int32_t w, std::int32_t h) { return std::int64_t{w} * h; }

bool well_formed(const Image& im) {
  return im.width > 0 && im.height > 0 && im.rgb.size() == static_cast<std::size_t>(pixel_count(im.width, im.height)) * 3;
}

[[noreturn]] void decode_failed(std::string_view source, int w, int h) {
  const std::string_view reason = stbi_failure_reason();
  fail(ErrorCode::invalid_argument, "{}: cannot decode the {}x{} image (stb_image: {}{})", source, w, h, reason,
       reason == "outofmem" ? "; the data asks for more memory than such an image needs, so it is corrupt" : "");
}

// Sets the stb allocation cap for one decoding step.
struct AllocationCap {
  explicit AllocationCap(std::size_t bytes) { t_stbi_alloc_cap = bytes; }
  ~AllocationCap() { t_stbi_alloc_cap = 0; }
  AllocationCap(const AllocationCap&) = delete;
  AllocationCap& operator=(const AllocationCap&) = delete;
};

// Debian's stb_image (2.27) trusts the code counts of a JPEG Huffman table: counts summing to more
// than 256 overflow its tables (fixed upstream in 2.28). This walks the markers the way stb does
// (junk before a marker skipped, entropy-coded data ending at the first FF xx that is neither
// stuffing nor RSTn, bytes past the end read as 0) and refuses such tables before stb sees them.
void check_jpeg_huffman_tables(std::span<const std::uint8_t> d, std::string_view source) {
  // stb reads SOI like any marker, after any number of 0xFF fill bytes: FF FF .. FF D8.
  std::size_t i = 0;
  while (i < d.size() && d[i] == 0xFF) ++i;
  if (i == 0 || i >= d.size() || d[i] != 0xD8) return;  // not a JPEG
  ++i;
  auto at = [&](std::size_t k) -> std::size_t { return k < d.size() ? d[k] : 0; };
  while (i < d.size()) {
    if (d[i] != 0xFF) {  // junk: stb scans on to the next 0xFF
      ++i;
      continue;
    }
    while (i < d.size() && d[i] == 0xFF) ++i;  // fill bytes
    if (i >= d.size()) return;
    const std::uint8_t marker = d[i++];
    if (marker == 0xD9) return;  // end of image
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length field
    const std::size_t length = (at(i) << 8) | at(i + 1);
    if (marker == 0xC4) {
      // stb reads table after table while the segment length lasts, past its end if need be.
      std::size_t p = i + 2;
      for (std::int64_t left = static_cast<std::int64_t>(length) - 2; left > 0;) {
        std::size_t codes = 0;
        for (std::size_t k = 1; k <= 16; ++k) codes += at(p + k);
        if (codes > 256)
          fail(ErrorCode::invalid_argument, "{}: corrupt JPEG: Huffman table at byte {} has {} codes (at most 256)",
               source, p, codes);
        left -= static_cast<std::int64_t>(17 + codes);
        p += 17 + codes;
      }
    }
    if (length < 2) return;  // every segment type makes stb stop here
    i += length;
    if (marker == 0xDA) {  // entropy-coded data up to the next real marker
      while (i + 1 < d.size() && !(d[i] == 0xFF && d[i + 1] != 0x00 && d[i + 1] != 0xFF &&
                                   !(d[i + 1] >= 0xD0 && d[i + 1] <= 0xD7)))
        ++i;
    }
  }
}

// stb_image (2.27) allocates its IDAT buffer at the first non-empty IDAT chunk; an empty one
// before that makes it call memcpy(NULL, p, 0), which is undefined behaviour (UBSan, found by
// fuzz_image). Such chunks carry no data and other decoders skip them, so they are left out: the
// file without them, or an empty vector when there are none (the usual case: no copy).
std::vector<std::uint8_t> without_leading_empty_idat(std::span<const std::uint8_t> d) {
  static constexpr std::uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (d.size() < 8 || !std::equal(std::begin(kSignature), std::end(kSignature), d.begin())) return {};
  std::vector<std::size_t> empty;  // offsets of the chunks to leave out (12 bytes, or to the end)
  // Chunk by chunk as stb walks them: length, type, data, CRC.
  for (std::size_t p = 8; d.size() - p >= 8;) {
    const std::uint32_t length = std::uint32_t{d[p]} << 24 | std::uint32_t{d[p + 1]} << 16 |
                                 std::uint32_t{d[p + 2]} << 8 | d[p + 3];
    const std::string_view type(reinterpret_cast<const char*>(&d[p + 4]), 4);
    if (type == "IEND" || (type == "IDAT" && length != 0)) break;
    if (type == "IDAT") empty.push_back(p);
    if (d.size() - p < 12 || length > d.size() - p - 12) break;
    p += 12 + std::size_t{length};
  }
  if (empty.empty()) return {};
  std::vector<std::uint8_t> out;
  out.reserve(d.size());
  std::size_t from = 0;
  for (const std::size_t p : empty) {
    out.insert(out.end(), d.begin() + static_cast<std::ptrdiff_t>(from), d.begin() + static_cast<std::ptrdiff_t>(p));
    from = std::min(p + 12, d.size());
  }
  out.insert(out.end(), d.begin() + static_cast<std::ptrdiff_t>(from), d.end());
  return out;
}


// The parts of an uncompressed BMP's header that stb does not check: the pixel array's size (stb
// reads past the end of the data as zeros, where Pillow refuses a truncated file) and the layout of
// 16-bit pixels (stb widens 5- and 6-bit channels by bit replication, Pillow by v * 255 / max).
struct BmpLayout {
  bool uncompressed = false;
  std::uint64_t needed = 0;  // bytes up to the end of the last row
  int bpp = 0;
  int bits[3] = {0, 0, 0};   // 16 bpp: bits of red, green, blue (5/5/5 or 5/6/5), else 0
};

BmpLayout bmp_layout(std::span<const std::uint8_t> d) {
  BmpLayout b;
  auto u16 = [&](std::size_t k) { return static_cast<std::uint32_t>(d[k] | d[k + 1] << 8); };
  auto u32 = [&](std::size_t k) { return u16(k) | u16(k + 2) << 16; };
  if (d.size() < 26 || d[0] != 'B' || d[1] != 'M') return b;
  const std::uint32_t offset = u32(10), header = u32(14);
  std::int64_t w = 0, h = 0;
  std::uint32_t compression = 0;
  if (header == 12) {  // OS/2 core header
    w = u16(18), h = u16(20), b.bpp = static_cast<int>(u16(24));
  } else if (header >= 40 && d.size() >= 34) {
    w = static_cast<std::int32_t>(u32(18)), h = static_cast<std::int32_t>(u32(22));
    b.bpp = static_cast<int>(u16(28)), compression = u32(30);
  } else {
    return b;
  }
  constexpr std::uint32_t kRgb = 0, kBitfields = 3, kAlphaBitfields = 6;
  if (compression != kRgb && compression != kBitfields && compression != kAlphaBitfields) return b;
  if (w <= 0 || b.bpp <= 0 || b.bpp > 32) return b;  // stb refuses these itself
  b.uncompressed = true;
  const std::uint64_t row = (static_cast<std::uint64_t>(w) * static_cast<std::uint64_t>(b.bpp) + 31) / 32 * 4;
  const std::uint64_t rows = static_cast<std::uint64_t>(h < 0 ? -h : h);
  b.needed = offset + row * rows;  // w, h < 2^31 and bpp <= 32: no overflow
  if (b.bpp == 16) {
    std::uint32_t masks[3] = {0x7C00, 0x03E0, 0x001F};  // BI_RGB: 5/5/5
    if (compression != kRgb) {
      if (d.size() < 66) return b;
      masks[0] = u32(54), masks[1] = u32(58), masks[2] = u32(62);
    }
    const bool m555 = masks[0] == 0x7C00 && masks[1] == 0x03E0 && masks[2] == 0x001F;
    const bool m565 = masks[0] == 0xF800 && masks[1] == 0x07E0 && masks[2] == 0x001F;
    if (m555 || m565) b.bits[0] = 5, b.bits[1] = m565 ? 6 : 5, b.bits[2] = 5;
  }
  return b;
}
}  // namespace

Image Image::from_rgb(std::span<const std::uint8_t> rgb, std::int32_t width, std::int32_t height) {
  ENCORE_CHECK(width > 0 && height > 0, invalid_argument, "Image::from_rgb: size {}x{} must be positive", width,
               height);
  const auto expected = static_cast<std::uint64_t>(pixel_count(width, height)) * 3;
  ENCORE_CHECK(rgb.size() == expected, invalid_argument,
               "Image::from_rgb: {} bytes given for a {}x{} RGB image, which needs {}", rgb.size(), width, height,
               expected);
  return Image{width, height, std::vector<std::uint8_t>(rgb.begin(), rgb.end())};
}

Tensor Image::to_tensor() const {
  ENCORE_CHECK(well_formed(*this), invalid_argument,
               "Image::to_tensor: the image is empty or its {} bytes do not match {}x{} RGB", rgb.size(), width, height);
  Tensor t = Tensor::empty({height, width, 3}, DType::U8);
  std::memcpy(t.data(), rgb.data(), rgb.size());
  return t;
}

Image decode_image(std::span<const std::byte> data, std::string_view source, const ImageLimits& limits) {
  ENCORE_CHECK(!data.empty(), invalid_argument, "{}: cannot decode an image from 0 bytes", source);
  ENCORE_CHECK(data.size() <= static_cast<std::size_t>(INT_MAX), invalid_argument,
               "{}: {} bytes is too large for the image decoder (limit {})", source, data.size(), INT_MAX);
  const auto* bytes = reinterpret_cast<const stbi_uc*>(data.data());
  int len = static_cast<int>(data.size());
  check_jpeg_huffman_tables({bytes, data.size()}, source);
  const std::vector<std::uint8_t> png_copy = without_leading_empty_idat({bytes, data.size()});
  if (!png_copy.empty()) {
    bytes = png_copy.data();
    len = static_cast<int>(png_copy.size());
  }

  // Header first: refuse oversized images before the decoder allocates for them.
  int w = 0, h = 0, channels = 0;
  bool info_ok;
  {
    const AllocationCap cap(std::size_t{1} << 24);  // header parsing needs little
    info_ok = stbi_info_from_memory(bytes, len, &w, &h, &channels) != 0;
  }
  if (!info_ok)
    fail(ErrorCode::invalid_argument, "{}: not a decodable JPEG, PNG or BMP image (stb_image: {})", source,
         stbi_failure_reason());
  // A top-down BMP stores its height negated; stb's header query passes it on as is (its decoder
  // takes the absolute value), so the checks below see the real height.
  if (h < 0 && h != INT_MIN) h = -h;
  if (w <= 0 || h <= 0 || w > limits.max_side || h > limits.max_side || pixel_count(w, h) > limits.max_pixels)
    fail(ErrorCode::invalid_argument,
         "{}: image is {}x{} pixels, beyond the limits (each side at most {}, at most {} pixels)", source, w, h,
         limits.max_side, limits.max_pixels);

  struct Free {
    void operator()(void* p) const { stbi_image_free(p); }
  };
  // Largest single allocation stb may make for this image (16-bit RGBA output, JPEG planes padded
  // to whole blocks), with room to spare.
  const AllocationCap cap(16 * (static_cast<std::size_t>(w) + 32) * (static_cast<std::size_t>(h) + 32) +
                          (std::size_t{1} << 20));
  Image image;
  image.width = w;
  image.height = h;
  const auto n = static_cast<std::size_t>(pixel_count(w, h));
  int dw = 0, dh = 0, file_channels = 0;
  if (channels == 1 && stbi_is_16_bit_from_memory(bytes, len)) {
    // Pillow opens 16-bit grey as mode I;16, whose convert("RGB") clips to 255 (it does not
    // scale); other 16-bit PNGs keep their high byte, as stb does.
    std::unique_ptr<stbi_us, Free> grey(stbi_load_16_from_memory(bytes, len, &dw, &dh, &file_channels, 1));
    if (!grey) decode_failed(source, w, h);
    if (dw != w || dh != h)
      fail(ErrorCode::invalid_argument, "{}: header says {}x{} but the decoder produced {}x{}", source, w, h, dw, dh);
    image.rgb.resize(n * 3);
    for (std::size_t i = 0; i < n; ++i)
      std::memset(&image.rgb[i * 3], grey.get()[i] > 255 ? 255 : grey.get()[i], 3);
    return image;
  }
  const BmpLayout bmp = bmp_layout({bytes, static_cast<std::size_t>(len)});
  if (bmp.uncompressed && static_cast<std::uint64_t>(len) < bmp.needed)
    fail(ErrorCode::invalid_argument, "{}: truncated BMP: {} bytes, but its {}x{} pixels at {} bits end at byte {}",
         source, len, w, h, bmp.bpp, bmp.needed);
  // Asking for 3 channels converts like Pillow's convert("RGB"): grey replicated, alpha dropped.
  std::unique_ptr<stbi_uc, Free> pixels(stbi_load_from_memory(bytes, len, &dw, &dh, &file_channels, 3));
  if (!pixels) decode_failed(source, w, h);
  if (dw != w || dh != h)
    fail(ErrorCode::invalid_argument, "{}: header says {}x{} but the decoder produced {}x{}", source, w, h, dw, dh);
  image.rgb.assign(pixels.get(), pixels.get() + n * 3);
  if (bmp.bits[0] != 0) {  // 16-bit BMP: Pillow's widening of the 5- or 6-bit channel values
    for (std::size_t i = 0; i < n * 3; ++i) {
      const int bits = bmp.bits[i % 3], v = image.rgb[i] >> (8 - bits);  // stb's top bits are the value
      image.rgb[i] = static_cast<std::uint8_t>(v * 255 / ((1 << bits) - 1));
    }
  }
  return image;
}

Image load_image(const fs::path& path, const ImageLimits& limits) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) fail(ErrorCode::io, "{}: cannot read image: {}", path.string(), ec.message());
  if (size > static_cast<std::uintmax_t>(INT_MAX))
    fail(ErrorCode::invalid_argument, "{}: {} bytes is too large for the image decoder (limit {})", path.string(),
         size, INT_MAX);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::io, "{}: cannot open image: {}", path.string(), std::strerror(errno));
  std::vector<std::byte> data(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size))
    fail(ErrorCode::io, "{}: read {} of {} bytes", path.string(), in.gcount(), size);
  return decode_image(data, path.string(), limits);
}

Resample resample_from_pil_code(std::int64_t code) {
  switch (code) {
    case 1: return Resample::lanczos;
    case 2: return Resample::bilinear;
    case 3: return Resample::bicubic;
    case 4: return Resample::box;
    case 5: return Resample::hamming;
    case 0: fail(ErrorCode::unsupported, "resample 0 (NEAREST) is not supported; use 1..5");
    default: fail(ErrorCode::invalid_argument, "resample {} is not a Pillow filter code (0..5)", code);
  }
}

Image resize(const Image& image, std::int32_t width, std::int32_t height, Resample filter, PillowPassOrder order) {
  ENCORE_CHECK(well_formed(image), invalid_argument, "resize: the image is empty or its {} bytes do not match {}x{} RGB",
               image.rgb.size(), image.width, image.height);
  ENCORE_CHECK(width >= 1 && height >= 1 && width <= kMaxResizeSide && height <= kMaxResizeSide, invalid_argument,
               "resize: target size {}x{} must be within 1..{} on each side", width, height, kMaxResizeSide);
  const int code = static_cast<int>(filter);
  ENCORE_CHECK(code >= 1 && code <= 5, invalid_argument, "resize: unknown filter {}", code);
  // The filter spans (source / target) x its support on each side: a source vastly larger than its
  // target would need more coefficients than an int counts (Pillow raises MemoryError there).
  constexpr std::int64_t kMaxShrink = std::int64_t{1} << 24;
  ENCORE_CHECK(image.width / width <= kMaxShrink && image.height / height <= kMaxShrink, invalid_argument,
               "resize: {}x{} to {}x{} shrinks a side by more than 2^24", image.width, image.height, width, height);
  ENCORE_CHECK(order == PillowPassOrder::pillow13 || order == PillowPassOrder::pillow12, invalid_argument,
               "resize: unknown pass order {}", static_cast<int>(order));
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(static_cast<std::size_t>(pixel_count(width, height)) * 3);
  detail::pil_resample(image.rgb.data(), image.width, image.height, 3, out.rgb.data(), width, height, filter,
                       order);
  return out;
}

namespace {

void check_options(const VitPreprocessOptions& o) {
  if (o.do_resize)
    ENCORE_CHECK(o.height >= 1 && o.width >= 1 && o.height <= kMaxResizeSide && o.width <= kMaxResizeSide,
                 invalid_argument, "preprocess_vit: size {}x{} must be within 1..{} on each side", o.width, o.height,
                 kMaxResizeSide);
  if (o.do_rescale)
    ENCORE_CHECK(std::isfinite(o.rescale_factor), invalid_argument, "preprocess_vit: rescale_factor {} is not finite",
                 o.rescale_factor);
  if (o.do_normalize)
    for (int c = 0; c < 3; ++c)
      ENCORE_CHECK(std::isfinite(o.image_mean[c]) && std::isfinite(o.image_std[c]) && o.image_std[c] != 0.0f,
                   invalid_argument,
                   "preprocess_vit: channel {} has mean {} and std {}; both must be finite, std non-zero", c,
                   o.image_mean[c], o.image_std[c]);
}

// Writes one image's [3, H, W] values at `out`.
void preprocess_into(const Image& image, const VitPreprocessOptions& o, float* out) {
  Image resized_copy;
  if (o.do_resize) resized_copy = resize(image, o.width, o.height, o.resample, o.pass_order);
  const Image& resized = o.do_resize ? resized_copy : image;
  const std::size_t plane = static_cast<std::size_t>(pixel_count(resized.width, resized.height));
  // Pointwise, so a 256-entry table per channel; each entry follows HF's numpy steps exactly:
  // float64 multiply, cast to float32, then float32 subtract and divide.
  for (int c = 0; c < 3; ++c) {
    float table[256];
    for (int v = 0; v < 256; ++v) {
      float x = o.do_rescale ? static_cast<float>(static_cast<double>(v) * o.rescale_factor) : static_cast<float>(v);
      if (o.do_normalize) x = (x - o.image_mean[c]) / o.image_std[c];
      table[v] = x;
    }
    float* dst = out + static_cast<std::size_t>(c) * plane;
    for (std::size_t i = 0; i < plane; ++i) dst[i] = table[resized.rgb[i * 3 + static_cast<std::size_t>(c)]];
  }
}

}  // namespace

Tensor preprocess_vit(const Image& image, const VitPreprocessOptions& options) {
  return preprocess_vit_batch(std::span<const Image>(&image, 1), options).squeeze(0);
}

Tensor preprocess_vit_batch(std::span<const Image> images, const VitPreprocessOptions& options) {
  ENCORE_CHECK(!images.empty(), invalid_argument, "preprocess_vit: no images given");
  check_options(options);
  for (std::size_t i = 0; i < images.size(); ++i) {
    const Image& im = images[i];
    ENCORE_CHECK(well_formed(im), invalid_argument, "preprocess_vit: image {} is empty or its {} bytes do not match {}x{} RGB", i,
                 im.rgb.size(), im.width, im.height);
    if (!options.do_resize)
      ENCORE_CHECK(im.width == images[0].width && im.height == images[0].height, invalid_argument,
                   "preprocess_vit: without resizing all images need one size; image 0 is {}x{}, image {} is {}x{}",
                   images[0].width, images[0].height, i, im.width, im.height);
  }
  const std::int32_t h = options.do_resize ? options.height : images[0].height;
  const std::int32_t w = options.do_resize ? options.width : images[0].width;
  Tensor out = Tensor::empty({static_cast<std::int64_t>(images.size()), 3, h, w}, DType::F32);
  float* data = out.data_ptr<float>();
  for (std::size_t i = 0; i < images.size(); ++i)
    preprocess_into(images[i], options, data + i * 3 * static_cast<std::size_t>(pixel_count(w, h)));
  return out;
}

}  // namespace encore::io
