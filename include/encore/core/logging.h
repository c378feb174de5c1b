// encore — logging. The library prints nothing unless the application asks for it: messages go
// to a callback the application installs (or to stderr after log_to_stderr()).
#pragma once

#include <functional>
#include <string_view>

namespace encore {

enum class LogLevel { trace = 0, debug = 1, info = 2, warn = 3, error = 4, off = 5 };

/// Receives every message at or above the current level. Called from the thread that logs, with
/// no encore lock held (it may log, or install another callback); must be thread-safe if the
/// application logs from several threads. A callback replaced while it runs finishes that call.
using LogCallback = std::function<void(LogLevel level, std::string_view message)>;

/// Sets the minimum level delivered (default: warn). Messages below it are not formatted at all.
void set_log_level(LogLevel level) noexcept;
LogLevel log_level() noexcept;

/// Installs the callback (nullptr: messages are dropped, the default).
void set_log_callback(LogCallback callback);

/// Convenience: installs a callback that writes "[encore warn] message" lines to stderr.
void log_to_stderr();

/// "trace", "debug", "info", "warn", "error", "off".
const char* log_level_name(LogLevel level) noexcept;
/// Parses a name as printed by log_level_name; throws Error(invalid_argument) otherwise.
LogLevel parse_log_level(std::string_view text);

}  // namespace encore
