// Quantised linear on cuBLASLt's IMMA GEMM (s8 x s8 -> s32), same contract as cpu::linear_int8.
// cuBLASLt wants signed operands in "TN" form with K, the output rows (N) and the leading
// dimensions multiples of 4, so: x (u8) is shifted to s8 and padded to Kp columns, the weights are
// used in place when already aligned (else padded to [Np, Kp] with zeros), and the shift is undone
// exactly in the output kernel with the weights' row sums (kernels/cuda/gemm_int8.cu).
#include <cmath>

#include "backends/cuda/cublas_gemm.h"
#include "backends/cuda/cuda_check.h"
#include "kernels/common/int8_checks.h"
#include "kernels/cuda/gemm_kernels.h"

namespace encore::cuda {
namespace {

std::int64_t round_up4(std::int64_t v) { return (v + 3) / 4 * 4; }

void check_int8_args(CudaRuntime& rt, const Tensor& x, float x_scale, std::int32_t x_zp, const Tensor& w,
                     std::span<const float> w_scales, const Tensor& bias, const Tensor& y, float y_scale,
                     std::int32_t y_zp) {
  ENCORE_CHECK(x.defined() && w.defined() && y.defined(), invalid_argument,
               "linear_int8: x, weight and y must be defined");
  const Device dev = rt.device();
  ENCORE_CHECK(x.device() == dev && w.device() == dev && y.device() == dev && (!bias.defined() || bias.device() == dev),
               invalid_argument, "linear_int8 (CUDA): every tensor must be on {}", dev.str());
  int8_checks::check_linear_int8(x, x_scale, x_zp, w, w_scales, bias, y, y_scale, y_zp);
}

}  // namespace

void linear_int8(const Tensor& x_u8, float x_scale, std::int32_t x_zero_point, const Tensor& w_s8,
                 std::span<const float> w_scales, const Tensor& bias_f32, const Tensor& y, float y_scale,
                 std::int32_t y_zero_point, const CudaContext& ctx) {
  CudaRuntime& rt = runtime_of(ctx, "linear_int8");
  check_int8_args(rt, x_u8, x_scale, x_zero_point, w_s8, w_scales, bias_f32, y, y_scale, y_zero_point);
  const std::int64_t K = x_u8.dim(-1), N = w_s8.dim(0), M = K == 0 ? 0 : x_u8.numel() / K;
  ENCORE_CHECK(K > 0 || y.numel() == 0, unsupported, "linear_int8: K = 0 (x {}) is not supported",
               x_u8.shape().str());
  if (M == 0 || N == 0) return;
  DeviceGuard guard(rt.ordinal());
  cudaStream_t stream = rt.stream();
  const std::int64_t Kp = round_up4(K), Np = round_up4(N);

  // x - 128 as s8 [M, Kp].
  DeviceBuffer x_dense;
  const std::uint8_t* xp = static_cast<const std::uint8_t*>(x_u8.data());
  std::int64_t x_rs = collapsed_row_stride(x_u8), x_cs = x_u8.strides()[x_u8.rank() - 1];
  if (x_rs < 0) {
    x_dense = dense_copy(rt, x_u8);
    xp = x_dense.as<std::uint8_t>();
    x_rs = K;
    x_cs = 1;
  }
  DeviceBuffer x_s8 = rt.scratch(static_cast<std::size_t>(M * Kp));
  ENCORE_CUDA_CHECK(kernels::launch_u8_to_s8_padded(xp, x_rs, x_cs, x_s8.as<std::int8_t>(), M, K, Kp, stream));

  // Weights: in place when cuBLASLt can read them, else a zero-padded [Np, Kp] copy; row sums always.
  DeviceBuffer w_dense, w_padded;
  const std::int8_t* wp = static_cast<const std::int8_t*>(w_s8.data());
  std::int64_t w_rs = w_s8.strides()[0];
  if (w_s8.strides()[1] != 1 && K > 1) {
    w_dense = dense_copy(rt, w_s8);
    wp = w_dense.as<std::int8_t>();
    w_rs = K;
  }
  const bool in_place = K == Kp && N == Np && w_rs % 4 == 0 && w_rs >= K && reinterpret_cast<std::uintptr_t>(wp) % 4 == 0;
  DeviceBuffer wsum = rt.scratch(static_cast<std::size_t>(N) * sizeof(std::int32_t));
  if (!in_place) w_padded = rt.scratch(static_cast<std::size_t>(Np * Kp));
  ENCORE_CUDA_CHECK(kernels::launch_weight_rowsum(wp, w_rs, N, K, wsum.as<std::int32_t>(),
                                                  in_place ? nullptr : w_padded.as<std::int8_t>(), Np, Kp, stream));
  if (!in_place) {
    wp = w_padded.as<std::int8_t>();
    w_rs = Kp;
  }

  // acc^T [Np, M] col-major = W (Kp x Np col-major, transposed) x x_s8^T (Kp x M col-major).
  DeviceBuffer acc = rt.scratch(static_cast<std::size_t>(M * Np) * sizeof(std::int32_t));
  const std::int32_t one = 1, zero = 0;
  LtCall call;
  call.ab_type = CUDA_R_8I;
  call.d_type = CUDA_R_32I;
  call.scale_type = CUDA_R_32I;
  call.compute = CUBLAS_COMPUTE_32I;
  call.op_a = CUBLAS_OP_T;
  call.a_rows = static_cast<std::uint64_t>(Kp);
  call.a_cols = static_cast<std::uint64_t>(Np);
  call.lda = w_rs;
  call.op_b = CUBLAS_OP_N;
  call.b_rows = static_cast<std::uint64_t>(Kp);
  call.b_cols = static_cast<std::uint64_t>(M);
  call.ldb = Kp;
  call.d_rows = static_cast<std::uint64_t>(Np);
  call.d_cols = static_cast<std::uint64_t>(M);
  call.ldd = Np;
  call.A = wp;
  call.B = x_s8.data();
  call.D = acc.data();
  call.alpha = &one;
  call.beta = &zero;
  ENCORE_CHECK(lt_matmul(rt, call), backend, "cuBLASLt has no int8 algorithm for [{}, {}] x [{}, {}] on {} (sm_{})", M,
               Kp, Kp, Np, rt.name(), rt.sm());

  // Scales to the device: a pageable async copy returns once the source is staged, so the span
  // may go away afterwards.
  DeviceBuffer scales = rt.scratch(w_scales.size() * sizeof(float));
  ENCORE_CUDA_CHECK(cudaMemcpyAsync(scales.data(), w_scales.data(), w_scales.size() * sizeof(float),
                                    cudaMemcpyHostToDevice, stream));
  const int y_kind = y.dtype() == DType::F32 ? 0 : y.dtype() == DType::U8 ? 1 : 2;
  ENCORE_CUDA_CHECK(kernels::launch_int8_output(
      acc.as<std::int32_t>(), Np, wsum.as<std::int32_t>(), 128 - x_zero_point, x_scale, scales.as<float>(),
      w_scales.size() == 1 ? 0 : 1, bias_f32.defined() ? static_cast<const float*>(bias_f32.data()) : nullptr,
      bias_f32.defined() ? bias_f32.strides()[0] : 0, y.data(), y_kind, y_scale, y_zero_point, M, N, stream));
}

}  // namespace encore::cuda
