// The per-device locks of src/core/device_lock.h.
#include "core/device_lock.h"

#include <map>
#include <memory>

namespace encore::detail {

namespace {
std::recursive_mutex& device_mutex(int index) {
  static std::mutex registry_mutex;
  static std::map<int, std::unique_ptr<std::recursive_mutex>> locks;  // never shrinks: devices are few
  std::lock_guard<std::mutex> guard(registry_mutex);
  auto& slot = locks[index];
  if (slot == nullptr) slot = std::make_unique<std::recursive_mutex>();
  return *slot;
}
}  // namespace

std::unique_lock<std::recursive_mutex> lock_device(const Device& device) {
  if (!device.is_cuda()) return {};
  return std::unique_lock<std::recursive_mutex>(device_mutex(device.index));
}

std::unique_lock<std::recursive_mutex> try_lock_device(const Device& device) {
  if (!device.is_cuda()) return {};
  return std::unique_lock<std::recursive_mutex>(device_mutex(device.index), std::try_to_lock);
}

}  // namespace encore::detail
