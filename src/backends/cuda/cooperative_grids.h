// What cooperative launches of one kernel did on each device: the largest grid that launched and
// the smallest that was refused. A context may hold fewer co-resident CTAs than its device (an MPS
// SM limit, a green context); kernels that need a co-resident grid remember a refusal so that
// later calls go straight to their fallback. Thread-safe; plain C++ (included by .cu files too).
#pragma once

#include <algorithm>
#include <climits>
#include <map>
#include <mutex>

namespace encore::cuda {

class CooperativeGrids {
 public:
  void record(int ordinal, int grid, bool launched) {
    std::lock_guard<std::mutex> lock(mutex_);
    Sizes& s = sizes_[ordinal];
    if (launched)
      s.launched = std::max(s.launched, grid);
    else
      s.refused = std::min(s.refused, grid);
  }
  /// The largest grid that launched on the device (0: none yet).
  int launched(int ordinal) const { return get(ordinal).launched; }
  /// The smallest grid the device refused (INT_MAX: none).
  int refused(int ordinal) const { return get(ordinal).refused; }

 private:
  struct Sizes {
    int launched = 0;
    int refused = INT_MAX;
  };
  Sizes get(int ordinal) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = sizes_.find(ordinal);
    return it == sizes_.end() ? Sizes{} : it->second;
  }
  mutable std::mutex mutex_;
  std::map<int, Sizes> sizes_;
};

}  // namespace encore::cuda
