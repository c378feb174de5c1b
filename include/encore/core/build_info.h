// encore — what this build contains and what the machine offers.
#pragma once

#include <string>
#include <vector>

namespace encore {

/// A CUDA device as the CUDA runtime reports it.
struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  std::size_t total_memory_bytes = 0;
  int multiprocessors = 0;
};

/// Facts about this build and machine, for `encore-info` and bug reports.
struct BuildInfo {
  std::string version;
  std::vector<std::string> backends;   ///< "cpu", and "cuda" when compiled in.
  std::string onednn_version;          ///< e.g. "2.6.3".
  std::string onednn_cpu_isa;          ///< the ISA oneDNN dispatches to, e.g. "avx512_core_vnni".
  std::string cuda_runtime_version;    ///< empty without CUDA.
  std::string cuda_archs;              ///< compiled archs, e.g. "90"; empty without CUDA.
  std::string cuda_status;             ///< why no device is usable, when none is; else empty.
  std::vector<CudaDeviceInfo> cuda_devices;
  int threads = 1;
  int hardware_threads = 1;
};

/// Collects BuildInfo; never throws (failures are described in the string fields).
BuildInfo build_info();

}  // namespace encore
