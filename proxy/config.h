// The wrapper's TOML configuration (docs/configuration.md documents every
// key). Unknown keys are errors; every error names its TOML key.
#pragma once

#include "call/stage.h"
#include "common/log.h"
#include "delegates/delegate.h"
#include "delegates/delegate_config.h"
#include "hooks/hook_config.h"
#include "plan/config_split.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace owrap {

// [testing]: a stage that suspends calls, for tests and benchmarks of the
// pipeline (a stand-in for a slow hook). Off unless `delay_ms` is set.
struct TestingStageConfig {
  std::chrono::milliseconds delay{0};
  std::chrono::milliseconds timeout{2000};
  RpcSet rpcs = rpc_set({Rpc::kCreateSandbox});
};

// Who serves the gateway's connections (proxy/frame_relay.h): the
// wrapper's HTTP/2 front, which relays calls no stage sees straight to the
// delegate and the rest to the gRPC server; or the gRPC server alone.
enum class RelayMode { kFrames, kGrpc };

struct WrapperConfig {
  std::string name;
  std::string socket;
  // Where `socket` came from, for error messages: wrapper.socket,
  // --bind-socket or OPENSHELL_COMPUTE_DRIVER_SOCKET.
  std::string socket_source = "wrapper.socket";
  ConfigMode config_mode = ConfigMode::kNested;
  LogLevel log_level = LogLevel::kInfo;
  std::chrono::milliseconds shutdown_grace{10000};
  size_t watch_queue_capacity = 1024;
  std::chrono::milliseconds watch_finish_grace{10000};
  // Deadline of the ListSandboxes that resyncs the watch after a break.
  std::chrono::milliseconds resync_timeout{30000};
  // Threads relaying calls, each polling its own completion queue.
  unsigned worker_threads = 1;
  RelayMode relay = RelayMode::kFrames;
  // [capabilities]: overrides of what the delegate reports.
  std::optional<std::string> default_image;
  std::optional<bool> gateway_manages_lifecycle;
  DelegateOptions delegate;
  TestingStageConfig testing;
  // [[hooks]] and the chain-wide [wrapper] keys (hook_budget_ms, ...).
  HookChainConfig hooks;

  nlohmann::json to_json() const;
};

// Every TOML table the wrapper reads and the keys it accepts in each: the one
// place a key is allowed (the parser rejects any other), and what
// docs/configuration.md must document (a test compares the two).
struct ConfigSection {
  std::string name;
  std::vector<std::string> keys;
};
const std::vector<ConfigSection>& config_sections();

// Parses and validates; on failure returns every error, one per line, each
// starting with its TOML key.
Result<WrapperConfig> load_config(const std::string& path);
Result<WrapperConfig> parse_config(const std::string& toml_text, const std::string& source);

// An endpoint delegate must not be the wrapper's own socket: the wrapper
// would relay every call to itself. `socket_source` names where the socket
// came from (wrapper.socket, --bind-socket, ...).
Result<bool> check_not_own_delegate(const WrapperConfig& cfg, const std::string& socket_source);
// Everything that can be known about the serving socket before anything is
// launched: set, absolute, short enough, not the delegate's endpoint.
Result<bool> check_serving_socket(const WrapperConfig& cfg, const std::string& socket_source);

}  // namespace owrap
