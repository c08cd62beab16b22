#include "common/log.h"

#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace owrap {

std::optional<LogLevel> parse_log_level(std::string_view name) {
  if (name == "debug" || name == "trace") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return std::nullopt;
}

std::string_view log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

Logger& Logger::instance() {
  static Logger* logger = new Logger();  // never destroyed: usable from atexit paths
  return *logger;
}

namespace {
std::string rfc3339_now() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now - secs).count();
  std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06ldZ", static_cast<long>(micros));
  return buf;
}
}  // namespace

void Logger::write(LogLevel level, std::string_view message, nlohmann::json fields) {
  nlohmann::json line = nlohmann::json::object();
  line["time"] = rfc3339_now();
  line["level"] = log_level_name(level);
  line["message"] = message;
  if (fields.is_object()) {
    for (auto& [k, v] : fields.items()) line[k] = std::move(v);
  }
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  std::lock_guard<std::mutex> lock(mu_);
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

namespace {

void grpc_log(gpr_log_func_args* args) {
  LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kError
                   : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                             : LogLevel::kDebug;
  if (!Logger::instance().enabled(level)) return;
  Logger::instance().write(level, std::string("grpc: ") + (args->message ? args->message : ""),
                           {{"library", "grpc"}, {"file", args->file ? args->file : ""}, {"line", args->line}});
}

void protobuf_log(google::protobuf::LogLevel severity, const char* file, int line, const std::string& message) {
  LogLevel level = severity >= google::protobuf::LOGLEVEL_ERROR     ? LogLevel::kError
                   : severity == google::protobuf::LOGLEVEL_WARNING ? LogLevel::kWarn
                                                                    : LogLevel::kInfo;
  if (!Logger::instance().enabled(level)) return;
  Logger::instance().write(level, "protobuf: " + message,
                           {{"library", "protobuf"}, {"file", file ? file : ""}, {"line", line}});
}

}  // namespace

void route_library_logs() {
  gpr_set_log_function(grpc_log);
  google::protobuf::SetLogHandler(protobuf_log);
}

std::string Logger::redact(std::string text, std::string_view secret) {
  if (secret.empty()) return text;
  for (size_t pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos)) {
    text.replace(pos, secret.size(), "[REDACTED]");
    pos += 10;
  }
  return text;
}

}  // namespace owrap
