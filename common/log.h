// JSON-lines logger shared by every binary. One line per event on stderr with
// time, level, message and any structured fields. Nothing here knows what a
// sandbox token is: callers never pass request bodies, and Logger::redact()
// scrubs a known secret out of free-form text (a delegate's error message may
// echo what it was sent).
#pragma once

#include <nlohmann/json.hpp>

#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace owrap {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

std::optional<LogLevel> parse_log_level(std::string_view name);
std::string_view log_level_name(LogLevel level);

class Logger {
 public:
  static Logger& instance();

  void set_level(LogLevel level) { level_ = level; }
  LogLevel level() const { return level_; }
  bool enabled(LogLevel level) const { return level >= level_; }

  // Writes one line: {"time":..., "level":..., "message":..., <fields>}.
  void write(LogLevel level, std::string_view message, nlohmann::json fields = nlohmann::json::object());

  // Replaces every occurrence of `secret` in `text` with "[REDACTED]".
  static std::string redact(std::string text, std::string_view secret);

 private:
  Logger() = default;
  std::mutex mu_;
  LogLevel level_ = LogLevel::kInfo;
};

// Sends what gRPC and libprotobuf log on their own (gpr_log, GOOGLE_LOG)
// through the Logger, so stderr stays one JSON object per line. Call once,
// early in main().
void route_library_logs();

inline void log_debug(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  if (Logger::instance().enabled(LogLevel::kDebug)) Logger::instance().write(LogLevel::kDebug, m, std::move(f));
}
inline void log_info(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  if (Logger::instance().enabled(LogLevel::kInfo)) Logger::instance().write(LogLevel::kInfo, m, std::move(f));
}
inline void log_warn(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  if (Logger::instance().enabled(LogLevel::kWarn)) Logger::instance().write(LogLevel::kWarn, m, std::move(f));
}
inline void log_error(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  Logger::instance().write(LogLevel::kError, m, std::move(f));
}

}  // namespace owrap
