// encore — CPU thread settings (OpenMP, the runtime oneDNN uses too).
#pragma once

namespace encore {

/// Threads CPU work uses by default: set_num_threads's value, else OpenMP's maximum.
int num_threads() noexcept;

/// Sets the default CPU thread count for the whole process (every thread, including ones started
/// later); n must be in 1..max_thread_count() (throws Error(invalid_argument) otherwise). Plans and
/// models built with a thread count of 0 take this default when they are built, so set it before
/// building them; per-plan and per-model counts override it.
void set_num_threads(int n);

/// Logical processors available to this process.
int hardware_threads() noexcept;

/// The largest thread count encore accepts anywhere: max(1024, 4 x hardware_threads()). Larger
/// teams only fail to start (the OpenMP runtime then ends the process).
int max_thread_count() noexcept;

}  // namespace encore
