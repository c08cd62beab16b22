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
#include <type_traits>
#include <utility>
#include <vector>

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
//
// While lines keep coming the writer wakes once per `batch_window` on its own
// timer and writes what gathered; a line wakes it only when it finds it idle
// (nothing written for a window) or when the lines waiting pass
// `batch_lines` or `batch_bytes`. flush() and stop() wake it at once.
class LogSink {
 public:
  struct Options {
    int fd = 2;  // not owned
    size_t max_lines = 8192;
    size_t max_bytes = size_t{4} << 20;
    std::chrono::milliseconds report_every{1000};
    std::chrono::milliseconds batch_window{5};
    size_t batch_lines = 512;
    size_t batch_bytes = size_t{64} << 10;
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

// One line built field by field straight into text, without JSON objects:
// for lines written per call (the access log). The result is the line
// format_log_line makes of the same fields, byte for byte: keys in byte order
// (nlohmann's object is a std::map, and consumers see that order today), a
// later field replacing an earlier one of the same key (time, level and
// message included), strings escaped as dump() with error_handler_t::replace
// escapes them (invalid UTF-8 becomes U+FFFD).
class LogLine {
 public:
  LogLine(LogLevel level, std::string_view message);
  // With a given "time" instead of now, for tests.
  LogLine(LogLevel level, std::string_view message, std::string_view time);

  LogLine& add(std::string_view key, std::string_view value);
  LogLine& add(std::string_view key, const std::string& value) { return add(key, std::string_view(value)); }
  // Not bool: a pointer converts to bool before it converts to string_view.
  LogLine& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  LogLine& add(std::string_view key, bool value);
  LogLine& add(std::string_view key, double value);
  template <class T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, bool>) LogLine& add(std::string_view key, T value) {
    if constexpr (std::is_signed_v<T>) {
      return add_signed(key, static_cast<int64_t>(value));
    } else {
      return add_unsigned(key, static_cast<uint64_t>(value));
    }
  }
  // Any JSON value, dumped as format_log_line dumps it.
  LogLine& add_json(std::string_view key, const nlohmann::json& value);

  // The line, newline included. The builder is spent.
  std::string finish();

 private:
  struct Field {
    uint32_t key, key_size, value, value_size;  // offsets into text_
  };
  std::string_view key_of(const Field& f) const { return std::string_view(text_).substr(f.key, f.key_size); }
  // The caller appends the value's JSON text to text_ after begin_field.
  void begin_field(std::string_view key);
  void end_field();
  LogLine& add_signed(std::string_view key, int64_t value);
  LogLine& add_unsigned(std::string_view key, uint64_t value);

  std::string text_;  // raw keys and JSON values, in the order they came
  std::vector<Field> fields_;
};

// Appends `s` as the inside of a JSON string (no quotes), as nlohmann's
// dump(-1, ' ', false, error_handler_t::replace) writes it.
void append_json_escaped(std::string& out, std::string_view s);

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
  // The same without JSON objects, for lines written per call.
  void write(LogLine&& line);

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

// The fields of log_info and friends are a braced list built before the
// call, whatever the level. Where building them costs something and the
// level is often off (a line per call at debug), pass a callable returning
// the fields to log_at instead (`log_at(LogLevel::kDebug, "x", [&] { return
// nlohmann::json{...}; })`): it runs only when the line is written. (Not an
// overload of log_debug: `cond ? log_info : log_warn` must stay unambiguous.)
template <class F>
concept LogFieldsMaker = std::is_invocable_r_v<nlohmann::json, F> && !std::is_convertible_v<F, nlohmann::json>;

inline void log_at(LogLevel level, std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  if (Logger::instance().enabled(level)) Logger::instance().write(level, m, std::move(f));
}
template <LogFieldsMaker F>
void log_at(LogLevel level, std::string_view m, F&& make_fields) {
  if (Logger::instance().enabled(level)) Logger::instance().write(level, m, std::forward<F>(make_fields)());
}

inline void log_debug(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  log_at(LogLevel::kDebug, m, std::move(f));
}
inline void log_info(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  log_at(LogLevel::kInfo, m, std::move(f));
}
inline void log_warn(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  log_at(LogLevel::kWarn, m, std::move(f));
}
inline void log_error(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  Logger::instance().write(LogLevel::kError, m, std::move(f));
}

}  // namespace owrap
