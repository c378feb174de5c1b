// Plain double-precision reference tensors for op tests: the independent side of every comparison.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "encore/core/tensor.h"

namespace encore::ref {

/// A dense row-major tensor of doubles.
struct RefTensor {
  Shape shape;
  std::vector<double> data;

  RefTensor() = default;
  explicit RefTensor(const Shape& s) : shape(s), data(static_cast<std::size_t>(s.numel()), 0.0) {}
  std::int64_t numel() const { return static_cast<std::int64_t>(data.size()); }
};

/// Reads any CPU tensor (any strides, any dtype) into doubles.
inline RefTensor from_tensor(const Tensor& t) {
  RefTensor r(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) r.data[static_cast<std::size_t>(i)] = t.get(i);
  return r;
}

/// A tensor of the given dtype with values uniform in [lo, hi) (integers: rounded down).
inline Tensor random_tensor(const Shape& shape, DType dtype, std::mt19937& rng, double lo = -1.0, double hi = 1.0) {
  Tensor f = Tensor::empty(shape, DType::F32);
  std::uniform_real_distribution<double> dist(lo, hi);
  float* p = f.data_ptr<float>();
  for (std::int64_t i = 0; i < f.numel(); ++i)
    p[i] = static_cast<float>(is_floating(dtype) ? dist(rng) : std::floor(dist(rng)));
  return dtype == DType::F32 ? f : f.to(dtype);
}

/// A non-contiguous view holding the same values as a fresh [shape] tensor: the data lives in a
/// larger buffer with the last dimension padded and the two leading dimensions swapped in memory.
inline Tensor random_strided(const Shape& shape, DType dtype, std::mt19937& rng, double lo = -1.0, double hi = 1.0) {
  const int r = shape.rank();
  if (r == 0) return random_tensor(shape, dtype, rng, lo, hi);
  Shape memory = shape;  // dims 0 and 1 swapped in memory, last dim padded by 3
  if (r >= 2) std::swap(memory[0], memory[1]);
  const std::int64_t last = memory[r - 1];
  memory[r - 1] += 3;
  Tensor view = random_tensor(memory, dtype, rng, lo, hi).slice(r - 1, 1, 1 + last);
  return r >= 2 ? view.transpose(0, 1) : view;
}

/// ‖a − b‖₂ / ‖b‖₂ (b is the reference); 0 when both are zero.
inline double relative_error(const RefTensor& out, const RefTensor& reference) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < out.data.size() && i < reference.data.size(); ++i) {
    const double d = out.data[i] - reference.data[i];
    num += d * d;
    den += reference.data[i] * reference.data[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

/// Default tolerances (DESIGN.md): f32 1e-5, bf16/f16 1e-2 relative.
inline double tolerance_for(DType t) { return t == DType::F32 ? 1e-5 : 1e-2; }

}  // namespace encore::ref
