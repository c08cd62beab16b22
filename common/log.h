// JSON-lines logger shared by every binary. One line per event on stderr with
// time, level, message and any structured fields. Nothing here knows what a
// sandbox token is: callers never pass request bodies, and secrets are
// scrubbed from free-form text before it gets here (common/secrets.h).
//
// Lines are formatted by the caller and written by a background LogSink, so
// a completion-queue thread never waits for stderr: a slow or stuck reader
// costs dropped (and counted) lines, never a blocked call.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace owrap {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

std::optional<LogLevel> parse_log_level(std::string_view name);
std::string_view log_level_name(LogLevel level);

// Writes newline-terminated lines to an fd from a thread of its own, started
// with the first line. The buffer is bounded (lines and bytes): when it is
// full a line is dropped and counted, and the writer reports the count as a
// "log lines dropped" line (at most once per `report_every`, and at stop).
// After stop() lines are written synchronously by the caller, so the sink
// stays usable from atexit paths and late threads.
class LogSink {
 public:
  struct Options {
    int fd = 2;  // not owned
    size_t max_lines = 8192;
    size_t max_bytes = size_t{4} << 20;
    std::chrono::milliseconds report_every{1000};
  };

  explicit LogSink(Options options);
  ~LogSink();  // stop() with the default timeout
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;

  // Never waits for the fd while the writer runs.
  void write(std::string line);
  // Waits until every line accepted so far is written; false on timeout.
  bool flush(std::chrono::milliseconds timeout = std::chrono::seconds(2));
  // Flushes (bounded by `timeout`), reports drops and ends the writer. A
  // writer stuck on the fd past the timeout is abandoned, never waited for.
  void stop(std::chrono::milliseconds timeout = std::chrono::seconds(2));
  // Lines dropped since the sink was made.
  uint64_t dropped() const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the writer, which may outlive us
};

class Logger {
 public:
  static Logger& instance();
  // A logger of its own, for tests: the process logger is instance().
  explicit Logger(LogSink::Options options) : sink_(options) {}

  void set_level(LogLevel level) { level_.store(level, std::memory_order_relaxed); }
  LogLevel level() const { return level_.load(std::memory_order_relaxed); }
  bool enabled(LogLevel level) const { return level >= this->level(); }

  // Formats one line, {"time":..., "level":..., "message":..., <fields>},
  // and hands it to the sink.
  void write(LogLevel level, std::string_view message, nlohmann::json fields = nlohmann::json::object());

  // Every line logged so far is written (bounded wait).
  bool flush() { return sink_.flush(); }
  // Call at the end of main(): flushes, reports drops, stops the writer.
  // Registered with atexit too; later lines are written synchronously.
  void shutdown() { sink_.stop(); }
  uint64_t dropped() const { return sink_.dropped(); }

 private:
  LogSink sink_;
  std::atomic<LogLevel> level_{LogLevel::kInfo};
};

// Declared first in main(): every return from main() flushes the log and
// stops its writer, so the last lines ("stopped") are never lost.
class LogShutdownGuard {
 public:
  LogShutdownGuard() = default;
  ~LogShutdownGuard() { Logger::instance().shutdown(); }
  LogShutdownGuard(const LogShutdownGuard&) = delete;
  LogShutdownGuard& operator=(const LogShutdownGuard&) = delete;
};

// One JSON line (newline included) as Logger::write makes it.
std::string format_log_line(LogLevel level, std::string_view message, nlohmann::json fields);

// Sends what gRPC and libprotobuf log on their own (gpr_log, GOOGLE_LOG)
// through the Logger, so stderr stays one JSON object per line. Call once,
// early in main().
void route_library_logs();
// Turns off Abseil's mutex deadlock detection, a debugging aid Debian's
// build leaves on; the wrapper calls it at start.
void skip_mutex_deadlock_detection();

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
