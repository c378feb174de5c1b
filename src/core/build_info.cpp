#include "encore/core/build_info.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "core/check.h"
#include "encore/core/threads.h"
#include "encore/version.h"

namespace encore {
namespace detail {
#ifdef ENCORE_HAVE_CUDA
void query_cuda(BuildInfo& info);  // backends/cuda/device_query.cpp
#endif
}  // namespace detail

namespace {
const char* isa_name(dnnl::cpu_isa isa) {
  using I = dnnl::cpu_isa;
  switch (isa) {
    case I::sse41: return "sse41";
    case I::avx: return "avx";
    case I::avx2: return "avx2";
    case I::avx512_mic: return "avx512_mic";
    case I::avx512_mic_4ops: return "avx512_mic_4ops";
    case I::avx512_core: return "avx512_core";
    case I::avx512_core_vnni: return "avx512_core_vnni";
    case I::avx512_core_bf16: return "avx512_core_bf16";
    case I::avx512_core_amx: return "avx512_core_amx";
    case I::avx2_vnni: return "avx2_vnni";
    default: return "other";
  }
}
}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.version = version();
  info.backends.push_back("cpu");
  const dnnl_version_t* v = dnnl_version();
  info.onednn_version = fmt::format("{}.{}.{}", v->major, v->minor, v->patch);
  try {
    info.onednn_cpu_isa = isa_name(dnnl::get_effective_cpu_isa());
  } catch (const std::exception& e) {
    info.onednn_cpu_isa = fmt::format("unknown ({})", e.what());
  }
  info.threads = num_threads();
  info.hardware_threads = hardware_threads();
#ifdef ENCORE_HAVE_CUDA
  info.backends.push_back("cuda");
  info.cuda_archs = ENCORE_CUDA_ARCHS;
  detail::query_cuda(info);
#else
  info.cuda_status = "this build has no CUDA backend (configure with ENCORE_WITH_CUDA=ON and nvcc present)";
#endif
  return info;
}

}  // namespace encore
