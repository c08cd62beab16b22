#include "proxy/config.h"

#include "common/toml_reader.h"
#include "common/uds.h"
#include "delegates/delegate_config.h"

#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace owrap {

namespace {

constexpr int64_t kTenMinutes = 600000;

const std::vector<std::string> kOwnWrapperKeys = {"name",
                                                  "socket",
                                                  "config_mode",
                                                  "log_level",
                                                  "shutdown_grace_ms",
                                                  "watch_queue_capacity",
                                                  "watch_finish_grace_ms",
                                                  "resync_timeout_ms",
                                                  "worker_threads",
                                                  "relay"};

// [wrapper] also holds the hook chain's own settings, read by hooks/.
const std::vector<std::string>& wrapper_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> all = kOwnWrapperKeys;
    for (const auto& k : hook_chain_wrapper_keys()) all.push_back(k);
    return all;
  }();
  return keys;
}
const std::vector<std::string> kCapabilitiesKeys = {"default_image", "gateway_manages_lifecycle"};
const std::vector<std::string> kTestingKeys = {"delay_ms", "delay_timeout_ms", "delay_rpcs"};

// A path the wrapper binds or connects to: absolute, and what the kernel
// will really use (a NUL would silently cut it short).
std::optional<std::string> socket_path(TomlSection& t, std::string_view key) {
  auto v = t.string(key);
  if (!v) return std::nullopt;
  if (std::string e = socket_path_error(*v); !e.empty()) {
    t.error(key, e);
    return std::nullopt;
  }
  return v;
}

void read_wrapper(TomlSection& w, WrapperConfig& cfg) {
  w.allow_only(wrapper_keys());
  cfg.name = w.string("name").value_or("");
  if (!valid_driver_name(cfg.name)) {
    w.error("name", "\"" + cfg.name + "\" must match [a-z0-9_-]{1,63} (the gateway lowercases driver names)");
  }
  cfg.socket = socket_path(w, "socket").value_or("");
  if (auto mode = w.string("config_mode")) {
    if (*mode == "nested")
      cfg.config_mode = ConfigMode::kNested;
    else if (*mode == "inline")
      cfg.config_mode = ConfigMode::kInline;
    else
      w.error("config_mode", "must be \"nested\" or \"inline\", not \"" + *mode + "\"");
  }
  if (auto level = w.string("log_level")) {
    if (auto l = parse_log_level(*level))
      cfg.log_level = *l;
    else
      w.error("log_level", "must be debug, info, warn or error");
  }
  if (auto v = w.millis("shutdown_grace_ms", 0, kTenMinutes)) cfg.shutdown_grace = *v;
  if (auto v = w.millis("watch_finish_grace_ms", 0, kTenMinutes)) cfg.watch_finish_grace = *v;
  if (auto v = w.millis("resync_timeout_ms", 100, kTenMinutes)) cfg.resync_timeout = *v;
  if (auto v = w.integer("watch_queue_capacity", 1, 1 << 24)) cfg.watch_queue_capacity = static_cast<size_t>(*v);
  if (auto v = w.integer("worker_threads", 1, 64)) cfg.worker_threads = static_cast<unsigned>(*v);
  if (auto relay = w.string("relay")) {
    if (*relay == "frames")
      cfg.relay = RelayMode::kFrames;
    else if (*relay == "grpc")
      cfg.relay = RelayMode::kGrpc;
    else
      w.error("relay", "must be \"frames\" or \"grpc\", not \"" + *relay + "\"");
  }
  read_hook_chain_settings(w, cfg.hooks);
}

void read_capabilities(TomlSection& c, WrapperConfig& cfg) {
  c.allow_only(kCapabilitiesKeys);
  cfg.default_image = c.string("default_image");
  cfg.gateway_manages_lifecycle = c.boolean("gateway_manages_lifecycle");
}

void read_testing(TomlSection& t, TestingStageConfig& out) {
  t.allow_only(kTestingKeys);
  if (auto v = t.millis("delay_ms", 0, kTenMinutes)) out.delay = *v;
  if (auto v = t.millis("delay_timeout_ms", 1, kTenMinutes)) out.timeout = *v;
  auto names = t.strings("delay_rpcs");
  if (!names) return;
  out.rpcs.reset();
  for (size_t i = 0; i < names->size(); i++) {
    auto rpc = rpc_from_name((*names)[i]);
    if (!rpc || rpc_info(*rpc).server_streaming) {
      t.error("delay_rpcs[" + std::to_string(i) + "]", "must be the name of a unary RPC");
      continue;
    }
    out.rpcs.set(static_cast<size_t>(*rpc));
  }
}

}  // namespace

const std::vector<ConfigSection>& config_sections() {
  static const std::vector<ConfigSection> kSections = {
      {"wrapper", wrapper_keys()},          {"capabilities", kCapabilitiesKeys}, {"testing", kTestingKeys},
      {"delegate", delegate_config_keys()}, {"hooks", hook_config_keys()},
  };
  return kSections;
}

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
  std::vector<std::string> errors;
  TomlSection document(root, "", errors);
  std::vector<std::string> tables;
  for (const auto& section : config_sections()) tables.push_back(section.name);
  document.allow_only(tables);

  auto wrapper = document.table("wrapper");
  if (wrapper) {
    read_wrapper(*wrapper, cfg);
  } else if (!document.has("wrapper")) {
    errors.push_back("wrapper: missing table [wrapper]");
  }
  if (auto caps = document.table("capabilities")) read_capabilities(*caps, cfg);
  if (auto testing = document.table("testing")) read_testing(*testing, cfg.testing);
  auto delegate = document.table("delegate");
  if (delegate) {
    cfg.delegate = read_delegate_options(*delegate);
  } else if (!document.has("delegate")) {
    errors.push_back("delegate: missing table [delegate]");
  }

  cfg.hooks.hooks = read_hook_specs(document);
  for (size_t i = 0; i < cfg.hooks.hooks.size(); i++) {
    const std::string& hook = cfg.hooks.hooks[i].name;
    if (delegate && hook == cfg.delegate.name && cfg.config_mode == ConfigMode::kNested) {
      errors.push_back("hooks[" + std::to_string(i) + "].name: \"" + hook +
                       "\" is the delegate's name, whose driver_config block it would claim");
    }
  }
  if (wrapper && delegate && cfg.name == cfg.delegate.name && cfg.config_mode == ConfigMode::kNested) {
    errors.push_back(
        "wrapper.name: must differ from delegate.name in nested mode (the delegate's block is keyed by its name)");
  }
  if (wrapper && delegate && !cfg.socket.empty()) {
    if (auto loop = check_not_own_delegate(cfg, "wrapper.socket"); !loop) errors.push_back(loop.error());
  }
  if (!errors.empty()) {
    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "\n") + e;
    return Error{all};
  }
  cfg.delegate.wrapper_name = cfg.name;
  return cfg;
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
                  {"worker_threads", worker_threads},
                  {"relay", relay == RelayMode::kFrames ? "frames" : "grpc"}};
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
  nlohmann::json chain = hook_chain_settings_json(hooks);
  for (const auto& [k, v] : chain.items()) j["wrapper"][k] = v;
  j["hooks"] = nlohmann::json::array();
  for (const auto& spec : hooks.hooks) j["hooks"].push_back(hook_spec_json(spec));
  return j;
}

}  // namespace owrap
