// Builtin hooks: C++ hooks compiled into the wrapper, behind the same Hook
// face as exec and grpc hooks. The table in builtins.cc lists every kind;
// adding a builtin is one file (<kind>.cc defining <kind>_builtin()) plus
// its line in that table. No static self-registration: a static library
// drops object files nothing references, and the registration with them.
#pragma once

#include "common/result.h"
#include "compute_driver.pb.h"
#include "hooks/hook.h"
#include "hooks/hook_spec.h"
#include "hooks/sandbox_feed.h"

#include <grpcpp/support/status.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

namespace computepb = openshell::compute::v1;

// What builtin hooks need from the wrapper that runs them.
struct BuiltinContext {
  using ListDone = std::function<void(grpc::Status, std::vector<computepb::DriverSandbox>)>;
  // The delegate's ListSandboxes, asynchronous: `done` runs exactly once,
  // on any thread, by `deadline` at the latest (DEADLINE_EXCEEDED then).
  // Empty when the wrapper has no delegate to ask (a hook needing it fails).
  std::function<void(std::chrono::steady_clock::time_point deadline, ListDone done)> list_sandboxes;
  // The wrapper's name (its driver_config key).
  std::string wrapper_name;
  // The wrapper's upstream watch (quota counts from it while it is live).
  // Null without one (plan, check-config, tests): quota lists instead.
  std::shared_ptr<SandboxFeed> sandbox_feed;
};

// Reads spec.config_toml (errors name spec.config_key) and builds the hook;
// every configuration error, one per line, in the Error.
using BuiltinFactory = Result<std::unique_ptr<Hook>> (*)(const HookSpec& spec, const BuiltinContext& ctx);

struct BuiltinKind {
  std::string_view kind;  // "defaults"
  PhaseSet phases;        // the phases it implements
  BuiltinFactory factory;
};

// Every builtin, in the table's order.
const std::vector<BuiltinKind>& builtin_kinds();
// nullopt for a kind that is not compiled in.
std::optional<PhaseSet> builtin_phases(std::string_view kind);
// "defaults, policy, quota", for error messages.
std::string builtin_kind_list();
// `unknown builtin "x"; known: defaults, policy, quota`
std::string unknown_builtin_message(std::string_view kind);

// Builds spec.builtin's hook. Refuses an unknown kind and phases the kind
// does not implement (an empty spec.phases means all it implements).
Result<std::unique_ptr<Hook>> make_builtin(const HookSpec& spec, const BuiltinContext& ctx);

}  // namespace owrap
