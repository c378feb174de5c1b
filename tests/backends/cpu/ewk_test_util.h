// Helpers shared by the elementwise / norm / data / reduce / resize kernel tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "kernels/cpu/simd_common.h"
#include "reference/ref_tensor.h"

namespace encore::ewk_test {

inline cpu::CpuContext ctx(int threads = 2) { return cpu::CpuContext{threads}; }

/// A fresh output whose every element is NaN (floats) or 0x5a bytes, so unwritten elements show.
inline Tensor poisoned(const Shape& shape, DType dt) {
  Tensor y = Tensor::empty(shape, dt);
  if (is_floating(dt)) y.fill(std::nan(""));
  else if (y.nbytes() > 0) std::memset(y.data(), 0x5a, y.nbytes());
  return y;
}

enum class Layout { contiguous, strided, broadcast };
inline const char* layout_name(Layout l) {
  return l == Layout::contiguous ? "contiguous" : l == Layout::strided ? "strided" : "broadcast";
}

/// Random values in the given layout: a dense tensor, a padded/transposed view
/// (ref::random_strided), or a stride-0 expand of a tensor with extent 1 in dim 0.
inline Tensor make_input(const Shape& shape, DType dt, std::mt19937& rng, Layout layout, double lo = -1.0,
                         double hi = 1.0) {
  switch (layout) {
    case Layout::contiguous: return ref::random_tensor(shape, dt, rng, lo, hi);
    case Layout::strided: return ref::random_strided(shape, dt, rng, lo, hi);
    case Layout::broadcast: {
      if (shape.rank() == 0) return ref::random_tensor(shape, dt, rng, lo, hi);
      Shape small = shape;
      small[0] = 1;
      return ref::random_tensor(small, dt, rng, lo, hi).expand(shape);
    }
  }
  return {};
}

inline const std::vector<DType>& float_dtypes() {
  static const std::vector<DType> v{DType::F32, DType::BF16, DType::F16};
  return v;
}
inline const std::vector<DType>& all_dtypes() {
  static const std::vector<DType> v{DType::F32, DType::F16, DType::BF16, DType::I8,
                                    DType::U8,  DType::I32, DType::I64,  DType::Bool};
  return v;
}

/// Norm-wise relative error against the reference within tolerance_for(dt) * slack; NaN anywhere
/// fails (unless the reference has NaN at the same place).
inline void expect_close(const Tensor& out, const ref::RefTensor& expected, DType dt, const std::string& what,
                         double slack = 1.0) {
  ASSERT_EQ(out.shape(), expected.shape) << what;
  const ref::RefTensor got = ref::from_tensor(out);
  std::int64_t bad_nan = 0;
  for (std::size_t i = 0; i < got.data.size(); ++i)
    if (std::isnan(got.data[i]) != std::isnan(expected.data[i])) ++bad_nan;
  EXPECT_EQ(bad_nan, 0) << what << ": NaN where the reference has none (unwritten output?)";
  if (bad_nan == 0) {
    const double err = ref::relative_error(got, expected);
    EXPECT_LE(err, ref::tolerance_for(dt) * slack) << what;
  }
}

/// Exact equality of every element (data movement).
inline void expect_equal(const Tensor& out, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(out.shape(), expected.shape()) << what;
  ASSERT_EQ(out.dtype(), expected.dtype()) << what;
  std::int64_t mismatches = 0, first = -1;
  for (std::int64_t i = 0; i < out.numel(); ++i) {
    const double a = out.get(i), b = expected.get(i);
    if (!(a == b || (std::isnan(a) && std::isnan(b)))) {
      if (first < 0) first = i;
      ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0) << what << ": first mismatch at " << first;
}

/// Runs `body` twice: with the AVX-512 paths (when the CPU has them) and with the portable ones.
template <typename Fn>
void both_paths(Fn&& body) {
  for (bool portable : {false, true}) {
    SCOPED_TRACE(portable ? "portable path" : "default (AVX-512) path");
    cpu::ewk::set_force_portable(portable);
    body();
  }
  cpu::ewk::set_force_portable(false);
}

/// Expects fn() to throw encore::Error with `code` and a message containing `needle`.
template <typename Fn>
void expect_error(Fn&& fn, ErrorCode code, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected " << error_code_name(code) << " mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace encore::ewk_test
