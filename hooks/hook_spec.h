// One [[hooks]] entry of the configuration, read and checked by
// hooks/hook_config.cc. Transports and builtin hooks are built from it.
#pragma once

#include "hooks/hook.h"

#include <google/protobuf/struct.pb.h>
#include <toml++/toml.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace owrap {

enum class HookTransport { kBuiltin, kExec, kGrpc };
enum class FailurePolicy { kFailClosed, kFailOpen };
enum class HookMode { kEnforce, kAudit };

// When a hook runs for a call.
struct Activation {
  enum class Kind {
    kAlways,         // every call (enforcement hooks must use this)
    kExtension,      // template label openshell.io/extension.<key> enabled
    kRequestConfig,  // the request carries driver_config.<wrapper>.<hook>
  };
  Kind kind = Kind::kAlways;
  std::string extension_key;
};

struct HookSpec {
  std::string name;  // [A-Za-z0-9._-]+, not "." or "..", unique
  HookTransport transport = HookTransport::kBuiltin;
  std::string builtin;                     // builtin: which one ("defaults")
  std::vector<std::string> command;        // exec: argv, command[0] absolute
  std::map<std::string, std::string> env;  // exec: added to the scrubbed environment
  std::string socket;                      // grpc: absolute Unix socket path
  PhaseSet phases;                         // the phases this instance runs
  Activation when;
  FailurePolicy failure_policy = FailurePolicy::kFailClosed;
  HookMode mode = HookMode::kEnforce;
  std::chrono::milliseconds timeout{2000};
  std::chrono::milliseconds connect_timeout{1000};  // grpc
  int max_in_flight = 16;                           // exec: processes at once
  bool may_override = false;                        // may change paths an earlier hook set
  size_t max_patches = 32;
  size_t max_reply_bytes = 1 << 20;
  // The static `config` table: as a Struct for external hooks, and as TOML
  // (with its full key, "hooks[2].config") for builtin hooks to read with
  // TomlSection so their errors name the key.
  google::protobuf::Struct config;
  std::shared_ptr<const toml::table> config_toml = std::make_shared<toml::table>();
  std::string config_key;  // "hooks[2].config"
};

}  // namespace owrap
