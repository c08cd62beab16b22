#include "hooks/hook_config.h"

#include "plan/paths.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <set>

namespace owrap {

namespace {

constexpr int64_t kTenMinutes = 600000;

const std::vector<std::string> kHookKeys = {
    "name",
    "type",
    "builtin",
    "command",
    "env",
    "socket",
    "phases",
    "when",
    "failure_policy",
    "mode",
    "timeout_ms",
    "connect_timeout_ms",
    "max_in_flight",
    "may_override",
    "max_patches",
    "max_reply_bytes",
    "config",
};
const std::vector<std::string> kChainKeys = {"hook_budget_ms", "protected_paths", "after_hook_queue_capacity",
                                             "after_hook_concurrency"};

// The static config as a Struct for external hooks; dates as their TOML text.
google::protobuf::Struct toml_to_struct(const toml::table& table, const std::string& key) {
  google::protobuf::Struct out;
  (void)google::protobuf::util::JsonStringToMessage(toml_to_json(table, key, nullptr).dump(), &out);
  return out;
}

std::optional<HookTransport> transport_from(const std::string& s) {
  if (s == "builtin") return HookTransport::kBuiltin;
  if (s == "exec") return HookTransport::kExec;
  if (s == "grpc") return HookTransport::kGrpc;
  return std::nullopt;
}

void read_phases(TomlSection& h, HookSpec& spec) {
  auto names = h.strings("phases");
  if (!names) return;
  if (names->empty()) h.error("phases", "must name at least one phase");
  for (size_t i = 0; i < names->size(); i++) {
    auto phase = phase_from_name((*names)[i]);
    if (!phase) {
      std::string known;
      for (HookPhase p : all_phases()) known += (known.empty() ? "" : ", ") + std::string(phase_name(p));
      h.error("phases[" + std::to_string(i) + "]", "unknown phase \"" + (*names)[i] + "\"; known: " + known);
      continue;
    }
    spec.phases.set(static_cast<size_t>(*phase));
  }
}

void read_when(TomlSection& h, HookSpec& spec) {
  const toml::node* node = h.node("when");
  if (node == nullptr) return;
  if (node->is_string()) {
    if (*node->value<std::string>() != "always") {
      h.error("when", "must be \"always\", { extension = \"<key>\" } or { request_config = true }");
    }
    return;
  }
  auto when = h.table("when");
  if (!when) return;
  when->allow_only({"extension", "request_config"});
  auto extension = when->string("extension");
  auto request_config = when->boolean("request_config");
  if (extension && request_config) {
    h.error("when", "takes either extension or request_config, not both");
  } else if (extension) {
    if (!valid_hook_name(*extension)) when->error("extension", "must match [A-Za-z0-9._-]+ and not be . or ..");
    spec.when = Activation{Activation::Kind::kExtension, *extension};
  } else if (request_config) {
    if (*request_config) spec.when = Activation{Activation::Kind::kRequestConfig, ""};
  } else {
    h.error("when", "must be \"always\", { extension = \"<key>\" } or { request_config = true }");
  }
}

void read_policy_and_mode(TomlSection& h, HookSpec& spec) {
  if (auto p = h.string("failure_policy")) {
    if (*p == "fail_closed")
      spec.failure_policy = FailurePolicy::kFailClosed;
    else if (*p == "fail_open")
      spec.failure_policy = FailurePolicy::kFailOpen;
    else
      h.error("failure_policy", "must be \"fail_closed\" or \"fail_open\", not \"" + *p + "\"");
  }
  if (auto m = h.string("mode")) {
    if (*m == "enforce")
      spec.mode = HookMode::kEnforce;
    else if (*m == "audit")
      spec.mode = HookMode::kAudit;
    else
      h.error("mode", "must be \"enforce\" or \"audit\", not \"" + *m + "\"");
  }
}

void read_limits(TomlSection& h, HookSpec& spec) {
  if (auto v = h.millis("timeout_ms", 1, kTenMinutes)) spec.timeout = *v;
  if (auto v = h.millis("connect_timeout_ms", 1, kTenMinutes)) spec.connect_timeout = *v;
  if (auto v = h.integer("max_in_flight", 1, 4096)) spec.max_in_flight = static_cast<int>(*v);
  if (auto v = h.boolean("may_override")) spec.may_override = *v;
  if (auto v = h.integer("max_patches", 1, 100000)) spec.max_patches = static_cast<size_t>(*v);
  if (auto v = h.integer("max_reply_bytes", 1024, 64 << 20)) spec.max_reply_bytes = static_cast<size_t>(*v);
}

// What only one transport takes, and what each transport needs.
void read_transport(TomlSection& h, HookSpec& spec) {
  auto type = h.string("type");
  // `builtin = "<kind>"` says the type by itself.
  if (!type && !h.has("type") && h.has("builtin")) type = "builtin";
  if (!type) {
    if (!h.has("type")) h.error("type", "missing; must be \"builtin\", \"exec\" or \"grpc\"");
    return;
  }
  auto transport = transport_from(*type);
  if (!transport) return h.error("type", "must be \"builtin\", \"exec\" or \"grpc\", not \"" + *type + "\"");
  spec.transport = *transport;
  auto only_for = [&](const char* key, HookTransport t, const char* type_name) {
    if (h.has(key) && spec.transport != t) h.error(key, std::string("is only for type = \"") + type_name + "\"");
  };
  only_for("builtin", HookTransport::kBuiltin, "builtin");
  only_for("command", HookTransport::kExec, "exec");
  only_for("env", HookTransport::kExec, "exec");
  only_for("max_in_flight", HookTransport::kExec, "exec");
  only_for("socket", HookTransport::kGrpc, "grpc");
  only_for("connect_timeout_ms", HookTransport::kGrpc, "grpc");
  switch (spec.transport) {
    case HookTransport::kBuiltin:
      spec.builtin = h.string("builtin").value_or("");
      if (spec.builtin.empty() && !h.has("builtin"))
        h.error("builtin", "missing: which builtin hook (defaults, policy, quota)");
      break;
    case HookTransport::kExec:
      spec.command = h.strings("command").value_or(std::vector<std::string>{});
      if (spec.command.empty()) {
        if (!h.has("command")) h.error("command", "missing: the hook's argv, an absolute path first");
      } else if (spec.command[0].empty() || spec.command[0][0] != '/') {
        h.error("command[0]", "must be an absolute path, not \"" + spec.command[0] + "\"");
      }
      spec.env = h.string_table("env").value_or(std::map<std::string, std::string>{});
      break;
    case HookTransport::kGrpc:
      spec.socket = h.string("socket").value_or("");
      if (spec.socket.empty() && !h.has("socket")) h.error("socket", "missing: the hook server's Unix socket");
      if (!spec.socket.empty() && spec.socket[0] != '/') h.error("socket", "must be an absolute path");
      break;
  }
  if (spec.transport != HookTransport::kBuiltin && spec.phases.none() && !h.has("phases")) {
    h.error("phases", "missing: the phases this hook runs (prepare, validate, ...)");
  }
}

HookSpec read_hook(TomlSection& h) {
  h.allow_only(kHookKeys);
  HookSpec spec;
  spec.name = h.string("name").value_or("");
  if (!h.has("name")) {
    h.error("name", "missing: every hook has an instance name");
  } else if (!valid_hook_name(spec.name)) {
    h.error("name", "\"" + spec.name + "\" must match [A-Za-z0-9._-]+ and not be . or ..");
  }
  read_phases(h, spec);
  read_transport(h, spec);
  read_when(h, spec);
  read_policy_and_mode(h, spec);
  read_limits(h, spec);
  spec.config_key = h.full_key("config");
  if (auto config = h.table("config")) {
    spec.config_toml = std::make_shared<toml::table>(config->raw());
    spec.config = toml_to_struct(config->raw(), spec.config_key);
  }
  return spec;
}

}  // namespace

const std::vector<std::string>& hook_config_keys() {
  return kHookKeys;
}
const std::vector<std::string>& hook_chain_wrapper_keys() {
  return kChainKeys;
}

nlohmann::json hook_spec_json(const HookSpec& spec) {
  static const char* kTransports[] = {"builtin", "exec", "grpc"};
  nlohmann::json phases = nlohmann::json::array();
  for (HookPhase p : all_phases()) {
    if (spec.phases.test(static_cast<size_t>(p))) phases.push_back(phase_name(p));
  }
  nlohmann::json when = "always";
  if (spec.when.kind == Activation::Kind::kExtension) when = {{"extension", spec.when.extension_key}};
  if (spec.when.kind == Activation::Kind::kRequestConfig) when = {{"request_config", true}};
  nlohmann::json j = {{"name", spec.name},
                      {"type", kTransports[static_cast<int>(spec.transport)]},
                      {"phases", phases},
                      {"when", when},
                      {"failure_policy", spec.failure_policy == FailurePolicy::kFailOpen ? "fail_open" : "fail_closed"},
                      {"mode", spec.mode == HookMode::kAudit ? "audit" : "enforce"},
                      {"timeout_ms", spec.timeout.count()},
                      {"may_override", spec.may_override},
                      {"max_patches", spec.max_patches},
                      {"max_reply_bytes", spec.max_reply_bytes}};
  switch (spec.transport) {
    case HookTransport::kBuiltin:
      j["builtin"] = spec.builtin;
      break;
    case HookTransport::kExec:
      j["command"] = spec.command;
      j["max_in_flight"] = spec.max_in_flight;
      // env values may be credentials for the hook: names only.
      j["env"] = nlohmann::json::array();
      for (const auto& [k, v] : spec.env) j["env"].push_back(k);
      break;
    case HookTransport::kGrpc:
      j["socket"] = spec.socket;
      j["connect_timeout_ms"] = spec.connect_timeout.count();
      break;
  }
  return j;
}

nlohmann::json hook_chain_settings_json(const HookChainConfig& config) {
  return {{"hook_budget_ms", config.budget.count()},
          {"protected_paths", config.protected_paths},
          {"after_hook_queue_capacity", config.after_queue_capacity},
          {"after_hook_concurrency", config.after_concurrency}};
}

bool valid_hook_name(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '_' || c == '-'; });
}

bool extension_enabled(const std::string& label_value) {
  static const std::set<std::string> kOn = {"enabled", "enable", "requested", "request", "1", "true", "yes", "y", "on"};
  std::string v = label_value;
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  return kOn.count(v) > 0;
}

std::vector<HookSpec> read_hook_specs(TomlSection& document) {
  std::vector<HookSpec> specs;
  std::set<std::string> names;
  for (TomlSection& h : document.tables("hooks")) {
    HookSpec spec = read_hook(h);
    if (!spec.name.empty() && !names.insert(spec.name).second) {
      h.error("name", "\"" + spec.name + "\" is already the name of an earlier hook");
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

void read_hook_chain_settings(TomlSection& w, HookChainConfig& out) {
  if (auto v = w.millis("hook_budget_ms", 1, kTenMinutes)) out.budget = *v;
  if (auto v = w.integer("after_hook_queue_capacity", 1, 1 << 20)) out.after_queue_capacity = static_cast<size_t>(*v);
  if (auto v = w.integer("after_hook_concurrency", 1, 1024)) out.after_concurrency = static_cast<size_t>(*v);
  if (auto paths = w.strings("protected_paths")) {
    for (size_t i = 0; i < paths->size(); i++) {
      const std::string& p = (*paths)[i];
      auto pattern = PathPattern::parse(p);
      if (p.empty() || p[0] != '/' || !pattern) {
        w.error("protected_paths[" + std::to_string(i) + "]",
                "must be a JSON pointer starting with / (a last token may end in *)" +
                    (pattern ? std::string() : ": " + pattern.error()));
        continue;
      }
      out.protected_paths.push_back(p);
    }
  }
}

}  // namespace owrap
