// The [[hooks]] entries and the chain-wide settings of the wrapper's TOML
// (docs/configuration.md, docs/hooks.md). Syntax and local consistency are
// checked here; what needs the transports (a builtin's phases, a grpc
// hook's manifest) is checked when the chain is built.
#pragma once

#include "common/toml_reader.h"
#include "hooks/hook_spec.h"

#include <chrono>
#include <string>
#include <vector>

namespace owrap {

struct HookChainConfig {
  std::vector<HookSpec> hooks;
  // The time all before-phase hooks of one call may take together: the
  // gateway sends no deadline, so without it a chain of unreachable
  // fail_open hooks would add up.
  std::chrono::milliseconds budget{10000};
  // Extra JSON-pointer prefixes no hook may patch.
  std::vector<std::string> protected_paths;
  // After-phase invocations waiting to run; beyond it they are dropped.
  size_t after_queue_capacity = 1024;
  // After-phase invocations running at once.
  size_t after_concurrency = 16;
};

// The keys one [[hooks]] entry accepts.
const std::vector<std::string>& hook_config_keys();
// The chain-wide keys, read from [wrapper].
const std::vector<std::string>& hook_chain_wrapper_keys();

// Reads every [[hooks]] table of `document`; errors name "hooks[i].key".
std::vector<HookSpec> read_hook_specs(TomlSection& document);
// Reads the chain-wide keys of the [wrapper] table (hook_budget_ms, ...).
void read_hook_chain_settings(TomlSection& wrapper, HookChainConfig& out);

// What check-config shows of a hook: transport, phases, activation,
// failure policy, mode, time limits.
nlohmann::json hook_spec_json(const HookSpec& spec);
nlohmann::json hook_chain_settings_json(const HookChainConfig& config);

// [A-Za-z0-9._-]+, not "." or "..": a hook instance name, which is also
// its request-config key and, for exec hooks, part of log fields.
bool valid_hook_name(const std::string& name);

// The values of openshell.io/extension.<key> that switch an extension on,
// compared case-insensitively (the VM driver's list).
bool extension_enabled(const std::string& label_value);

}  // namespace owrap
