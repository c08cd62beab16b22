// How a delegate's output line enters the wrapper's log. A JSON log line
// keeps its own level and fields (nested under the delegate's name), so a
// failing driver's fatal error passes the wrapper's log_level and a chain of
// wrappers nests cleanly; plain text is logged at warn from stderr and at
// info from stdout.
#pragma once

#include "common/log.h"
#include "delegates/output_pump.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace owrap {

struct DelegateLogLine {
  LogLevel level;
  std::string message;    // "[<delegate>] <its message>"
  nlohmann::json fields;  // delegate, stream and, for JSON, {<delegate>: {<its other fields>}}
};

// Level names as drivers spell them (trace ... critical, any case) and the
// numeric levels of pino/bunyan (10 trace ... 60 fatal).
std::optional<LogLevel> delegate_log_level(const nlohmann::json& level);

DelegateLogLine delegate_log_line(const std::string& delegate, OutputStream stream, std::string_view line);

// Writes the line if the wrapper's log_level lets it through.
void log_delegate_line(const std::string& delegate, OutputStream stream, std::string_view line);

}  // namespace owrap
