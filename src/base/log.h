// Structured logging: one line per event, logfmt, with a level.
//   ts=2026-11-29T19:00:00.123Z level=info event=listening addr=127.0.0.1:8080
// Use:  LOG_INFO("listening").Kv("addr", addr);   (the line is written when the
// statement ends). Thread-safe; a line is written with one write(2).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace sb::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

void SetLevel(Level l);
Level GetLevel();
bool ParseLevel(std::string_view s, Level* out);
// Where lines go: -1 means stderr (the default).
void SetFd(int fd);

class Line {
 public:
  Line(Level level, std::string_view event);
  ~Line();
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;

  Line& Kv(std::string_view key, std::string_view value);
  Line& Kv(std::string_view key, const char* value) { return Kv(key, std::string_view(value)); }
  Line& Kv(std::string_view key, const std::string& value) { return Kv(key, std::string_view(value)); }
  Line& Kv(std::string_view key, bool value) { return Kv(key, value ? "true" : "false"); }
  template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
  Line& Kv(std::string_view key, T value) {
    if (enabled_) AppendNumber(key, std::to_string(value));
    return *this;
  }

 private:
  void AppendNumber(std::string_view key, const std::string& v);
  bool enabled_;
  std::string buf_;
};

}  // namespace sb::log

#define LOG_DEBUG(event) ::sb::log::Line(::sb::log::Level::kDebug, event)
#define LOG_INFO(event) ::sb::log::Line(::sb::log::Level::kInfo, event)
#define LOG_WARN(event) ::sb::log::Line(::sb::log::Level::kWarn, event)
#define LOG_ERROR(event) ::sb::log::Line(::sb::log::Level::kError, event)
