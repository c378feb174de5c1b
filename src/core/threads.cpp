#include "encore/core/threads.h"

#include <omp.h>

#include <thread>

#include "core/check.h"

namespace encore {

int num_threads() noexcept { return omp_get_max_threads(); }

void set_num_threads(int n) {
  ENCORE_CHECK(n >= 1, invalid_argument, "thread count {} is not valid: expected >= 1", n);
  omp_set_num_threads(n);
}

int hardware_threads() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace encore
