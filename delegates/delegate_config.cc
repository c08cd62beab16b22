#include "delegates/delegate_config.h"

#include "common/uds.h"

namespace owrap {

namespace {

constexpr int64_t kHour = 3600000;
constexpr int64_t kTenMinutes = 600000;

void read_how_reached(TomlSection& d, DelegateOptions& del) {
  if (d.has("command")) {
    auto command = d.strings("command");
    if (command && command->empty()) d.error("command", "must be a non-empty array of strings");
    if (command) {
      // execve sees C strings: a NUL would silently cut an argument short.
      for (size_t i = 0; i < command->size(); i++) {
        const std::string& arg = (*command)[i];
        if (arg.find('\0') != std::string::npos)
          d.error("command[" + std::to_string(i) + "]", "must not contain a NUL byte");
      }
      if (!command->empty() && command->front().empty()) d.error("command[0]", "must name a program");
      del.command = std::move(*command);
    }
  }
  del.endpoint = d.string("endpoint").value_or("");
  if (del.command.empty() == del.endpoint.empty()) {
    d.error("", "exactly one of " + d.full_key("command") + " and " + d.full_key("endpoint") + " must be set");
  }
  if (!del.endpoint.empty()) {
    if (del.endpoint.rfind("unix:", 0) != 0) {
      d.error("endpoint", "must be a unix: address such as \"unix:///run/openshell/k8s.sock\"");
    } else if (std::string e = socket_path_error(endpoint_socket_path(del.endpoint)); !e.empty()) {
      d.error("endpoint", e);
    }
  }
  if (auto env = d.string_table("env")) {
    for (const auto& [k, v] : *env) {
      if (k.empty() || k.find_first_of(std::string("=\0", 2)) != std::string::npos) {
        d.error("env", "\"" + k + "\" is not an environment variable name (empty, or has '=' or a NUL)");
      }
      if (v.find('\0') != std::string::npos) d.error("env." + k, "must not contain a NUL byte");
    }
    del.env = std::move(*env);
  }
  del.inherit_env = d.boolean("inherit_env").value_or(true);
}

void read_timing(TomlSection& d, DelegateOptions& del) {
  if (auto v = d.millis("ready_timeout_ms", 1, kHour)) del.ready_timeout = *v;
  if (auto v = d.millis("stop_grace_ms", 0, kTenMinutes)) del.stop_grace = *v;
  if (auto v = d.millis("restart_backoff_initial_ms", 1, kTenMinutes)) del.restart_backoff_initial = *v;
  if (auto v = d.millis("restart_backoff_max_ms", 1, kHour)) {
    if (*v < del.restart_backoff_initial) {
      d.error("restart_backoff_max_ms", "must not be below " + d.full_key("restart_backoff_initial_ms") + " (" +
                                            std::to_string(del.restart_backoff_initial.count()) + ")");
    }
    del.restart_backoff_max = *v;
  } else if (del.restart_backoff_max < del.restart_backoff_initial) {
    del.restart_backoff_max = del.restart_backoff_initial;  // only the initial was raised past the default cap
  }
  if (auto v = d.millis("liveness_interval_ms", 10, kHour)) del.liveness_interval = *v;
  if (auto v = d.millis("liveness_timeout_ms", 10, kTenMinutes)) del.liveness_timeout = *v;
  if (auto v = d.integer("liveness_failures", 0, 100)) del.liveness_failures = static_cast<int>(*v);
}

}  // namespace

bool valid_driver_name(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (unsigned char c : name)
    if (!(std::islower(c) || std::isdigit(c) || c == '_' || c == '-')) return false;
  return true;
}

std::string endpoint_socket_path(const std::string& endpoint) {
  if (endpoint.rfind("unix://", 0) == 0) return endpoint.substr(7);
  if (endpoint.rfind("unix:", 0) == 0) return endpoint.substr(5);
  return {};
}

const std::vector<std::string>& delegate_config_keys() {
  static const std::vector<std::string> kKeys = {"name",
                                                 "command",
                                                 "endpoint",
                                                 "env",
                                                 "inherit_env",
                                                 "ready_timeout_ms",
                                                 "restart_backoff_initial_ms",
                                                 "restart_backoff_max_ms",
                                                 "stop_grace_ms",
                                                 "liveness_interval_ms",
                                                 "liveness_timeout_ms",
                                                 "liveness_failures",
                                                 "runtime_dir"};
  return kKeys;
}

DelegateOptions read_delegate_options(TomlSection& d) {
  DelegateOptions del;
  d.allow_only(delegate_config_keys());
  del.name = d.string("name").value_or("");
  if (!valid_driver_name(del.name)) {
    d.error("name", "\"" + del.name + "\" must match [a-z0-9_-]{1,63} (the base driver's driver_config key)");
  }
  read_how_reached(d, del);
  read_timing(d, del);
  del.runtime_parent = d.string("runtime_dir").value_or("");
  if (!del.runtime_parent.empty() && del.runtime_parent.front() != '/') {
    d.error("runtime_dir", "must be an absolute path, not \"" + del.runtime_parent + "\"");
  }
  return del;
}

}  // namespace owrap
