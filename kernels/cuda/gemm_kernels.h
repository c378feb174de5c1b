// Launchers of the small CUDA kernels around the cuBLASLt GEMMs (epilogues, packing, im2col,
// int8 helpers). Plain C++ on purpose: the .cu files see only CUDA headers, the host side
// (src/backends/cuda/*.cpp) checks the returned cudaError_t and turns it into encore::Error.
// Every launcher is asynchronous on `stream` and returns the launch status.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace encore::cuda::kernels {

/// Floating element types the kernels take.
enum class FloatType : int { f32 = 0, f16 = 1, bf16 = 2 };

/// Pointwise activations; the values mirror encore::Activation (static_assert'ed on the host side).
enum class Act : int { none = 0, gelu = 1, gelu_tanh = 2, relu = 3, silu = 4, sigmoid = 5, tanh = 6 };

/// Most dimensions a strided copy takes (= encore::kMaxDims).
inline constexpr int kMaxRank = 8;

/// y[i] = act(y[i] + bias[((i / inner) % channels) * bias_stride]) for i in [0, total), in f32.
/// bias may be null (then only the activation). Linear: inner = 1, channels = N; conv: inner =
/// OH*OW, channels = O.
cudaError_t launch_bias_activation(void* y, FloatType y_type, std::int64_t total, std::int64_t channels,
                                   std::int64_t inner, const void* bias, FloatType bias_type,
                                   std::int64_t bias_stride, Act act, cudaStream_t stream);

/// Most rows of x the GEMV kernels (gemv.cu) take: decode steps (beams, small batches).
inline constexpr std::int64_t kGemvMaxRows = 16;

/// y[m, n] = act(sum_k x[m, k] w(k, n) + bias[n]) for M <= kGemvMaxRows, f32 accumulation, y
/// rounded once. Strides are in elements. The weight is read once for all rows.
struct GemvArgs {
  FloatType type = FloatType::f32;  ///< of x, w and y
  std::int64_t M = 0, N = 0, K = 0;  ///< all > 0
  const void* x = nullptr;           ///< element (m, k) at x[m * x_row_stride + k * x_col_stride]
  std::int64_t x_row_stride = 0, x_col_stride = 1;
  const void* w = nullptr;  ///< element (k, n) at w[k * ldw + n], or w[n * ldw + k] when k_contiguous
  std::int64_t ldw = 0;
  bool k_contiguous = false;
  const void* bias = nullptr;  ///< element n at bias[n * bias_stride], or null
  FloatType bias_type = FloatType::f32;
  std::int64_t bias_stride = 1;
  Act act = Act::none;
  void* y = nullptr;  ///< dense [M, N]
  /// Launch with programmatic dependent launch (kernels/cuda/pdl.cuh): the CTAs prefetch their
  /// weights into L2 while the previous kernel finishes, then wait for it.
  bool pdl = false;
  /// Thread-block clusters may hold the splits of K (sm_90+): they are summed through distributed
  /// shared memory instead of a global workspace.
  bool clusters = false;
};

/// Queues the GEMV on `stream` (device `ordinal` current; `multiprocessors` of it). Splits of K
/// across CTAs are summed in a fixed order by the last CTA of each column tile (bitwise
/// reproducible); their partial sums and tile counters live in a buffer kept per (device, stream)
/// that survives CUDA-graph replays. Weights whose rows are not 16-byte aligned are read element by
/// element (slower, same results).
cudaError_t launch_gemv(const GemvArgs& args, int ordinal, int multiprocessors, cudaStream_t stream);

/// dst (dense, row-major) = src viewed with `shape`/`strides` (elements); elem_size 1, 2, 4 or 8.
struct StridedLayout {
  int rank = 0;
  std::int64_t shape[kMaxRank] = {};
  std::int64_t strides[kMaxRank] = {};
};
cudaError_t launch_strided_copy(void* dst, const void* src, std::int64_t elem_size, const StridedLayout& layout,
                                cudaStream_t stream);

/// Returns cudaSuccess when this binary holds code the current device can run (probes a trivial
/// kernel with cudaFuncGetAttributes; no launch).
cudaError_t probe_kernel_image();
/// The architecture (major * 10 + minor) of the code the current device runs for encore's
/// kernels: 90 for sm_90 code, 80 when a compute_80 build is JIT-compiled on an H100; -1 on failure.
/// Device code for PDL and thread-block clusters exists only from 90 on.
int kernel_binary_version();

/// Geometry of one im2col: x [images, C, H, W] with element strides xs_*, col [images, C*kh*kw,
/// OH*OW] dense; zero padding.
struct Im2colGeometry {
  std::int64_t C = 0, H = 0, W = 0, kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, OH = 0, OW = 0;
  std::int64_t xs_n = 0, xs_c = 0, xs_h = 0, xs_w = 0;
};
/// General im2col; elem_size 2 or 4 (the copy is bitwise, so any 16/32-bit float works).
cudaError_t launch_im2col(const void* x, void* col, std::int64_t elem_size, std::int64_t images,
                          const Im2colGeometry& g, cudaStream_t stream);
/// im2col for kernel == stride, no padding, no dilation (patch embeddings): no bounds checks.
cudaError_t launch_patchify(const void* x, void* col, std::int64_t elem_size, std::int64_t images,
                            const Im2colGeometry& g, cudaStream_t stream);

/// int8 linear helpers (cublas_int8.cpp). x_s8[m, k] = x_u8[m, k] - 128 for k < K, 0 for K <= k < Kp.
cudaError_t launch_u8_to_s8_padded(const std::uint8_t* x, std::int64_t x_row_stride, std::int64_t x_col_stride,
                                   std::int8_t* out, std::int64_t M, std::int64_t K, std::int64_t Kp,
                                   cudaStream_t stream);
/// wsum[n] = sum_k w[n, k] (n < N); when w_padded is non-null also writes w into [Np, Kp] with zeros.
cudaError_t launch_weight_rowsum(const std::int8_t* w, std::int64_t w_row_stride, std::int64_t N, std::int64_t K,
                                 std::int32_t* wsum, std::int8_t* w_padded, std::int64_t Np, std::int64_t Kp,
                                 cudaStream_t stream);
/// v = x_scale * w_scales[n or 0] * (acc[m, n] + zp_shift * wsum[n]) + bias[n * bias_stride];
/// y f32 = v, or y u8/s8 = saturate(rint(v / y_scale) + y_zero_point). y_kind: 0 f32, 1 u8, 2 s8.
cudaError_t launch_int8_output(const std::int32_t* acc, std::int64_t ld_acc, const std::int32_t* wsum,
                               std::int32_t zp_shift, float x_scale, const float* w_scales, int per_channel,
                               const float* bias, std::int64_t bias_stride, void* y, int y_kind, float y_scale,
                               std::int32_t y_zero_point, std::int64_t M, std::int64_t N, cudaStream_t stream);

}  // namespace encore::cuda::kernels
