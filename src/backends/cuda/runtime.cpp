#include "backends/cuda/runtime.h"

#include <cuda.h>  // CUresult, CUdevice (the types only: the driver is reached through the runtime)

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_kernels.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/gemm_kernels.h"

#ifndef ENCORE_CUDA_ARCHS
#define ENCORE_CUDA_ARCHS "unknown"
#endif

namespace encore::cuda {
namespace {

// Device::parse accepts ordinals up to 1023.
constexpr int kMaxDevices = 1024;

std::array<std::atomic<CudaRuntime*>, kMaxDevices> g_runtimes{};
std::mutex g_create_mutex;

std::string version_text(int v) { return fmt::format("{}.{}", v / 1000, (v % 1000) / 10); }

// The checks that give a clear message before anything else touches the device.
void check_environment(int ordinal) {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) {
    cudaGetLastError();
    driver = 0;
  }
  if (driver == 0)
    detail::fail(ErrorCode::backend,
                 "no NVIDIA driver is installed (libcuda could not be loaded); encore's CUDA backend needs a "
                 "driver for CUDA {} or newer",
                 version_text(CUDART_VERSION));
  // Within one major version the runtime runs on an older driver (minor version compatibility);
  // across major versions it does not.
  if (driver / 1000 < CUDART_VERSION / 1000)
    detail::fail(ErrorCode::backend,
                 "the NVIDIA driver supports CUDA {} but this build of encore uses the CUDA {} runtime; install a "
                 "driver for CUDA {} or newer",
                 version_text(driver), version_text(CUDART_VERSION), version_text(CUDART_VERSION));
  if (driver < CUDART_VERSION)
    detail::log(LogLevel::warn, "the NVIDIA driver supports CUDA {}, older than encore's CUDA {} runtime; running "
                "under minor version compatibility", version_text(driver), version_text(CUDART_VERSION));

  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    detail::fail(ErrorCode::backend, "no usable CUDA device: {} ({}); driver supports CUDA {}", cudaGetErrorString(err),
                 cudaGetErrorName(err), version_text(driver));
  }
  if (count == 0) detail::fail(ErrorCode::backend, "no CUDA device is present (driver supports CUDA {})",
                               version_text(driver));
  if (ordinal >= count)
    detail::fail(ErrorCode::invalid_argument, "cuda:{} requested but {} CUDA device{} present", ordinal, count,
                 count == 1 ? " is" : "s are");
}

// The encore::Allocator for DeviceType::CUDA: dispatches to the runtime of each device.
class CudaDeviceAllocator final : public Allocator {
 public:
  void* allocate(std::size_t bytes, std::size_t alignment, Device device) override {
    // cudaMalloc returns 256-byte aligned memory and every block size is a multiple of 512.
    ENCORE_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0 && alignment <= 256, invalid_argument,
                 "CUDA allocation of {} bytes with alignment {}: must be a power of two <= 256", bytes, alignment);
    return CudaRuntime::get(device).allocator().allocate(bytes);
  }
  void deallocate(void* ptr, std::size_t, Device device) noexcept override {
    if (CudaRuntime* rt = CudaRuntime::find(device.index)) rt->allocator().deallocate(ptr);
  }
  void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override {
    if (bytes == 0) return;
    ENCORE_CHECK(dst_device.is_cuda() || src_device.is_cuda(), invalid_argument,
                 "CUDA allocator asked to copy {} bytes from {} to {}", bytes, src_device.str(), dst_device.str());
    CudaRuntime::get(dst_device.is_cuda() ? dst_device : src_device).copy(dst, dst_device, src, src_device, bytes);
  }
  void copy_within(std::span<const Region> regions, Device device) override {
    ENCORE_CHECK(device.is_cuda(), invalid_argument, "CUDA allocator asked to copy within {}", device.str());
    CudaRuntime::get(device).copy_within(regions);
  }
  void copy_view(const Tensor& dst, const Tensor& src, Device device) override {
    ENCORE_CHECK(device.is_cuda() && dst.device() == device && src.device() == device, invalid_argument,
                 "CUDA allocator asked to copy a view from {} to {} on {}", src.device().str(), dst.device().str(),
                 device.str());
    if (dst.numel() == 0) return;
    CudaRuntime& rt = CudaRuntime::get(device);
    DeviceGuard guard(device.index);
    cuda::copy(src, dst, rt.context());  // the strided copy kernel, on the device's stream
    ENCORE_CUDA_CHECK(cudaStreamSynchronize(rt.stream()));
  }
  Usage usage(Device device) const override {
    CudaRuntime* rt = device.is_cuda() ? CudaRuntime::find(device.index) : nullptr;
    if (rt == nullptr) return {};  // never used: nothing allocated
    const AllocatorStats s = rt->allocator().stats();
    return Usage{s.allocated_bytes, s.reserved_bytes, s.peak_allocated_bytes};
  }
  void reset_peak(Device device) override {
    if (CudaRuntime* rt = device.is_cuda() ? CudaRuntime::find(device.index) : nullptr) rt->allocator().reset_peak();
  }
  std::size_t release_cached(Device device) override {
    CudaRuntime* rt = device.is_cuda() ? CudaRuntime::find(device.index) : nullptr;
    return rt == nullptr ? 0 : rt->allocator().trim();  // a device never used holds nothing
  }
};

CudaDeviceAllocator g_device_allocator;

// Registration at load time: only stores a pointer (no driver call), so it is harmless without a
// GPU. allocator.cpp's table is initialised before this file's objects (link order); should that
// ever change, CudaRuntime::get registers again.
[[maybe_unused]] const bool g_registered_at_load = (ensure_registered(), true);

}  // namespace

// ---- DeviceGuard, DeviceBuffer -------------------------------------------------------------------

bool primary_context_active(int ordinal) noexcept {
  using DeviceGet = CUresult (*)(CUdevice*, int);
  using GetState = CUresult (*)(CUdevice, unsigned*, int*);
  struct Driver {
    DeviceGet device_get = nullptr;
    GetState get_state = nullptr;
  };
  static const Driver driver = [] {  // through the runtime: encore does not link libcuda
    Driver d;
    const auto entry = [](const char* name) -> void* {
      void* f = nullptr;
      cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
      if (cudaGetDriverEntryPointByVersion(name, &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
          q != cudaDriverEntryPointSuccess) {
        cudaGetLastError();
        return nullptr;
      }
      return f;
    };
    d.device_get = reinterpret_cast<DeviceGet>(entry("cuDeviceGet"));
    d.get_state = reinterpret_cast<GetState>(entry("cuDevicePrimaryCtxGetState"));
    return d;
  }();
  if (driver.device_get == nullptr || driver.get_state == nullptr) return true;
  CUdevice dev = 0;
  unsigned flags = 0;
  int active = 1;
  if (driver.device_get(&dev, ordinal) != CUDA_SUCCESS || driver.get_state(dev, &flags, &active) != CUDA_SUCCESS)
    return true;
  return active != 0;
}

DeviceGuard::DeviceGuard(int ordinal) {
  int current = -1;
  ENCORE_CUDA_CHECK(cudaGetDevice(&current));
  if (current != ordinal) {
    ENCORE_CUDA_CHECK(cudaSetDevice(ordinal));
    previous_ = current;
  }
}

void restore_device(int previous) noexcept {
  if (previous < 0 || !primary_context_active(previous)) return;  // see DeviceGuard's comment
  if (cudaSetDevice(previous) != cudaSuccess) cudaGetLastError();
}

DeviceGuard::~DeviceGuard() { restore_device(previous_); }

DeviceBuffer::DeviceBuffer(CachingAllocator& allocator, std::size_t bytes)
    : allocator_(&allocator), ptr_(allocator.allocate(bytes)), bytes_(bytes) {}

DeviceBuffer::~DeviceBuffer() {
  if (allocator_ != nullptr) allocator_->deallocate(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : allocator_(std::exchange(other.allocator_, nullptr)), ptr_(std::exchange(other.ptr_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (allocator_ != nullptr) allocator_->deallocate(ptr_);
    allocator_ = std::exchange(other.allocator_, nullptr);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

// ---- CudaRuntime ---------------------------------------------------------------------------------

CudaRuntime& CudaRuntime::get(Device device) {
  ENCORE_CHECK(device.is_cuda(), invalid_argument, "CudaRuntime::get: {} is not a CUDA device", device.str());
  ENCORE_CHECK(device.index >= 0 && device.index < kMaxDevices, invalid_argument,
               "CUDA device ordinal {} is out of range [0, {})", device.index, kMaxDevices);
  auto& slot = g_runtimes[static_cast<std::size_t>(device.index)];
  if (CudaRuntime* rt = slot.load(std::memory_order_acquire)) return *rt;
  std::lock_guard<std::mutex> lock(g_create_mutex);
  if (CudaRuntime* rt = slot.load(std::memory_order_acquire)) return *rt;
  check_environment(device.index);
  auto* rt = new CudaRuntime(device.index);  // never deleted: see runtime.h
  slot.store(rt, std::memory_order_release);
  ensure_registered();
  return *rt;
}

CudaRuntime* CudaRuntime::find(int ordinal) noexcept {
  if (ordinal < 0 || ordinal >= kMaxDevices) return nullptr;
  return g_runtimes[static_cast<std::size_t>(ordinal)].load(std::memory_order_acquire);
}

int CudaRuntime::device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

namespace {
// kc::device_malloc's out-of-memory hook: the kernels' own buffers may get what this device's
// cache holds (what release_cached_memory() gives back).
void release_cached_blocks(int device) noexcept { (void)g_device_allocator.release_cached(Device::cuda(device)); }
}  // namespace

CudaRuntime::CudaRuntime(int ordinal) : ordinal_(ordinal), allocator_(ordinal) {
  kc::release_cached_hook().store(&release_cached_blocks, std::memory_order_release);
  DeviceGuard guard(ordinal);
  cudaDeviceProp prop{};
  ENCORE_CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
  sm_ = prop.major * 10 + prop.minor;
  name_ = prop.name;
  total_memory_ = prop.totalGlobalMem;
  multiprocessors_ = prop.multiProcessorCount;
  const char* pdl = std::getenv("ENCORE_CUDA_PDL");
  sm90_code_ = sm_ >= 90 && kernels::kernel_binary_version() >= 90;
  pdl_ = sm90_code_ && !(pdl != nullptr && std::strcmp(pdl, "0") == 0);

  // Does this binary have code for the device? (Loads one kernel; nothing is launched.)
  const cudaError_t probe = kernels::probe_kernel_image();
  if (probe == cudaErrorNoKernelImageForDevice || probe == cudaErrorInvalidDeviceFunction) {
    cudaGetLastError();
    detail::fail(ErrorCode::backend,
                 "cuda:{} ({}) is sm_{}, but this build of encore contains code only for CUDA architectures {}; "
                 "rebuild with -DENCORE_CUDA_ARCHITECTURES={} ({})",
                 ordinal, name_, sm_, ENCORE_CUDA_ARCHS, sm_, cudaGetErrorName(probe));
  }
  ENCORE_CUDA_CHECK(probe);

  // Objects created before a failure below are leaked; a runtime that fails here is unusable anyway.
  ENCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  ENCORE_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  ENCORE_CUBLAS_CHECK(cublasCreate(&cublas_));
  ENCORE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  ENCORE_CUBLAS_CHECK(cublasSetWorkspace(cublas_, workspace_, kWorkspaceBytes));
  ENCORE_CUBLAS_CHECK(cublasLtCreate(&cublaslt_));
  detail::log(LogLevel::debug, "CUDA runtime for cuda:{}: {} (sm_{}, {} SMs, {:.1f} GiB)", ordinal, name_, sm_,
              multiprocessors_, static_cast<double>(total_memory_) / (1 << 30));
}

void CudaRuntime::synchronize() {
  DeviceGuard guard(ordinal_);
  ENCORE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaRuntime::memset(void* ptr, int value, std::size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard guard(ordinal_);
  ENCORE_CUDA_CHECK(cudaMemsetAsync(ptr, value, bytes, stream_));
}

void* CudaRuntime::staging(std::size_t bytes) {
  if (bytes > staging_bytes_) {
    if (staging_ != nullptr) ENCORE_CUDA_CHECK(cudaFreeHost(staging_));
    staging_ = nullptr;
    staging_bytes_ = 0;
    // Grow geometrically (up to the limit) so that a run of growing transfers reallocates rarely.
    const std::size_t size = std::min(kStagingLimit, std::max(bytes, std::size_t{64} << 10) * 2);
    ENCORE_CUDA_CHECK(cudaMallocHost(&staging_, std::max(size, bytes)));
    staging_bytes_ = std::max(size, bytes);
  }
  return staging_;
}

// Small transfers (ids, logits, scalars) dominate at decode time: a memcpy into pinned memory and
// one DMA beats the driver's pageable path. Large ones go straight from pageable memory, where the
// driver pipelines its own staging.
void CudaRuntime::copy_host_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes > kStagingLimit) {
    ENCORE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    ENCORE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return;
  }
  std::lock_guard<std::mutex> lock(staging_mutex_);
  void* pinned = staging(bytes);
  std::memcpy(pinned, src, bytes);
  ENCORE_CUDA_CHECK(cudaMemcpyAsync(dst, pinned, bytes, cudaMemcpyHostToDevice, stream_));
  ENCORE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaRuntime::copy_device_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes > kStagingLimit) {
    ENCORE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    ENCORE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return;
  }
  std::lock_guard<std::mutex> lock(staging_mutex_);
  void* pinned = staging(bytes);
  ENCORE_CUDA_CHECK(cudaMemcpyAsync(pinned, src, bytes, cudaMemcpyDeviceToHost, stream_));
  ENCORE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::memcpy(dst, pinned, bytes);
}

void CudaRuntime::copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  if (bytes == 0) return;
  ENCORE_CHECK(dst_device == device() || src_device == device(), invalid_argument,
               "cuda:{} runtime asked to copy from {} to {}", ordinal_, src_device.str(), dst_device.str());
  DeviceGuard guard(ordinal_);
  if (src_device.is_cpu() && dst_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
  } else if (src_device.is_cpu()) {
    copy_host_to_device(dst, src, bytes);
  } else if (dst_device.is_cpu()) {
    copy_device_to_host(dst, src, bytes);
  } else if (src_device == dst_device) {
    ENCORE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
    ENCORE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } else {
    // Between devices: the other device's queued work must finish before its memory is read or
    // overwritten; then a peer copy on this stream (staged through the host by the driver
    // when peer access is off).
    CudaRuntime& other = get(dst_device == device() ? src_device : dst_device);
    other.synchronize();
    ENCORE_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes, stream_));
    ENCORE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
}

void CudaRuntime::copy_within(std::span<const Allocator::Region> regions) {
  if (regions.empty()) return;
  DeviceGuard guard(ordinal_);
  // One batched call: beam search's copy-on-write moves a block per layer, K and V, for several
  // sequences per step (hundreds of small copies).
  std::vector<void*> dst;
  std::vector<const void*> src;
  std::vector<std::size_t> bytes;
  for (const Allocator::Region& r : regions) {
    if (r.bytes == 0) continue;
    dst.push_back(r.dst), src.push_back(r.src), bytes.push_back(r.bytes);
  }
  if (dst.empty()) return;
  cudaMemcpyAttributes attrs{};
  attrs.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attrs.srcLocHint.type = cudaMemLocationTypeDevice, attrs.srcLocHint.id = ordinal_;
  attrs.dstLocHint.type = cudaMemLocationTypeDevice, attrs.dstLocHint.id = ordinal_;
  std::size_t attrs_index = 0;
  const cudaError_t err =
      cudaMemcpyBatchAsync(dst.data(), src.data(), bytes.data(), dst.size(), &attrs, &attrs_index, 1, stream_);
  if (err == cudaSuccess) return;
  cudaGetLastError();  // batched copies unsupported here: one stream-ordered copy each
  for (std::size_t i = 0; i < dst.size(); ++i)
    ENCORE_CUDA_CHECK(cudaMemcpyAsync(dst[i], src[i], bytes[i], cudaMemcpyDeviceToDevice, stream_));
}

CudaRuntime& runtime_of(const CudaContext& ctx, const char* op) {
  ENCORE_CHECK(ctx.runtime != nullptr, invalid_argument,
               "{} (CUDA): CudaContext::runtime is null (use CudaRuntime::get(device).context())", op);
  return *ctx.runtime;
}

void ensure_registered() { register_allocator(DeviceType::CUDA, &g_device_allocator); }

Allocator& device_allocator() { return g_device_allocator; }

}  // namespace encore::cuda
