#include "delegates/delegate_log.h"

#include <algorithm>
#include <cctype>

namespace owrap {

namespace {
const char* stream_name(OutputStream s) {
  return s == OutputStream::kStdout ? "stdout" : "stderr";
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Takes the message out of `j`: "message", "msg", or Rust tracing's
// "fields.message" (an emptied "fields" goes too).
std::optional<std::string> take_message(nlohmann::json& j) {
  for (const char* key : {"message", "msg"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) {
      std::string m = it->get<std::string>();
      j.erase(it);
      return m;
    }
  }
  if (auto f = j.find("fields"); f != j.end() && f->is_object()) {
    if (auto it = f->find("message"); it != f->end() && it->is_string()) {
      std::string m = it->get<std::string>();
      f->erase(it);
      if (f->empty()) j.erase(f);
      return m;
    }
  }
  return std::nullopt;
}

// Our logger writes these keys itself; a delegate named like one of them
// keeps its fields under "<name>_fields" so nothing is overwritten.
std::string nest_key(const std::string& delegate) {
  for (const char* reserved : {"time", "level", "message", "delegate", "stream"}) {
    if (delegate == reserved) return delegate + "_fields";
  }
  return delegate;
}
}  // namespace

std::optional<LogLevel> delegate_log_level(const nlohmann::json& level) {
  if (level.is_number()) {
    double n = level.get<double>();
    if (n <= 20) return LogLevel::kDebug;
    if (n <= 30) return LogLevel::kInfo;
    if (n <= 40) return LogLevel::kWarn;
    return LogLevel::kError;
  }
  if (!level.is_string()) return std::nullopt;
  std::string l = lower(level.get<std::string>());
  if (l == "trace" || l == "debug") return LogLevel::kDebug;
  if (l == "info" || l == "notice") return LogLevel::kInfo;
  if (l == "warn" || l == "warning") return LogLevel::kWarn;
  if (l == "error" || l == "fatal" || l == "panic" || l == "critical" || l == "crit" || l == "alert" ||
      l == "emergency") {
    return LogLevel::kError;
  }
  return std::nullopt;
}

DelegateLogLine delegate_log_line(const std::string& delegate, OutputStream stream, std::string_view line) {
  const std::string prefix = "[" + delegate + "] ";
  const LogLevel plain = stream == OutputStream::kStderr ? LogLevel::kWarn : LogLevel::kInfo;
  DelegateLogLine out{plain, prefix + std::string(line), {{"delegate", delegate}, {"stream", stream_name(stream)}}};
  if (line.empty() || line.front() != '{') return out;
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return out;
  auto message = take_message(j);
  if (auto it = j.find("level"); it != j.end()) {
    if (auto level = delegate_log_level(*it)) {
      out.level = *level;
      j.erase(it);
    }
  }
  out.message = message ? prefix + *message : "[" + delegate + "]";
  out.fields[nest_key(delegate)] = std::move(j);
  return out;
}

void log_delegate_line(const std::string& delegate, OutputStream stream, std::string_view line) {
  auto entry = delegate_log_line(delegate, stream, line);
  if (Logger::instance().enabled(entry.level)) {
    Logger::instance().write(entry.level, entry.message, std::move(entry.fields));
  }
}

}  // namespace owrap
