// The activation of the GEMM family's epilogues (gemm_epilogue.cu's bias + activation kernel and the
// GEMV kernels of gemv.cu), in f32: one definition so that both paths of linear round alike.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/gemm_kernels.h"

namespace encore::cuda::kernels {

__device__ __forceinline__ float activate(float x, Act act) {
  switch (act) {
    case Act::none: return x;
    case Act::gelu: return 0.5f * x * erfcf(-x * 0.70710678118654752f);  // erfc keeps the negative tail
    case Act::gelu_tanh:  // x * sigmoid(2u), as elementwise.cu and the CPU: 0.5x(1 + tanh u) cancels for x << 0
      return x / (1.0f + expf(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
    case Act::relu: return x < 0.0f ? 0.0f : x;  // NaN propagates like torch.relu
    case Act::silu: return x / (1.0f + expf(-x));
    case Act::sigmoid: return 1.0f / (1.0f + expf(-x));
    case Act::tanh: return tanhf(x);
  }
  return x;
}

}  // namespace encore::cuda::kernels
