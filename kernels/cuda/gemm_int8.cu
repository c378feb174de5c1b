// Helpers of the cuBLASLt int8 linear (src/backends/cuda/cublas_int8.cpp). cuBLASLt's IMMA GEMM
// takes s8 x s8 -> s32 with K and the output rows a multiple of 4, so u8 activations are shifted
// to s8 (x - 128) and padded, and the shift is undone exactly in the output kernel:
//   sum_k (x - zp) w = sum_k (x - 128) w + (128 - zp) * sum_k w.
#include "kernels/cuda/gemm_kernels.h"

namespace encore::cuda::kernels {
namespace {

constexpr int kBlock = 256;

unsigned grid_for(std::int64_t n) {
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

__global__ void u8_to_s8_kernel(const std::uint8_t* x, std::int64_t rs, std::int64_t cs, std::int8_t* out,
                                std::int64_t M, std::int64_t K, std::int64_t Kp) {
  const std::int64_t total = M * Kp, step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const std::int64_t m = i / Kp, k = i % Kp;
    out[i] = k < K ? static_cast<std::int8_t>(static_cast<int>(x[m * rs + k * cs]) - 128) : std::int8_t{0};
  }
}

// One block per weight row: the row sum (warp shuffles, then one warp over the partial sums) and
// optionally the zero-padded copy.
__global__ void weight_rowsum_kernel(const std::int8_t* w, std::int64_t rs, std::int64_t N, std::int64_t K,
                                     std::int32_t* wsum, std::int8_t* padded, std::int64_t Np, std::int64_t Kp) {
  __shared__ int partial[kBlock / 32];
  for (std::int64_t n = blockIdx.x; n < Np; n += gridDim.x) {
    int sum = 0;
    for (std::int64_t k = threadIdx.x; k < (padded != nullptr ? Kp : K); k += blockDim.x) {
      const std::int8_t v = (n < N && k < K) ? w[n * rs + k] : std::int8_t{0};
      sum += v;
      if (padded != nullptr) padded[n * Kp + k] = v;
    }
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (threadIdx.x < 32) {
      int total = threadIdx.x < kBlock / 32 ? partial[threadIdx.x] : 0;
      for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_down_sync(0xffffffffu, total, offset);
      if (threadIdx.x == 0 && n < N) wsum[n] = total;
    }
    __syncthreads();  // partial[] is reused by the next row
  }
}

__global__ void int8_output_kernel(const std::int32_t* acc, std::int64_t ld, const std::int32_t* wsum,
                                   std::int32_t zp_shift, float x_scale, const float* w_scales, int per_channel,
                                   const float* bias, std::int64_t bias_stride, void* y, int y_kind, float y_scale,
                                   std::int32_t y_zp, std::int64_t M, std::int64_t N) {
  const std::int64_t total = M * N, step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const std::int64_t m = i / N, n = i % N;
    const std::int64_t exact = static_cast<std::int64_t>(acc[m * ld + n]) + static_cast<std::int64_t>(zp_shift) * wsum[n];
    // Explicit roundings (no FMA contraction): the CPU computes (x_scale * w_scale) * acc + bias.
    const float scale = __fmul_rn(x_scale, w_scales[per_channel ? n : 0]);
    float v = __fmul_rn(static_cast<float>(exact), scale);
    if (bias != nullptr) v = __fadd_rn(v, bias[n * bias_stride]);
    if (y_kind == 0) {
      static_cast<float*>(y)[i] = v;
      continue;
    }
    const float q = rintf(__fdiv_rn(v, y_scale)) + static_cast<float>(y_zp);  // rint: half to even
    const float lo = y_kind == 1 ? 0.0f : -128.0f, hi = y_kind == 1 ? 255.0f : 127.0f;
    const float s = fminf(fmaxf(q, lo), hi);
    if (y_kind == 1) static_cast<std::uint8_t*>(y)[i] = static_cast<std::uint8_t>(s);
    else static_cast<std::int8_t*>(y)[i] = static_cast<std::int8_t>(s);
  }
}

}  // namespace

cudaError_t launch_u8_to_s8_padded(const std::uint8_t* x, std::int64_t x_row_stride, std::int64_t x_col_stride,
                                   std::int8_t* out, std::int64_t M, std::int64_t K, std::int64_t Kp,
                                   cudaStream_t stream) {
  if (M * Kp <= 0) return cudaSuccess;
  u8_to_s8_kernel<<<grid_for(M * Kp), kBlock, 0, stream>>>(x, x_row_stride, x_col_stride, out, M, K, Kp);
  return cudaGetLastError();
}

cudaError_t launch_weight_rowsum(const std::int8_t* w, std::int64_t w_row_stride, std::int64_t N, std::int64_t K,
                                 std::int32_t* wsum, std::int8_t* w_padded, std::int64_t Np, std::int64_t Kp,
                                 cudaStream_t stream) {
  const std::int64_t rows = w_padded != nullptr ? Np : N;
  if (rows <= 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(rows < 65536 ? rows : 65536);
  weight_rowsum_kernel<<<grid, kBlock, 0, stream>>>(w, w_row_stride, N, K, wsum, w_padded, rows, Kp);
  return cudaGetLastError();
}

cudaError_t launch_int8_output(const std::int32_t* acc, std::int64_t ld_acc, const std::int32_t* wsum,
                               std::int32_t zp_shift, float x_scale, const float* w_scales, int per_channel,
                               const float* bias, std::int64_t bias_stride, void* y, int y_kind, float y_scale,
                               std::int32_t y_zero_point, std::int64_t M, std::int64_t N, cudaStream_t stream) {
  if (M * N <= 0) return cudaSuccess;
  if (y_kind < 0 || y_kind > 2) return cudaErrorInvalidValue;
  int8_output_kernel<<<grid_for(M * N), kBlock, 0, stream>>>(acc, ld_acc, wsum, zp_shift, x_scale, w_scales,
                                                              per_channel, bias, bias_stride, y, y_kind, y_scale,
                                                              y_zero_point, M, N);
  return cudaGetLastError();
}

}  // namespace encore::cuda::kernels
