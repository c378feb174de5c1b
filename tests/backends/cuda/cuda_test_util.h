// Helpers of the CUDA backend tests: skip without a GPU, move tensors (and strided views) to the
// device, poison outputs, and compare a CUDA kernel's result with the CPU kernel's on the same
// inputs (relative L2 error: f32 <= 1e-5 with TF32 off, f16/bf16 <= 1e-2).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "encore/core/allocator.h"
#include "encore/core/tensor.h"
#include "reference/ref_tensor.h"

namespace encore::cuda::test {

/// True when a CUDA device is usable (cached; never throws).
inline bool gpu_available() {
  static const bool available = CudaRuntime::device_count() > 0;
  return available;
}

/// First statement of every test that needs a GPU.
#define ENCORE_REQUIRE_GPU()                                                     \
  do {                                                                           \
    if (!::encore::cuda::test::gpu_available()) GTEST_SKIP() << "no CUDA GPU present"; \
  } while (0)

inline CudaRuntime& runtime() { return CudaRuntime::get(Device::cuda(0)); }

/// TF32 off: f32 GEMMs must match the CPU to 1e-5.
inline CudaContext context() { return runtime().context(/*allow_tf32=*/false); }

/// A contiguous device copy of a host tensor (any view).
inline Tensor upload(const Tensor& host) { return host.to(runtime().device()); }

/// A device tensor with the same view as `host` (offset and strides kept): the whole host storage
/// is copied, so kernels see the same strided layout on the device.
inline Tensor upload_view(const Tensor& host) {
  const std::shared_ptr<Storage>& from = host.storage();
  auto to = Storage::allocate(from->bytes(), runtime().device());
  allocator_for(DeviceType::CUDA).copy(to->data(), runtime().device(), from->data(), Device::cpu(), from->bytes());
  return Tensor::from_storage(to, host.offset_bytes(), host.shape(), host.strides(), host.dtype());
}

/// A host copy of a device tensor (waits for the stream); a strided view is first made dense on
/// the device with the copy kernel (Tensor copies move dense blocks only across devices).
inline Tensor download(const Tensor& device) {
  if (device.is_contiguous()) return device.to(Device::cpu());
  Tensor dense = Tensor::empty(device.shape(), device.dtype(), device.device());
  encore::cuda::copy(device, dense, context());
  return dense.to(Device::cpu());
}

/// A new contiguous device tensor whose bytes are all 0xFF (NaN for the float types), so that an
/// element the kernel forgot to write fails the comparison.
inline Tensor poisoned(const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype, runtime().device());
  runtime().memset(t.data(), 0xFF, t.nbytes());
  return t;
}

/// A host tensor in f32 (the CPU reference runs in f32 on the same, already rounded, inputs).
inline Tensor as_f32(const Tensor& host) { return host.dtype() == DType::F32 ? host.contiguous() : host.to(DType::F32); }

/// Default tolerance of a dtype (ref::tolerance_for: f32 1e-5, 16-bit 1e-2).
inline double tolerance(DType t) { return ref::tolerance_for(t); }

/// Passes when the shapes agree, ‖device_out − reference‖₂ / ‖reference‖₂ <= tol and nothing is
/// NaN (poison) where the reference is not.
inline ::testing::AssertionResult close_to(const Tensor& device_out, const ref::RefTensor& reference, double tol) {
  const ref::RefTensor g = ref::from_tensor(download(device_out));
  const ref::RefTensor& r = reference;
  if (g.shape != r.shape)
    return ::testing::AssertionFailure() << "shape " << g.shape.str() << " vs reference " << r.shape.str();
  for (std::size_t i = 0; i < g.data.size(); ++i)
    if (std::isnan(g.data[i]) && !std::isnan(r.data[i]))
      return ::testing::AssertionFailure() << "element " << i << " is NaN (unwritten poison?) where the reference has "
                                           << r.data[i];
  const double err = ref::relative_error(g, r);
  if (err <= tol) return ::testing::AssertionSuccess();
  std::size_t worst = 0;
  for (std::size_t i = 0; i < g.data.size(); ++i)
    if (std::abs(g.data[i] - r.data[i]) > std::abs(g.data[worst] - r.data[worst])) worst = i;
  return ::testing::AssertionFailure() << "relative error " << err << " > " << tol << "; worst element " << worst
                                       << " of " << g.shape.str() << ": " << g.data[worst] << " vs " << r.data[worst];
}

/// The same against a float reference tensor (e.g. the CPU kernel's output).
inline ::testing::AssertionResult close_to(const Tensor& device_out, const Tensor& reference, double tol) {
  return close_to(device_out, ref::from_tensor(reference), tol);
}

/// A random host tensor and its device copy (uniform in [lo, hi)).
struct Pair {
  Tensor host, device;
};
inline Pair random_pair(const Shape& shape, DType dtype, std::mt19937& rng, double lo = -1.0, double hi = 1.0) {
  Tensor h = ref::random_tensor(shape, dtype, rng, lo, hi);
  return {h, upload(h)};
}
/// The same for a non-contiguous view (ref::random_strided: leading dims swapped in memory, last
/// dim padded), uploaded with its layout.
inline Pair random_strided_pair(const Shape& shape, DType dtype, std::mt19937& rng, double lo = -1.0,
                                double hi = 1.0) {
  Tensor h = ref::random_strided(shape, dtype, rng, lo, hi);
  return {h, upload_view(h)};
}

}  // namespace encore::cuda::test
