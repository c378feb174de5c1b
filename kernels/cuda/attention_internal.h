// Test and benchmark knobs of the CUDA attention kernel (kernels/cuda/attention.cu). Plain C++: the
// tests include it without CUDA headers.
#pragma once

#include "backends/cuda/cuda_kernels.h"

namespace encore::cuda::attn {

/// Which kernel attention_impl runs.
enum class Path {
  automatic,    ///< tensor cores when eligible (f16/bf16, D % 8 == 0, D <= 128, 16-byte aligned rows)
  tensor_core,  ///< tensor cores; throws Error(unsupported) when the problem is not eligible
  generic,      ///< the CUDA-core kernel (any float dtype, any strides, D <= 256)
};

/// attention() with the kernel chosen by `path`; validates like attention().
void attention_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                    const AttentionAttrs& attrs, const Tensor& y, const CudaContext& ctx, Path path);

}  // namespace encore::cuda::attn
