// encore — CPU thread settings (OpenMP, the runtime oneDNN uses too).
#pragma once

namespace encore {

/// Threads CPU work uses by default (OpenMP's maximum unless set_num_threads was called).
int num_threads() noexcept;

/// Sets the default CPU thread count for this process; n must be >= 1 (throws
/// Error(invalid_argument) otherwise). Executors may override it per call.
void set_num_threads(int n);

/// Logical processors available to this process.
int hardware_threads() noexcept;

}  // namespace encore
