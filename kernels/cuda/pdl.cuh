// Programmatic dependent launch (PDL, sm_90+). A kernel launched with it may start while the kernel
// before it on the stream is still running; its CTAs then block in wait() until that kernel has
// finished and its writes are visible. A decode step is ~200 dependent kernels of a few µs each,
// so the launch and ramp-up hidden this way is a large share of the step (docs/benchmarks.md).
//
// The contract of a kernel launched through launch() with `pdl` true:
// - every CTA calls wait() before it reads anything an earlier kernel may write and before it
//   writes anything at all (the memory planner reuses buffers, so a write could hit a buffer the
//   previous kernel still reads); before wait() it may only prefetch constants into L2;
// - every CTA calls wait() unconditionally, also CTAs with nothing to do: a kernel's completion
//   must imply its predecessor's, or a later kernel waiting on it would not be ordered after both.
// allow_next() lets the following kernel launch; calling it after wait() keeps one kernel of
// look-ahead (the next kernel's prologue overlaps this one, not a cascade of idle CTAs).
// Both instructions are no-ops for a kernel launched without the attribute, so one kernel body
// serves both launches.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

namespace encore::cuda::pdl {

__device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_next() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// wait() then allow_next(): the start of a kernel with nothing to do before its inputs are ready.
__device__ __forceinline__ void begin() {
  wait();
  allow_next();
}

/// Starts moving the 128-byte line at `p` into L2 (no register result, never faults on the data
/// being stale: L2 is the device's point of coherence).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/// A launch configuration for cudaLaunchKernelEx: programmatic stream serialisation when `pdl` is
/// true (see the contract above), plus optionally a thread-block cluster shape. The attributes live
/// in the object, so it is neither copied nor moved.
struct Config {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attrs[2] = {};

  Config(bool pdl, dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream) {
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attrs;
    if (pdl) {
      attrs[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attrs[cfg.numAttrs].val.programmaticStreamSerializationAllowed = 1;
      ++cfg.numAttrs;
    }
  }
  Config(const Config&) = delete;
  Config& operator=(const Config&) = delete;

  /// CTAs launch in clusters of `shape` (the grid must be a multiple of it).
  void cluster(dim3 shape) {
    attrs[cfg.numAttrs].id = cudaLaunchAttributeClusterDimension;
    attrs[cfg.numAttrs].val.clusterDim.x = shape.x;
    attrs[cfg.numAttrs].val.clusterDim.y = shape.y;
    attrs[cfg.numAttrs].val.clusterDim.z = shape.z;
    ++cfg.numAttrs;
  }
};

/// Launches `kernel` on `stream`, with PDL when `pdl` is true. Returns the launch's error.
template <typename... Params, typename... Args>
cudaError_t launch(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                   cudaStream_t stream, Args&&... args) {
  const Config c(pdl, grid, block, smem, stream);
  return cudaLaunchKernelEx(&c.cfg, kernel, std::forward<Args>(args)...);
}

/// launch() for a kernel known only by address, with its arguments as cudaLaunchKernel takes them.
inline cudaError_t launch_c(bool pdl, const void* kernel, dim3 grid, dim3 block, std::size_t smem,
                            cudaStream_t stream, void** args) {
  const Config c(pdl, grid, block, smem, stream);
  return cudaLaunchKernelExC(&c.cfg, kernel, args);
}

}  // namespace encore::cuda::pdl
