// One thread at a time per CUDA device for the work encore queues there (Plan construction, runs
// and destruction, VitGpt2's calls, Tensor copies to and from the device). Every plan of a device
// queues on the device's one stream, and a run that records a CUDA graph puts that stream in
// capture mode: work another thread queued on it meanwhile would be recorded into the graph
// instead of running, and a stream sync from another thread would invalidate the capture. The
// lock is recursive (a model's call runs plans, which copy tensors) and per device; CPU devices
// get an empty lock.
#pragma once

#include <mutex>

#include "encore/core/device.h"

namespace encore::detail {

std::unique_lock<std::recursive_mutex> lock_device(const Device& device);

/// The same lock if it can be had without waiting (this thread may hold it already); otherwise a
/// lock that owns nothing (owns_lock() false). CPU devices: an empty lock, also owning nothing.
std::unique_lock<std::recursive_mutex> try_lock_device(const Device& device);

}  // namespace encore::detail
