// encore — devices.
#pragma once

#include <string>
#include <string_view>

namespace encore {

/// Kind of device a tensor lives on or a model runs on.
enum class DeviceType { CPU, CUDA };

/// A device: the CPU, or one CUDA GPU by ordinal.
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;  ///< CUDA ordinal (0-based); always 0 for the CPU.

  /// The CPU.
  static Device cpu() noexcept { return {}; }
  /// CUDA device `index` (not checked against the devices present; backends check that).
  static Device cuda(int index = 0) noexcept { return {DeviceType::CUDA, index}; }

  /// Parses "cpu", "cuda" (= "cuda:0") or "cuda:N" with N a decimal ordinal in [0, 1023].
  /// Anything else throws Error(invalid_argument) naming the text and the accepted forms.
  static Device parse(std::string_view text);

  /// "cpu" or "cuda:N".
  std::string str() const;

  bool is_cpu() const noexcept { return type == DeviceType::CPU; }
  bool is_cuda() const noexcept { return type == DeviceType::CUDA; }
  friend bool operator==(const Device&, const Device&) = default;
};

}  // namespace encore
