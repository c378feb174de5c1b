#include "encore/core/logging.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include "core/check.h"

namespace encore {
namespace {
std::atomic<LogLevel> g_level{LogLevel::warn};
std::mutex g_mutex;
std::shared_ptr<const LogCallback> g_callback;  // guarded by g_mutex; called outside it
}  // namespace

void set_log_level(LogLevel level) noexcept { g_level.store(level); }
LogLevel log_level() noexcept { return g_level.load(); }

void set_log_callback(LogCallback callback) {
  auto next = callback ? std::make_shared<const LogCallback>(std::move(callback)) : nullptr;
  std::lock_guard lock(g_mutex);
  g_callback = std::move(next);
}

void log_to_stderr() {
  set_log_callback([](LogLevel level, std::string_view msg) {
    std::fprintf(stderr, "[encore %s] %.*s\n", log_level_name(level), static_cast<int>(msg.size()), msg.data());
  });
}

const char* log_level_name(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::off: return "off";
  }
  return "?";
}

LogLevel parse_log_level(std::string_view text) {
  for (int i = 0; i <= static_cast<int>(LogLevel::off); ++i)
    if (text == log_level_name(static_cast<LogLevel>(i))) return static_cast<LogLevel>(i);
  detail::fail(ErrorCode::invalid_argument,
               "unknown log level '{}': expected trace, debug, info, warn, error or off", text);
}

namespace detail {
bool log_enabled(LogLevel level) noexcept {
  return level != LogLevel::off && level >= g_level.load(std::memory_order_relaxed);
}

void emit_log(LogLevel level, std::string&& message) {
  std::shared_ptr<const LogCallback> callback;
  {
    std::lock_guard lock(g_mutex);
    callback = g_callback;
  }
  // Outside the lock: a callback may log, or replace itself, without deadlocking.
  if (callback) (*callback)(level, message);
}
}  // namespace detail

}  // namespace encore
