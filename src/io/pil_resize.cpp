// Pillow-exact resampling. Behaviour reproduced from Pillow's documented algorithm
// (libImaging/Resample.c): per output pixel a window of input pixels weighted by the filter,
// the filter stretched by the downscale factor (antialiasing); weights normalised to sum 1 in
// double precision, then rounded to 22-bit fixed point; sums start at half a unit (rounding) and
// are clipped to [0, 255]; the first pass's uint8 result feeds the second (horizontal first up to
// Pillow 12; Pillow 13 sometimes starts with the vertical pass). Every one of these steps changes
// some output bytes, so all are mirrored.
#include "io/pil_resize.h"

#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

namespace encore::io::detail {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS for 8-bit images

struct Filter {
  double (*weight)(double);
  double support;  // half-width at scale 1
};

double box_weight(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bilinear_weight(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_weight(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= std::numbers::pi;
  // Pillow's Resample.c writes the constants as floats (0.54f, 0.46f): the window is computed in
  // double with their float values, and the plain double constants moved a few outputs by one level.
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));
}

// Keys' cubic with a = -0.5 (Pillow's choice; PyTorch and OpenCV use -0.75).
double bicubic_weight(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= std::numbers::pi;
  return std::sin(x) / x;
}

double lanczos_weight(double x) { return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0; }

Filter filter_of(Resample r) {
  switch (r) {
    case Resample::box: return {box_weight, 0.5};
    case Resample::bilinear: return {bilinear_weight, 1.0};
    case Resample::hamming: return {hamming_weight, 1.0};
    case Resample::bicubic: return {bicubic_weight, 2.0};
    case Resample::lanczos: return {lanczos_weight, 3.0};
  }
  return {bilinear_weight, 1.0};
}

// Fixed-point weights of one axis: output i reads `count[i]` inputs from `first[i]`.
struct Coefficients {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<std::int32_t> weights;  // out_size * ksize
};

Coefficients precompute(int in_size, int out_size, const Filter& f) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = scale < 1.0 ? 1.0 : scale;  // widen only when shrinking
  const double support = f.support * filter_scale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<std::size_t>(out_size));
  c.count.resize(static_cast<std::size_t>(out_size));
  c.weights.assign(static_cast<std::size_t>(out_size) * static_cast<std::size_t>(c.ksize), 0);
  std::vector<double> k(static_cast<std::size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filter_scale;
    // Pillow truncates (center ± support + 0.5) toward zero, then clamps to the image.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = f.weight((x + xmin - center + 0.5) * ss);
      k[static_cast<std::size_t>(x)] = w;
      total += w;
    }
    std::int32_t* out = &c.weights[static_cast<std::size_t>(xx) * static_cast<std::size_t>(c.ksize)];
    for (int x = 0; x < xmax; ++x) {
      double w = k[static_cast<std::size_t>(x)];
      if (total != 0.0) w /= total;
      // Round half away from zero, as Pillow's normalize_coeffs_8bpc does.
      const double scaled = w * (1 << kPrecisionBits);
      out[x] = static_cast<std::int32_t>(scaled < 0 ? scaled - 0.5 : scaled + 0.5);
    }
    c.first[static_cast<std::size_t>(xx)] = xmin;
    c.count[static_cast<std::size_t>(xx)] = xmax;
  }
  return c;
}

inline std::uint8_t clip8(std::int64_t v) {
  if (v <= 0) return 0;
  if (v >= (std::int64_t{256} << kPrecisionBits)) return 255;
  return static_cast<std::uint8_t>(v >> kPrecisionBits);
}

constexpr std::int64_t kHalf = std::int64_t{1} << (kPrecisionBits - 1);

// Rows [row0, row0 + rows) of `src` resampled along x into `dst` (rows x out_w).
void horizontal(const std::uint8_t* src, int src_w, int row0, int rows, int ch, std::uint8_t* dst, int out_w,
                const Coefficients& c) {
  const std::size_t src_stride = static_cast<std::size_t>(src_w) * ch;
  const std::size_t dst_stride = static_cast<std::size_t>(out_w) * ch;
  for (int y = 0; y < rows; ++y) {
    const std::uint8_t* in = src + static_cast<std::size_t>(row0 + y) * src_stride;
    std::uint8_t* out = dst + static_cast<std::size_t>(y) * dst_stride;
    for (int xx = 0; xx < out_w; ++xx) {
      const std::int32_t* k = &c.weights[static_cast<std::size_t>(xx) * static_cast<std::size_t>(c.ksize)];
      const std::uint8_t* p = in + static_cast<std::size_t>(c.first[static_cast<std::size_t>(xx)]) * ch;
      const int n = c.count[static_cast<std::size_t>(xx)];
      for (int b = 0; b < ch; ++b) {
        std::int64_t ss = kHalf;
        for (int x = 0; x < n; ++x) ss += static_cast<std::int64_t>(p[static_cast<std::size_t>(x) * ch + b]) * k[x];
        out[static_cast<std::size_t>(xx) * ch + b] = clip8(ss);
      }
    }
  }
}

// `src` (src_w x any rows) resampled along y; c.first is relative to src's first row.
void vertical(const std::uint8_t* src, int width, int ch, std::uint8_t* dst, int out_h, const Coefficients& c,
              int first_shift) {
  const std::size_t stride = static_cast<std::size_t>(width) * ch;
  for (int yy = 0; yy < out_h; ++yy) {
    const std::int32_t* k = &c.weights[static_cast<std::size_t>(yy) * static_cast<std::size_t>(c.ksize)];
    const auto first_row = static_cast<std::size_t>(c.first[static_cast<std::size_t>(yy)] - first_shift);
    const std::uint8_t* col = src + first_row * stride;
    const int n = c.count[static_cast<std::size_t>(yy)];
    std::uint8_t* out = dst + static_cast<std::size_t>(yy) * stride;
    for (std::size_t i = 0; i < stride; ++i) {
      std::int64_t ss = kHalf;
      for (int y = 0; y < n; ++y) ss += static_cast<std::int64_t>(col[static_cast<std::size_t>(y) * stride + i]) * k[y];
      out[i] = clip8(ss);
    }
  }
}

}  // namespace

bool pillow13_vertical_first(int src_w, int src_h, int dst_w, int dst_h) noexcept {
  return dst_h < src_h && 2 * (std::int64_t{src_w} - dst_w) < std::int64_t{src_h} - dst_h;
}

void pil_resample(const std::uint8_t* src, int src_w, int src_h, int channels, std::uint8_t* dst, int dst_w,
                  int dst_h, Resample filter, PillowPassOrder order) {
  const Filter f = filter_of(filter);
  const bool need_h = dst_w != src_w, need_v = dst_h != src_h;
  if (!need_h && !need_v) {
    std::memcpy(dst, src, static_cast<std::size_t>(src_w) * src_h * channels);
    return;
  }
  if (!need_h) {
    vertical(src, src_w, channels, dst, dst_h, precompute(src_h, dst_h, f), 0);
    return;
  }
  const Coefficients ch = precompute(src_w, dst_w, f);
  if (!need_v) {
    horizontal(src, src_w, 0, src_h, channels, dst, dst_w, ch);
    return;
  }
  const Coefficients cv = precompute(src_h, dst_h, f);
  if (order == PillowPassOrder::pillow13 && pillow13_vertical_first(src_w, src_h, dst_w, dst_h)) {
    std::vector<std::uint8_t> tmp(static_cast<std::size_t>(src_w) * dst_h * channels);
    vertical(src, src_w, channels, tmp.data(), dst_h, cv, 0);
    horizontal(tmp.data(), src_w, 0, dst_h, channels, dst, dst_w, ch);
    return;
  }
  // Horizontal first: only the input rows some output row reads go through it (as Pillow does).
  const int row0 = cv.first.front();
  const int row1 = cv.first.back() + cv.count.back();
  std::vector<std::uint8_t> tmp(static_cast<std::size_t>(row1 - row0) * dst_w * channels);
  horizontal(src, src_w, row0, row1 - row0, channels, tmp.data(), dst_w, ch);
  vertical(tmp.data(), dst_w, channels, dst, dst_h, cv, row0);
}

}  // namespace encore::io::detail
