// CUDA device discovery for build_info(); compiled only when the CUDA backend is enabled.
#include <cuda_runtime_api.h>

#include "core/check.h"
#include "encore/core/build_info.h"

namespace encore::detail {

void query_cuda(BuildInfo& info) {
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  info.cuda_runtime_version = fmt::format("{}.{}", runtime / 1000, (runtime % 1000) / 10);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (driver == 0) {
    info.cuda_status = "no NVIDIA driver is installed on this machine, so no CUDA device can be used";
    cudaGetLastError();
    return;
  }
  if (err != cudaSuccess) {
    info.cuda_status = fmt::format("no usable CUDA device: {} ({}); driver version {}", cudaGetErrorString(err),
                                   cudaGetErrorName(err), driver == 0 ? std::string("none")
                                                                      : fmt::format("{}.{}", driver / 1000,
                                                                                    (driver % 1000) / 10));
    cudaGetLastError();  // clear the sticky error for later calls
    return;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    info.cuda_devices.push_back(CudaDeviceInfo{i, prop.name, prop.major, prop.minor, prop.totalGlobalMem,
                                               prop.multiProcessorCount});
  }
  if (count == 0) info.cuda_status = "no CUDA device present";
}

}  // namespace encore::detail
