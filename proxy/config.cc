#include "proxy/config.h"

#include "common/uds.h"

#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace owrap {

bool valid_driver_name(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (unsigned char c : name)
    if (!(std::islower(c) || std::isdigit(c) || c == '_' || c == '-')) return false;
  return true;
}

const std::vector<ConfigSection>& config_sections() {
  static const std::vector<ConfigSection> kSections = {
      {"wrapper",
       {"name", "socket", "config_mode", "log_level", "shutdown_grace_ms", "watch_queue_capacity",
        "watch_finish_grace_ms", "resync_timeout_ms", "worker_threads"}},
      {"capabilities", {"default_image", "gateway_manages_lifecycle"}},
      {"testing", {"delay_ms", "delay_timeout_ms", "delay_rpcs"}},
      {"delegate",
       {"name", "command", "endpoint", "env", "inherit_env", "ready_timeout_ms", "restart_backoff_initial_ms",
        "restart_backoff_max_ms", "stop_grace_ms", "liveness_interval_ms", "liveness_timeout_ms", "liveness_failures",
        "runtime_dir"}},
  };
  return kSections;
}

namespace {

std::set<std::string> section_keys(const std::string& name) {
  for (const auto& section : config_sections())
    if (section.name == name) return {section.keys.begin(), section.keys.end()};
  return {};
}

class Reader {
 public:
  std::vector<std::string> errors;

  void allow_only(const toml::table& t, const std::string& prefix, std::set<std::string> keys) {
    for (const auto& [k, _] : t) {
      std::string key(k.str());
      if (!keys.count(key)) errors.push_back(prefix + key + ": unknown key");
    }
  }
  template <class T>
  std::optional<T> get(const toml::table& t, const std::string& table, const std::string& key, const char* type) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (auto v = n->value<T>(); v && n->is<T>()) return *v;
    if constexpr (std::is_same_v<T, int64_t>) {
      if (auto v = n->value<int64_t>()) return *v;
    }
    errors.push_back(table + "." + key + ": must be " + type);
    return std::nullopt;
  }
  // A path the wrapper binds or connects to: absolute, and what the kernel
  // will really use (a NUL would silently cut it short).
  std::optional<std::string> socket_path(const toml::table& t, const std::string& table, const std::string& key) {
    auto v = get<std::string>(t, table, key, "a string");
    if (!v) return std::nullopt;
    if (std::string e = socket_path_error(*v); !e.empty()) {
      errors.push_back(table + "." + key + ": " + e);
      return std::nullopt;
    }
    return v;
  }
  // An integer within [min, max]; a value out of range is an error naming
  // the key (a huge duration would otherwise wrap around in arithmetic).
  std::optional<int64_t> integer_in(const toml::table& t, const std::string& table, const std::string& key, int64_t min,
                                    int64_t max) {
    auto v = get<int64_t>(t, table, key, "an integer");
    if (!v) return std::nullopt;
    if (*v < min || *v > max) {
      errors.push_back(table + "." + key + ": must be between " + std::to_string(min) + " and " + std::to_string(max));
      return std::nullopt;
    }
    return v;
  }
  std::optional<std::chrono::milliseconds> millis_in(const toml::table& t, const std::string& table,
                                                     const std::string& key, int64_t min, int64_t max) {
    auto v = integer_in(t, table, key, min, max);
    if (!v) return std::nullopt;
    return std::chrono::milliseconds(*v);
  }
};

constexpr int64_t kHour = 3600000;
constexpr int64_t kTenMinutes = 600000;

void read_testing(Reader& r, const toml::table& t, TestingStageConfig& out) {
  r.allow_only(t, "testing.", section_keys("testing"));
  if (auto v = r.millis_in(t, "testing", "delay_ms", 0, kTenMinutes)) out.delay = *v;
  if (auto v = r.millis_in(t, "testing", "delay_timeout_ms", 1, kTenMinutes)) out.timeout = *v;
  if (const toml::node* n = t.get("delay_rpcs")) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) {
      r.errors.push_back("testing.delay_rpcs: must be an array of RPC names");
      return;
    }
    out.rpcs.reset();
    for (size_t i = 0; i < arr->size(); i++) {
      auto name = (*arr)[i].value<std::string>();
      auto rpc = name ? rpc_from_name(*name) : std::nullopt;
      if (!rpc || rpc_info(*rpc).server_streaming) {
        r.errors.push_back("testing.delay_rpcs[" + std::to_string(i) + "]: must be the name of a unary RPC");
        continue;
      }
      out.rpcs.set(static_cast<size_t>(*rpc));
    }
  }
}

void read_delegate_timing(Reader& r, const toml::table& d, DelegateOptions& del) {
  if (auto v = r.millis_in(d, "delegate", "ready_timeout_ms", 1, kHour)) del.ready_timeout = *v;
  if (auto v = r.millis_in(d, "delegate", "stop_grace_ms", 0, kTenMinutes)) del.stop_grace = *v;
  if (auto v = r.millis_in(d, "delegate", "restart_backoff_initial_ms", 1, kTenMinutes)) {
    del.restart_backoff_initial = *v;
  }
  if (auto v = r.millis_in(d, "delegate", "restart_backoff_max_ms", 1, kHour)) {
    if (*v < del.restart_backoff_initial) {
      r.errors.push_back("delegate.restart_backoff_max_ms: must not be below delegate.restart_backoff_initial_ms (" +
                         std::to_string(del.restart_backoff_initial.count()) + ")");
    }
    del.restart_backoff_max = *v;
  } else if (del.restart_backoff_max < del.restart_backoff_initial) {
    del.restart_backoff_max = del.restart_backoff_initial;  // only the initial was raised past the default cap
  }
  if (auto v = r.millis_in(d, "delegate", "liveness_interval_ms", 10, kHour)) del.liveness_interval = *v;
  if (auto v = r.millis_in(d, "delegate", "liveness_timeout_ms", 10, kTenMinutes)) del.liveness_timeout = *v;
  if (auto v = r.integer_in(d, "delegate", "liveness_failures", 0, 100)) del.liveness_failures = static_cast<int>(*v);
}

}  // namespace

Result<WrapperConfig> parse_config(const std::string& text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
    return Error{msg.str()};
  }
  WrapperConfig cfg;
  Reader r;
  std::set<std::string> tables;
  for (const auto& section : config_sections()) tables.insert(section.name);
  r.allow_only(root, "", tables);

  const toml::table* w = root["wrapper"].as_table();
  if (!w) {
    r.errors.push_back("wrapper: missing table [wrapper]");
  } else {
    r.allow_only(*w, "wrapper.", section_keys("wrapper"));
    cfg.name = r.get<std::string>(*w, "wrapper", "name", "a string").value_or("");
    if (!valid_driver_name(cfg.name)) {
      r.errors.push_back("wrapper.name: \"" + cfg.name +
                         "\" must match [a-z0-9_-]{1,63} (the gateway lowercases driver names)");
    }
    cfg.socket = r.socket_path(*w, "wrapper", "socket").value_or("");
    if (auto mode = r.get<std::string>(*w, "wrapper", "config_mode", "a string")) {
      if (*mode == "nested")
        cfg.config_mode = ConfigMode::kNested;
      else if (*mode == "inline")
        cfg.config_mode = ConfigMode::kInline;
      else
        r.errors.push_back("wrapper.config_mode: must be \"nested\" or \"inline\", not \"" + *mode + "\"");
    }
    if (auto level = r.get<std::string>(*w, "wrapper", "log_level", "a string")) {
      if (auto l = parse_log_level(*level))
        cfg.log_level = *l;
      else
        r.errors.push_back("wrapper.log_level: must be debug, info, warn or error");
    }
    if (auto v = r.millis_in(*w, "wrapper", "shutdown_grace_ms", 0, kTenMinutes)) cfg.shutdown_grace = *v;
    if (auto v = r.millis_in(*w, "wrapper", "watch_finish_grace_ms", 0, kTenMinutes)) cfg.watch_finish_grace = *v;
    if (auto v = r.millis_in(*w, "wrapper", "resync_timeout_ms", 100, kTenMinutes)) cfg.resync_timeout = *v;
    if (auto v = r.get<int64_t>(*w, "wrapper", "watch_queue_capacity", "a positive integer")) {
      if (*v < 1)
        r.errors.push_back("wrapper.watch_queue_capacity: must be at least 1");
      else
        cfg.watch_queue_capacity = static_cast<size_t>(*v);
    }
    if (auto v = r.get<int64_t>(*w, "wrapper", "worker_threads", "an integer")) {
      if (*v < 1 || *v > 64)
        r.errors.push_back("wrapper.worker_threads: must be between 1 and 64");
      else
        cfg.worker_threads = static_cast<unsigned>(*v);
    }
  }

  if (const toml::node* c = root.get("capabilities")) {
    if (const toml::table* caps = c->as_table()) {
      r.allow_only(*caps, "capabilities.", section_keys("capabilities"));
      cfg.default_image = r.get<std::string>(*caps, "capabilities", "default_image", "a string");
      cfg.gateway_manages_lifecycle = r.get<bool>(*caps, "capabilities", "gateway_manages_lifecycle", "a boolean");
    } else {
      r.errors.push_back("capabilities: must be a table");
    }
  }

  if (const toml::node* t = root.get("testing")) {
    if (const toml::table* testing = t->as_table()) {
      read_testing(r, *testing, cfg.testing);
    } else {
      r.errors.push_back("testing: must be a table");
    }
  }

  const toml::table* d = root["delegate"].as_table();
  DelegateOptions& del = cfg.delegate;
  if (!d) {
    r.errors.push_back("delegate: missing table [delegate]");
  } else {
    r.allow_only(*d, "delegate.", section_keys("delegate"));
    del.name = r.get<std::string>(*d, "delegate", "name", "a string").value_or("");
    if (!valid_driver_name(del.name)) {
      r.errors.push_back("delegate.name: \"" + del.name +
                         "\" must match [a-z0-9_-]{1,63} (the base driver's driver_config key)");
    }
    if (const toml::node* n = d->get("command")) {
      const toml::array* arr = n->as_array();
      if (!arr || arr->empty())
        r.errors.push_back("delegate.command: must be a non-empty array of strings");
      else
        for (size_t i = 0; i < arr->size(); i++) {
          if (auto s = (*arr)[i].value<std::string>(); s && (*arr)[i].is_string())
            del.command.push_back(*s);
          else
            r.errors.push_back("delegate.command[" + std::to_string(i) + "]: must be a string");
        }
    }
    del.endpoint = r.get<std::string>(*d, "delegate", "endpoint", "a string").value_or("");
    if (del.command.empty() == del.endpoint.empty()) {
      r.errors.push_back("delegate: exactly one of delegate.command and delegate.endpoint must be set");
    }
    if (!del.endpoint.empty()) {
      if (del.endpoint.rfind("unix:", 0) != 0) {
        r.errors.push_back("delegate.endpoint: must be a unix: address such as \"unix:///run/openshell/k8s.sock\"");
      } else if (std::string e = socket_path_error(endpoint_socket_path(del.endpoint)); !e.empty()) {
        r.errors.push_back("delegate.endpoint: " + e);
      }
    }
    if (const toml::node* n = d->get("env")) {
      if (const toml::table* env = n->as_table()) {
        for (const auto& [k, v] : *env) {
          if (auto s = v.value<std::string>(); s && v.is_string())
            del.env[std::string(k.str())] = *s;
          else
            r.errors.push_back("delegate.env." + std::string(k.str()) + ": must be a string");
        }
      } else {
        r.errors.push_back("delegate.env: must be a table of strings");
      }
    }
    del.inherit_env = r.get<bool>(*d, "delegate", "inherit_env", "a boolean").value_or(true);
    read_delegate_timing(r, *d, del);
    del.runtime_parent = r.get<std::string>(*d, "delegate", "runtime_dir", "a string").value_or("");
    if (!del.runtime_parent.empty() && del.runtime_parent.front() != '/') {
      r.errors.push_back("delegate.runtime_dir: must be an absolute path, not \"" + del.runtime_parent + "\"");
    }
  }
  if (w && d && cfg.name == del.name && cfg.config_mode == ConfigMode::kNested) {
    r.errors.push_back(
        "wrapper.name: must differ from delegate.name in nested mode (the delegate's block is keyed by its name)");
  }

  if (w && d && !cfg.socket.empty()) {
    if (auto loop = check_not_own_delegate(cfg, "wrapper.socket"); !loop) r.errors.push_back(loop.error());
  }

  if (!r.errors.empty()) {
    std::string all;
    for (const auto& e : r.errors) all += (all.empty() ? "" : "\n") + e;
    return Error{all};
  }
  del.wrapper_name = cfg.name;
  return cfg;
}

std::string endpoint_socket_path(const std::string& endpoint) {
  if (endpoint.rfind("unix://", 0) == 0) return endpoint.substr(7);
  if (endpoint.rfind("unix:", 0) == 0) return endpoint.substr(5);
  return {};
}

Result<bool> check_not_own_delegate(const WrapperConfig& cfg, const std::string& socket_source) {
  if (cfg.delegate.endpoint.empty() || cfg.socket.empty()) return true;
  std::error_code ec1, ec2;
  auto own = std::filesystem::weakly_canonical(std::filesystem::absolute(cfg.socket), ec1);
  auto target =
      std::filesystem::weakly_canonical(std::filesystem::absolute(endpoint_socket_path(cfg.delegate.endpoint)), ec2);
  if (ec1 || ec2 || own != target) return true;
  return Error{"delegate.endpoint: \"" + cfg.delegate.endpoint + "\" is the wrapper's own socket (" + socket_source +
               " = \"" + cfg.socket +
               "\"): the wrapper would call itself; point the endpoint at the base driver's socket"};
}

Result<bool> check_serving_socket(const WrapperConfig& cfg, const std::string& socket_source) {
  if (cfg.socket.empty()) {
    return Error{"no socket: set wrapper.socket, --bind-socket or OPENSHELL_COMPUTE_DRIVER_SOCKET"};
  }
  if (std::string e = socket_path_error(cfg.socket); !e.empty()) return Error{socket_source + ": " + e};
  return check_not_own_delegate(cfg, socket_source);
}

Result<WrapperConfig> load_config(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return Error{path + ": is a directory, not a TOML file"};
  std::ifstream in(path);
  if (!in) return Error{path + ": cannot read the file"};
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_config(buf.str(), path);
}

nlohmann::json WrapperConfig::to_json() const {
  nlohmann::json j;
  j["wrapper"] = {{"name", name},
                  {"socket", socket},
                  {"config_mode", config_mode == ConfigMode::kNested ? "nested" : "inline"},
                  {"log_level", log_level_name(log_level)},
                  {"shutdown_grace_ms", shutdown_grace.count()},
                  {"watch_queue_capacity", watch_queue_capacity},
                  {"watch_finish_grace_ms", watch_finish_grace.count()},
                  {"resync_timeout_ms", resync_timeout.count()},
                  {"worker_threads", worker_threads}};
  nlohmann::json caps = nlohmann::json::object();
  if (default_image) caps["default_image"] = *default_image;
  if (gateway_manages_lifecycle) caps["gateway_manages_lifecycle"] = *gateway_manages_lifecycle;
  j["capabilities"] = caps;
  if (testing.delay.count() > 0) {
    nlohmann::json rpcs = nlohmann::json::array();
    for (const auto& info : all_rpcs())
      if (testing.rpcs.test(static_cast<size_t>(info.rpc))) rpcs.push_back(info.name);
    j["testing"] = {
        {"delay_ms", testing.delay.count()}, {"delay_timeout_ms", testing.timeout.count()}, {"delay_rpcs", rpcs}};
  }
  nlohmann::json d = {{"name", delegate.name}, {"ready_timeout_ms", delegate.ready_timeout.count()}};
  if (!delegate.endpoint.empty()) {
    d["endpoint"] = delegate.endpoint;
  } else {
    d["command"] = delegate.command;
    d["env"] = delegate.env;
    d["inherit_env"] = delegate.inherit_env;
    d["restart_backoff_initial_ms"] = delegate.restart_backoff_initial.count();
    d["restart_backoff_max_ms"] = delegate.restart_backoff_max.count();
    d["stop_grace_ms"] = delegate.stop_grace.count();
    d["runtime_dir"] = delegate.runtime_parent;
    d["liveness_interval_ms"] = delegate.liveness_interval.count();
    d["liveness_timeout_ms"] = delegate.liveness_timeout.count();
    d["liveness_failures"] = delegate.liveness_failures;
  }
  j["delegate"] = d;
  return j;
}

}  // namespace owrap
