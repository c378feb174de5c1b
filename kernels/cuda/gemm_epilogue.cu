// Elementwise kernels around the cuBLASLt GEMMs: bias + activation where cuBLASLt's fused
// epilogues do not apply (exact GELU, SiLU, ..., strided or f32 biases on 16-bit outputs, conv's
// per-channel bias), a generic strided -> dense copy for operands cuBLASLt cannot address, and the
// probe used by the runtime to check that this binary has code for the device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/gemm_activation.cuh"
#include "kernels/cuda/gemm_kernels.h"

namespace encore::cuda::kernels {
namespace {

constexpr int kBlock = 256;

// Enough blocks to fill an H200 several times over; the kernels loop over the rest.
unsigned grid_for(std::int64_t n) {
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T, typename B>
__global__ void bias_activation_kernel(T* y, std::int64_t total, std::int64_t channels, std::int64_t inner,
                                       const B* bias, std::int64_t bias_stride, Act act) {
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    float v = load(y + i);
    if (bias != nullptr) v += load(bias + ((i / inner) % channels) * bias_stride);
    store(y + i, activate(v, act));
  }
}

template <typename T, typename B>
cudaError_t launch_bias_act_typed(void* y, std::int64_t total, std::int64_t channels, std::int64_t inner,
                                  const void* bias, std::int64_t bias_stride, Act act, cudaStream_t stream) {
  bias_activation_kernel<T, B><<<grid_for(total), kBlock, 0, stream>>>(
      static_cast<T*>(y), total, channels, inner, static_cast<const B*>(bias), bias_stride, act);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bias_act_for(void* y, std::int64_t total, std::int64_t channels, std::int64_t inner,
                                const void* bias, FloatType bias_type, std::int64_t bias_stride, Act act,
                                cudaStream_t stream) {
  switch (bias_type) {
    case FloatType::f32: return launch_bias_act_typed<T, float>(y, total, channels, inner, bias, bias_stride, act, stream);
    case FloatType::f16: return launch_bias_act_typed<T, __half>(y, total, channels, inner, bias, bias_stride, act, stream);
    case FloatType::bf16:
      return launch_bias_act_typed<T, __nv_bfloat16>(y, total, channels, inner, bias, bias_stride, act, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename E>
__global__ void strided_copy_kernel(E* dst, const E* src, std::int64_t total, StridedLayout layout) {
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    std::int64_t rem = i, off = 0;
    for (int d = layout.rank - 1; d >= 0; --d) {
      off += (rem % layout.shape[d]) * layout.strides[d];
      rem /= layout.shape[d];
    }
    dst[i] = src[off];
  }
}

template <typename E>
cudaError_t launch_copy_typed(void* dst, const void* src, std::int64_t total, const StridedLayout& layout,
                              cudaStream_t stream) {
  strided_copy_kernel<E><<<grid_for(total), kBlock, 0, stream>>>(static_cast<E*>(dst), static_cast<const E*>(src),
                                                                  total, layout);
  return cudaGetLastError();
}

__global__ void probe_kernel(int* out) {
  if (out != nullptr) *out = 1;
}

}  // namespace

cudaError_t launch_bias_activation(void* y, FloatType y_type, std::int64_t total, std::int64_t channels,
                                   std::int64_t inner, const void* bias, FloatType bias_type,
                                   std::int64_t bias_stride, Act act, cudaStream_t stream) {
  if (total <= 0 || (bias == nullptr && act == Act::none)) return cudaSuccess;
  if (channels <= 0 || inner <= 0) return cudaErrorInvalidValue;
  switch (y_type) {
    case FloatType::f32:
      return launch_bias_act_for<float>(y, total, channels, inner, bias, bias_type, bias_stride, act, stream);
    case FloatType::f16:
      return launch_bias_act_for<__half>(y, total, channels, inner, bias, bias_type, bias_stride, act, stream);
    case FloatType::bf16:
      return launch_bias_act_for<__nv_bfloat16>(y, total, channels, inner, bias, bias_type, bias_stride, act, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_strided_copy(void* dst, const void* src, std::int64_t elem_size, const StridedLayout& layout,
                                cudaStream_t stream) {
  if (layout.rank < 0 || layout.rank > kMaxRank) return cudaErrorInvalidValue;
  std::int64_t total = 1;
  for (int d = 0; d < layout.rank; ++d) total *= layout.shape[d];
  if (total <= 0) return cudaSuccess;
  switch (elem_size) {
    case 1: return launch_copy_typed<std::uint8_t>(dst, src, total, layout, stream);
    case 2: return launch_copy_typed<std::uint16_t>(dst, src, total, layout, stream);
    case 4: return launch_copy_typed<std::uint32_t>(dst, src, total, layout, stream);
    case 8: return launch_copy_typed<std::uint64_t>(dst, src, total, layout, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t probe_kernel_image() {
  cudaFuncAttributes attributes{};
  return cudaFuncGetAttributes(&attributes, probe_kernel);
}

int kernel_binary_version() {
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, probe_kernel) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return attributes.binaryVersion;
}

}  // namespace encore::cuda::kernels
