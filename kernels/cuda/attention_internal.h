// Test and benchmark knobs of the CUDA attention kernels (kernels/cuda/attention.cu). Plain C++:
// the tests include it without CUDA headers.
#pragma once

#include <string>

#include "backends/cuda/cuda_kernels.h"

namespace encore::cuda::attn {

/// Which kernel attention_impl runs.
enum class Path {
  automatic,    ///< hopper where it can run, else tensor_core where eligible, else generic
  tensor_core,  ///< mma.sync (FlashAttention-2 style, any sm_80+): f16/bf16, D % 8 == 0, D <= 128,
                ///< 16-byte aligned rows; throws Error(unsupported) when the problem is not eligible
  hopper,       ///< wgmma + TMA (FlashAttention-3 style, sm_90a code on an sm_90 device): the
                ///< tensor_core conditions with D in {64, 128}; throws Error(unsupported) otherwise
  generic,      ///< the CUDA-core kernel (any float dtype, any strides, D <= 256)
};

/// attention() with the kernel chosen by `path`; validates like attention().
void attention_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                    const AttentionAttrs& attrs, const Tensor& y, const CudaContext& ctx, Path path);

/// Whether Path::hopper can run here: this build has the sm_90a kernel and `ctx`'s device is sm_90.
bool hopper_available(const CudaContext& ctx);

/// Forces the wgmma kernel's launch shape, process-wide (tests and exploration; the environment
/// variable ENCORE_ATTN_HOPPER_SHAPE gives the initial value): "" restores the kernel's own choice;
/// otherwise the consumer warpgroups per block ("1" or "2"), then optionally "x2" (two blocks per
/// multiprocessor: one group, head dim 64 only, else ignored) and "+p" (a persistent grid), e.g.
/// "1x2+p" (the head-dim-64 default) or "2". Throws Error(invalid_argument) on any other string.
void set_hopper_shape_for_testing(const std::string& shape);

}  // namespace encore::cuda::attn
