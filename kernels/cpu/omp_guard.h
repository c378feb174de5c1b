// Exceptions may not leave an OpenMP region: one thrown inside (std::bad_alloc from a per-thread
// buffer, an Error from a check) would call std::terminate. Code inside a region runs through
// RegionGuard::run: the first exception is kept and later work is skipped; rethrow() raises it
// once the region has ended. Every thread still reaches the region's barriers.
#pragma once

#include <atomic>
#include <exception>
#include <mutex>

namespace encore::cpu {

class RegionGuard {
 public:
  /// Runs `f` unless an earlier call failed; keeps the first exception.
  template <typename F>
  void run(F&& f) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      f();
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  /// After the region: rethrows the kept exception, if any.
  void rethrow() {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
};

}  // namespace encore::cpu
