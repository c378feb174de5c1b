// What the benchmark measures about the machine and the process: peak resident memory, streaming
// read bandwidth (the floor for bandwidth-bound decode steps), percentiles, a machine description.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace encore::bench {

/// Peak resident set of this process so far (getrusage ru_maxrss), in bytes. It includes the
/// model weights (mapped file pages count once they are touched).
std::uint64_t peak_rss_bytes();

/// Minor page faults of this process so far (getrusage ru_minflt): first touches of fresh memory.
std::uint64_t minor_page_faults();

/// Best-of-`passes` read bandwidth in bytes per second: `threads` threads sum disjoint parts of a
/// `buffer_bytes` buffer (first touched by the thread that reads it), read-only, one pass each.
double measure_read_bandwidth(int threads, std::size_t buffer_bytes, int passes);

/// The q-quantile (0..1) with linear interpolation between order statistics (numpy's default),
/// so that encore-bench and the Python peers compute percentiles the same way.
double percentile(std::vector<double> values, double q);

/// "model name" of /proc/cpuinfo, or "unknown CPU".
std::string cpu_model_name();
/// The host name, or "unknown host".
std::string host_name();

}  // namespace encore::bench
