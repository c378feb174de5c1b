#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/check.h"
#include "encore/core/logging.h"

using namespace encore;

TEST(Logging, CallbackReceivesMessagesAtOrAboveLevel) {
  std::vector<std::pair<LogLevel, std::string>> got;
  set_log_callback([&](LogLevel l, std::string_view m) { got.emplace_back(l, std::string(m)); });
  set_log_level(LogLevel::info);
  detail::log(LogLevel::debug, "hidden {}", 1);
  detail::log(LogLevel::info, "shown {}", 2);
  detail::log(LogLevel::error, "also {}", 3);
  set_log_level(LogLevel::off);
  detail::log(LogLevel::error, "off drops everything");
  set_log_callback(nullptr);
  set_log_level(LogLevel::warn);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].first, LogLevel::info);
  EXPECT_EQ(got[0].second, "shown 2");
  EXPECT_EQ(got[1].second, "also 3");
}

// A callback may log and replace itself (e.g. "log once") without deadlocking.
TEST(Logging, CallbackMayLogAndReplaceItself) {
  int calls = 0;
  set_log_level(LogLevel::warn);
  set_log_callback([&](LogLevel, std::string_view) {
    ++calls;
    set_log_callback(nullptr);                   // takes the logging lock
    detail::log(LogLevel::error, "from inside");  // dropped: no callback any more
  });
  detail::log(LogLevel::warn, "first");
  detail::log(LogLevel::warn, "second");
  EXPECT_EQ(calls, 1);
}

TEST(Logging, WithoutCallbackNothingIsDelivered) {
  set_log_callback(nullptr);
  set_log_level(LogLevel::trace);
  EXPECT_NO_THROW(detail::log(LogLevel::error, "dropped"));
  set_log_level(LogLevel::warn);
}

TEST(Logging, ParseLevel) {
  EXPECT_EQ(parse_log_level("debug"), LogLevel::debug);
  EXPECT_THROW(parse_log_level("loud"), Error);
}

TEST(Errors, CodesHaveStableNames) {
  EXPECT_STREQ(error_code_name(ErrorCode::bad_model_file), "bad_model_file");
  EXPECT_STREQ(error_code_name(ErrorCode::out_of_memory), "out_of_memory");
  Error e(ErrorCode::backend, "cuBLAS failed");
  EXPECT_EQ(e.code(), ErrorCode::backend);
  EXPECT_STREQ(e.what(), "cuBLAS failed");
}
