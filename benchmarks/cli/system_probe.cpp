#include "system_probe.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <thread>

#include "encore/core/error.h"

namespace encore::bench {

std::uint64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::uint64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

std::uint64_t minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::uint64_t>(usage.ru_minflt);
}

namespace {

// Eight independent accumulators (integer data: no FP reassociation needed), compiled per ISA and
// picked at load time: with SSE2 only, one core issues too few loads to reach DRAM bandwidth (the
// probe read 19 GB/s where AVX-512 reads 28 GB/s on the development Xeon), and the floor would be too low.
__attribute__((target_clones("avx512f", "avx2", "default"))) std::uint64_t sum_words(const std::uint64_t* p, std::size_t n) {
  std::uint64_t acc[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += p[i + k];
  for (; i < n; ++i) acc[0] += p[i];
  std::uint64_t total = 0;
  for (std::uint64_t a : acc) total += a;
  return total;
}

template <typename Work>
void run_on_threads(int threads, Work work) {
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (std::thread& th : pool) th.join();
}

}  // namespace

double measure_read_bandwidth(int threads, std::size_t buffer_bytes, int passes) {
  const std::size_t words = buffer_bytes / sizeof(std::uint64_t);
  const std::size_t chunk = (words + static_cast<std::size_t>(threads) - 1) / static_cast<std::size_t>(threads);
  std::unique_ptr<std::uint64_t[]> buffer(new std::uint64_t[words]);
  auto range = [&](int t) {
    const std::size_t begin = std::min(words, chunk * static_cast<std::size_t>(t));
    return std::pair{begin, std::min(words, begin + chunk)};
  };
  run_on_threads(threads, [&](int t) {  // first touch by the reading thread
    auto [b, e] = range(t);
    for (std::size_t i = b; i < e; ++i) buffer[i] = i;
  });
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(threads));
  double best_seconds = 1e30;
  for (int pass = 0; pass < passes; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    run_on_threads(threads, [&](int t) {
      auto [b, e] = range(t);
      sums[static_cast<std::size_t>(t)] = sum_words(buffer.get() + b, e - b);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_seconds = std::min(best_seconds, s);
  }
  std::uint64_t check = 0;
  for (std::uint64_t s : sums) check += s;
  const std::uint64_t expected = static_cast<std::uint64_t>(words) * (words - 1) / 2;  // keeps the sums live
  if (check != expected) throw Error(ErrorCode::backend, "bandwidth probe: checksum mismatch (memory error?)");
  return static_cast<double>(words * sizeof(std::uint64_t)) / best_seconds;
}

double percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double pos = q * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (pos - static_cast<double>(lo));
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
  }
  return "unknown CPU";
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown host";
  return name;
}

}  // namespace encore::bench
