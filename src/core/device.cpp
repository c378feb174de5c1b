#include "encore/core/device.h"

#include <charconv>

#include "core/check.h"

namespace encore {

Device Device::parse(std::string_view text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  constexpr std::string_view prefix = "cuda:";
  if (text.substr(0, prefix.size()) == prefix) {
    const std::string_view num = text.substr(prefix.size());
    int index = -1;
    const bool digits_only = !num.empty() && num.size() <= 4 &&
                             num.find_first_not_of("0123456789") == std::string_view::npos;
    if (digits_only) std::from_chars(num.data(), num.data() + num.size(), index);
    if (digits_only && index >= 0 && index <= 1023) return cuda(index);
  }
  detail::fail(ErrorCode::invalid_argument,
               "unknown device '{}': expected 'cpu', 'cuda' or 'cuda:N' with N a device ordinal "
               "0..1023",
               text);
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index);
}

}  // namespace encore
