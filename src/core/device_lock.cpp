// The per-device locks of src/core/device_lock.h.
#include "core/device_lock.h"

#include <map>
#include <memory>

namespace encore::detail {

std::unique_lock<std::recursive_mutex> lock_device(const Device& device) {
  if (!device.is_cuda()) return {};
  static std::mutex registry_mutex;
  static std::map<int, std::unique_ptr<std::recursive_mutex>> locks;  // never shrinks: devices are few
  std::recursive_mutex* m = nullptr;
  {
    std::lock_guard<std::mutex> guard(registry_mutex);
    auto& slot = locks[device.index];
    if (slot == nullptr) slot = std::make_unique<std::recursive_mutex>();
    m = slot.get();
  }
  return std::unique_lock<std::recursive_mutex>(*m);
}

}  // namespace encore::detail
