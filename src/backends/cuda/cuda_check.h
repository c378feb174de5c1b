// Error checks for CUDA runtime and cuBLAS(Lt) calls: a failure becomes Error(backend) naming the
// call, the error's name and description, and file:line. Host-side (.cpp) code only; the .cu
// launchers return cudaError_t and their callers check it with ENCORE_CUDA_CHECK.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "core/check.h"

namespace encore::cuda::errors {

[[noreturn]] inline void fail_cuda(cudaError_t err, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so that later calls do not report it again
  // Running out of device memory is the caller's to handle (smaller batch, release_plans()).
  const ErrorCode code = err == cudaErrorMemoryAllocation ? ErrorCode::out_of_memory : ErrorCode::backend;
  ::encore::detail::fail(code, "CUDA call {} failed: {} ({}) at {}:{}", call, cudaGetErrorName(err),
                         cudaGetErrorString(err), file, line);
}

[[noreturn]] inline void fail_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  ::encore::detail::fail(ErrorCode::backend, "cuBLAS call {} failed: {} ({}) at {}:{}", call,
                         cublasGetStatusName(status), cublasGetStatusString(status), file, line);
}

}  // namespace encore::cuda::errors

/// Throws Error(backend) when a CUDA runtime call (or a kernel launcher) does not return cudaSuccess.
#define ENCORE_CUDA_CHECK(call)                                                            \
  do {                                                                                     \
    const cudaError_t encore_cuda_err_ = (call);                                           \
    if (encore_cuda_err_ != cudaSuccess)                                                   \
      ::encore::cuda::errors::fail_cuda(encore_cuda_err_, #call, __FILE__, __LINE__);      \
  } while (0)

/// Throws Error(backend) when a cuBLAS or cuBLASLt call does not return CUBLAS_STATUS_SUCCESS.
#define ENCORE_CUBLAS_CHECK(call)                                                          \
  do {                                                                                     \
    const cublasStatus_t encore_cublas_status_ = (call);                                   \
    if (encore_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                    \
      ::encore::cuda::errors::fail_cublas(encore_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

/// Checks the launch of a kernel just issued with <<<...>>>; `what` is a string literal naming it.
#define ENCORE_CUDA_CHECK_LAUNCH(what)                                                        \
  do {                                                                                     \
    const cudaError_t encore_cuda_err_ = cudaGetLastError();                               \
    if (encore_cuda_err_ != cudaSuccess)                                                   \
      ::encore::cuda::errors::fail_cuda(encore_cuda_err_, "launch of " what, __FILE__, __LINE__); \
  } while (0)
