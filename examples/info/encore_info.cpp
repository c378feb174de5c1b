// encore-info: what this build of encore contains and what it finds on this machine.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "encore/encore.h"

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0) {
      fmt::print("usage: encore-info\n  Prints the encore version, compiled backends, the CPU ISA oneDNN uses,\n"
                 "  the CUDA devices found and the default thread count.\n");
      return 0;
    }
    fmt::print(stderr, "encore-info: unknown argument '{}' (try --help)\n", argv[i]);
    return 2;
  }
  try {
    const encore::BuildInfo info = encore::build_info();
    fmt::print("encore {}\n", info.version);
    fmt::print("backends:      {}\n", fmt::join(info.backends, ", "));
    fmt::print("oneDNN:        {} (CPU ISA in use: {})\n", info.onednn_version, info.onednn_cpu_isa);
    fmt::print("threads:       {} (of {} hardware threads)\n", info.threads, info.hardware_threads);
    if (!info.cuda_runtime_version.empty())
      fmt::print("CUDA runtime:  {} (compiled for sm_{})\n", info.cuda_runtime_version, info.cuda_archs);
    if (info.cuda_devices.empty()) {
      fmt::print("CUDA devices:  none ({})\n", info.cuda_status);
    } else {
      for (const auto& d : info.cuda_devices)
        fmt::print("CUDA device {}: {} (compute {}.{}, {} SMs, {:.1f} GiB)\n", d.index, d.name, d.compute_major,
                   d.compute_minor, d.multiprocessors, static_cast<double>(d.total_memory_bytes) / (1 << 30));
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "encore-info: error: {}\n", e.what());
    return 1;
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {  // a full disk must not look like success
    fmt::print(stderr, "encore-info: error: writing the output failed: {}\n", std::strerror(errno));
    return 1;
  }
  return 0;
}
