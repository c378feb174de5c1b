// Internal helpers to raise encore::Error with fmt-formatted messages, and to log.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <utility>

#include "encore/core/error.h"
#include "encore/core/logging.h"

namespace encore::detail {

template <typename... Args>
[[noreturn]] void fail(ErrorCode code, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(code, fmt::format(format, std::forward<Args>(args)...));
}

void emit_log(LogLevel level, std::string&& message);
bool log_enabled(LogLevel level) noexcept;

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (log_enabled(level)) emit_log(level, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace encore::detail

/// Throws Error(code, formatted message) when `cond` is false. For user-facing checks.
#define ENCORE_CHECK(cond, code, ...)                              \
  do {                                                             \
    if (!(cond)) ::encore::detail::fail(::encore::ErrorCode::code, __VA_ARGS__); \
  } while (0)
