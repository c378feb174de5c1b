// The GEMM layer of the CUDA backend (cublas_gemm.cpp): linear, matmul and conv reduce to
// GemmProblem, which runs through cuBLASLt with a plan (descriptors + heuristic algorithm) cached
// per shape. Also the int8 linear (cublas_int8.cpp).
#pragma once

#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "encore/core/tensor.h"
#include "encore/graph/op_attrs.h"

namespace encore::cuda {

/// A GEMM operand seen as a row-major matrix per batch member: element (r, c) of member b is at
/// ptr + b * batch_stride + (transposed ? c * ld + r : r * ld + c) (in elements).
struct GemmOperand {
  const void* ptr = nullptr;
  std::int64_t ld = 0;
  bool transposed = false;
  std::int64_t batch_stride = 0;  ///< 0 broadcasts one matrix over the batch
};

/// D[b] = act(alpha * A[b] B[b] + bias) for b < batch, with A [M, K], B [K, N] and D a dense
/// row-major [batch, M, N] block. bias is [N] (element n at bias + n * bias_stride) or null.
struct GemmProblem {
  DType dtype = DType::F32;  ///< of A, B and D: f32, f16 or bf16 (accumulation is f32)
  std::int64_t M = 0, N = 0, K = 0, batch = 1;
  GemmOperand a, b;
  void* d = nullptr;
  float alpha = 1.0f;
  const void* bias = nullptr;
  DType bias_dtype = DType::F32;
  std::int64_t bias_stride = 1;
  Activation act = Activation::none;
  bool allow_tf32 = false;  ///< f32 only: CUBLAS_COMPUTE_32F_FAST_TF32
};

/// Runs `p` on rt's stream (its device must be current). Bias and activation go into cuBLASLt's
/// epilogue when it has one for them (bias of D's dtype; relu; tanh-GELU for 16-bit types), else a
/// kernel applies them after the GEMM. K = 0 gives act(bias). Throws Error(backend) when cuBLASLt
/// fails or has no algorithm even for the plain unbatched problem.
void run_gemm(CudaRuntime& rt, const GemmProblem& p);

/// `t` (an operand of `op`) as a GemmOperand over its last two dims [rows, cols], transposed when
/// `transpose`, or a null ptr when its strides need a copy first.
GemmOperand matrix_operand(const Tensor& t, bool transpose);
/// The same for a [rows, cols] matrix at ptr with the given element strides.
GemmOperand matrix_operand(const void* ptr, std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                           std::int64_t col_stride, bool transpose);

/// The stride between consecutive rows of x seen as [numel / x.dim(-1), x.dim(-1)] when its leading
/// dims collapse into one (0 for a single row), -1 when they do not.
std::int64_t collapsed_row_stride(const Tensor& x);

/// A dense row-major copy of any strided device tensor, in a scratch buffer of rt.
DeviceBuffer dense_copy(CudaRuntime& rt, const Tensor& t);

/// One raw cuBLASLt call in cuBLAS's column-major terms (the plan is cached per shape/type key).
struct LtCall {
  cudaDataType_t ab_type = CUDA_R_32F, d_type = CUDA_R_32F, scale_type = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cublasOperation_t op_a = CUBLAS_OP_N, op_b = CUBLAS_OP_N;
  std::uint64_t a_rows = 0, a_cols = 0, b_rows = 0, b_cols = 0, d_rows = 0, d_cols = 0;
  std::int64_t lda = 0, ldb = 0, ldd = 0, a_stride = 0, b_stride = 0, d_stride = 0;
  std::int32_t batch = 1;
  const void* A = nullptr;
  const void* B = nullptr;
  void* D = nullptr;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  const void* alpha = nullptr;  ///< host scalar of scale_type
  const void* beta = nullptr;   ///< host scalar of scale_type (C = D)
};

/// Queues `call`; false (nothing queued) when cuBLASLt has no algorithm for it.
bool lt_matmul(CudaRuntime& rt, const LtCall& call);

/// When linear() runs decode-sized problems (M <= 16 rows of x) on the GEMV kernels
/// (kernels/cuda/gemv.cu) instead of cuBLASLt.
/// - automatic: one row of f16/bf16 x, and only where kernels are launched with programmatic
///   dependent launch (CudaRuntime::programmatic_launch): then the GEMV's weights stream in while
///   the previous kernel ends, and a graph-replayed GPT-2 decode step is faster on it. Without PDL,
///   in f32 and at 8 rows cuBLASLt measured faster on the H200 (docs/benchmarks.md).
/// - always / never: every structurally possible M <= 16 problem / none.
/// ENCORE_CUDA_GEMV=1 means always, =0 never, otherwise automatic (read on first use);
/// set_gemv_policy overrides it for the whole process (tests and benchmarks compare the paths).
enum class GemvPolicy { automatic, always, never };
GemvPolicy gemv_policy();
void set_gemv_policy(GemvPolicy policy);

/// True when linear(x, w, ...) on `rt` runs on the GEMV kernels now: the policy admits it,
/// K = x.dim(-1) > 0, 1 <= M = x.numel() / K <= 16, the leading dims of x collapse into one row
/// stride, and the weight has a unit stride along one of its dims (any alignment; 16-byte aligned
/// rows are faster).
bool linear_takes_gemv(const CudaRuntime& rt, const Tensor& x, const Tensor& w, const LinearAttrs& attrs);

/// Number of cuBLASLt plans cached for rt so far (tests and benchmarks).
std::size_t gemm_plan_count(const CudaRuntime& rt);

/// Quantised linear on cuBLASLt's s8 GEMM; the same contract as cpu::linear_int8
/// (src/backends/cpu/onednn_int8.h): y = dequantised (or requantised) (x - x_zero_point) W^T *
/// x_scale * w_scales[n] + bias[n]. x_u8 [..., K] u8, w_s8 [N, K] s8, bias_f32 [N] f32 or
/// undefined, y [..., N] f32, u8 or s8, contiguous.
void linear_int8(const Tensor& x_u8, float x_scale, std::int32_t x_zero_point, const Tensor& w_s8,
                 std::span<const float> w_scales, const Tensor& bias_f32, const Tensor& y, float y_scale,
                 std::int32_t y_zero_point, const CudaContext& ctx);

}  // namespace encore::cuda
