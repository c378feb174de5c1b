// The CUDA runtime of one device: its stream, cuBLAS/cuBLASLt handles and workspace, pinned host
// staging and caching allocator. Every CUDA kernel of encore runs on runtime.stream() with the
// runtime's device current (DeviceGuard), so that the caching allocator's stream order holds.
//
// Runtimes are created lazily by CudaRuntime::get (thread-safe) and live until the process exits
// (deliberately never destroyed: tearing down CUDA objects during static destruction races the
// driver's own shutdown).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <mutex>
#include <span>
#include <string>

#include "backends/cuda/caching_allocator.h"
#include "backends/cuda/cuda_kernels.h"
#include "encore/core/allocator.h"
#include "encore/core/device.h"

namespace encore::cuda {

/// Whether the primary context of CUDA device `ordinal` exists (the driver's
/// cuDevicePrimaryCtxGetState; true when the driver cannot be asked). Never throws.
bool primary_context_active(int ordinal) noexcept;

/// Makes `previous` (a device a scope switched away from) current again if it has a context;
/// see DeviceGuard. Never throws.
void restore_device(int previous) noexcept;

/// Makes CUDA device `ordinal` current for the scope, restoring the previous one afterwards, unless
/// the previous one has no context yet: since CUDA 12 cudaSetDevice creates the device's context,
/// and restoring the thread's default device 0 would then create one (hundreds of MB) on a GPU the
/// process never used, e.g. in a process that only uses cuda:1 (PyTorch restores the same way).
/// So a thread that never chose a device is left on the last one encore used: host code that
/// relies on the implicit device 0 afterwards should call cudaSetDevice itself.
class DeviceGuard {
 public:
  explicit DeviceGuard(int ordinal);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

/// Device memory from a caching allocator, returned to it on destruction (scratch buffers).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(CachingAllocator& allocator, std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const noexcept { return ptr_; }
  template <typename T> T* as() const noexcept { return static_cast<T*>(ptr_); }
  std::size_t size() const noexcept { return bytes_; }

 private:
  CachingAllocator* allocator_ = nullptr;
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

class CudaRuntime {
 public:
  /// Size of the cuBLAS/cuBLASLt workspace (shared: both run on the one stream).
  static constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;
  /// Host<->device copies up to this size go through the pinned staging buffer.
  static constexpr std::size_t kStagingLimit = std::size_t{4} << 20;

  /// The runtime of `device` (created on first use). Throws Error(invalid_argument) for a
  /// non-CUDA device or an ordinal beyond the devices present, Error(backend) when there is no
  /// driver or device, the driver is older than the CUDA runtime encore was built with, or this
  /// build has no code for the device's architecture.
  static CudaRuntime& get(Device device);
  /// The runtime of `ordinal` if it was already created, else nullptr. Never throws.
  static CudaRuntime* find(int ordinal) noexcept;
  /// Number of CUDA devices usable by this process; 0 when there is no driver or device (never
  /// throws, creates no runtime).
  static int device_count() noexcept;

  CudaRuntime(const CudaRuntime&) = delete;
  CudaRuntime& operator=(const CudaRuntime&) = delete;

  Device device() const noexcept { return Device::cuda(ordinal_); }
  int ordinal() const noexcept { return ordinal_; }
  /// Compute capability as major * 10 + minor (90 on an H100/H200).
  int sm() const noexcept { return sm_; }
  const std::string& name() const noexcept { return name_; }
  std::size_t total_memory() const noexcept { return total_memory_; }
  int multiprocessors() const noexcept { return multiprocessors_; }
  /// Whether kernels that support it are launched with programmatic dependent launch (PDL: the
  /// next kernel's CTAs start while this one finishes and wait for it on the device; sm_90+).
  /// On by default where the device has it; ENCORE_CUDA_PDL=0 turns it off (read once).
  bool programmatic_launch() const noexcept { return pdl_; }
  /// Overrides that choice (tests and benchmarks compare both; never while kernels are launched
  /// from another thread). Has no effect below sm_90.
  void set_programmatic_launch(bool on) noexcept { pdl_ = on && sm90_code_; }
  /// Whether the code this device runs for encore's kernels is sm_90 code: only then do their PDL
  /// waits and thread-block cluster paths exist (a compute_80 build JIT-compiled on an H200 has
  /// neither, and its GEMV would leave outputs unwritten if asked for clusters).
  bool sm90_code() const noexcept { return sm90_code_; }

  cudaStream_t stream() const noexcept { return stream_; }
  /// cuBLAS handle bound to stream() with the shared workspace; default math mode (no TF32).
  cublasHandle_t cublas() const noexcept { return cublas_; }
  cublasLtHandle_t cublaslt() const noexcept { return cublaslt_; }
  void* workspace() const noexcept { return workspace_; }

  CachingAllocator& allocator() noexcept { return allocator_; }
  /// A scratch buffer from the caching allocator (stream-ordered: free it only after queuing
  /// the kernels that use it, never across streams).
  DeviceBuffer scratch(std::size_t bytes) { return DeviceBuffer(allocator_, bytes); }

  /// A CudaContext for the kernels of cuda_kernels.h.
  CudaContext context(bool allow_tf32 = false) noexcept { return CudaContext{this, allow_tf32}; }

  /// Waits for the stream; an asynchronous kernel failure surfaces here as Error(backend).
  void synchronize();
  /// Copies `bytes` between host and device or device and device (this runtime's device on one
  /// side at least) and waits for it and for everything queued before it.
  void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes);
  /// cudaMemsetAsync on the stream.
  void memset(void* ptr, int value, std::size_t bytes);
  /// Device-to-device copies of non-overlapping regions of this device, queued on the stream as
  /// one batch (not waited for: stream order makes later kernels and copies see them).
  void copy_within(std::span<const Allocator::Region> regions);

 private:
  explicit CudaRuntime(int ordinal);
  void copy_host_to_device(void* dst, const void* src, std::size_t bytes);
  void copy_device_to_host(void* dst, const void* src, std::size_t bytes);
  void* staging(std::size_t bytes);  // with staging_mutex_ held

  int ordinal_;
  int sm_ = 0;
  int multiprocessors_ = 0;
  bool pdl_ = false;
  bool sm90_code_ = false;
  std::size_t total_memory_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t cublaslt_ = nullptr;
  void* workspace_ = nullptr;
  CachingAllocator allocator_;
  std::mutex staging_mutex_;
  void* staging_ = nullptr;
  std::size_t staging_bytes_ = 0;
};

/// The runtime of a kernel context; throws Error(invalid_argument) naming `op` when unset.
CudaRuntime& runtime_of(const CudaContext& ctx, const char* op);

/// Registers encore's CUDA allocator for DeviceType::CUDA with the core, so that
/// Tensor::empty/to(Device::cuda(i)) work. Idempotent; touches no driver and creates no context
/// (the library also does it from a static initialiser, and CudaRuntime::get does it again).
void ensure_registered();

/// The allocator registered for DeviceType::CUDA (dispatches to each device's runtime).
Allocator& device_allocator();

}  // namespace encore::cuda
