#include "encore/core/threads.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "core/check.h"

namespace encore {
namespace {
// The default set by set_num_threads, for every thread of the process. OpenMP's own setting
// (omp_set_num_threads) belongs to the calling thread only: a std::thread started later would
// not see it.
std::atomic<int> g_default{0};  // 0: OpenMP's maximum
}  // namespace

int num_threads() noexcept {
  const int n = g_default.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) {
  ENCORE_CHECK(n >= 1 && n <= max_thread_count(), invalid_argument,
               "thread count {} is not valid: expected 1..{}", n, max_thread_count());
  g_default.store(n, std::memory_order_relaxed);
  omp_set_num_threads(n);  // this thread's OpenMP default too (regions that give no count)
}

int hardware_threads() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int max_thread_count() noexcept { return std::max(1024, 4 * hardware_threads()); }

}  // namespace encore
