// One hook interface, three transports (builtin, exec, grpc) that behave
// alike from the chain's point of view: NRI's plugin_type.go puts builtin,
// ttRPC and wasm plugins behind one face the same way. docs/hooks.md is the
// protocol's specification; proto/hooks.proto its schema.
#pragma once

#include "hooks.pb.h"
#include "plan/patch_session.h"

#include <grpcpp/completion_queue.h>
#include <grpcpp/support/status.h>
#include <nlohmann/json.hpp>

#include <bitset>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

namespace hookpb = openshell::driver_wrapper::hooks::v1;

inline constexpr uint32_t kHookProtocolVersion = 1;

enum class HookPhase {
  kPrepare,
  kValidate,
  kAfterCreate,
  kOnCreateFailed,
  kBeforeStop,
  kAfterStop,
  kBeforeStart,
  kAfterStart,
  kBeforeDelete,
  kAfterDelete,
  kAfterReady,
};
inline constexpr size_t kHookPhaseCount = 11;
using PhaseSet = std::bitset<kHookPhaseCount>;

std::string_view phase_name(HookPhase phase);
std::optional<HookPhase> phase_from_name(std::string_view name);
const std::vector<HookPhase>& all_phases();
// prepare, validate and before_*: the hook's answer can stop the call.
// The others only observe and never change an answer.
bool is_decision_phase(HookPhase phase);
std::string phase_list(const PhaseSet& phases);  // "prepare, validate"

// Cancellation shared by the chain and a transport: the caller went away,
// the budget ran out, or the wrapper is stopping. Thread-safe.
class CancelSignal {
 public:
  // Runs every registered callback once, on the calling thread.
  void cancel();
  bool cancelled() const;
  // Runs `f` when cancel() is called, or at once if it already was.
  void on_cancel(std::function<void()> f);

 private:
  mutable std::mutex mu_;
  bool cancelled_ = false;
  std::vector<std::function<void()>> callbacks_;
};

struct InvokeOptions {
  // The transport calls `done` by then at the latest, with
  // DEADLINE_EXCEEDED if the hook has not answered (exec kills it).
  std::chrono::steady_clock::time_point deadline;
  // Never null. A cancelled invocation ends at once with CANCELLED (exec
  // kills its process group).
  std::shared_ptr<CancelSignal> cancel = std::make_shared<CancelSignal>();
  // The call's own completion queue (every tag on it is a CompletionTag,
  // common/completion_tag.h), so a grpc hook answers there without a thread
  // hop; null outside a call (after-phases), where transports use their own.
  grpc::CompletionQueue* cq = nullptr;
};

// How one invocation ended. A non-OK `failure` means the hook failed: it
// errored, timed out, was unreachable, crashed, or answered something
// malformed or oversized; the message says which but not the hook's name
// (the chain adds it) and never contains a secret. Otherwise `response` is
// the hook's answer, not yet judged (a denial is an answer, not a failure).
struct HookOutcome {
  grpc::Status failure;
  hookpb::HookResponse response;
  // An in-process hook may answer its patches here, as the RFC 6902 array
  // the plan applies, instead of in `response.patches`: the same operations
  // without a round trip through protobuf Values.
  std::optional<nlohmann::json> patch_json;
  // Or already parsed (a builtin's): the plan neither prints nor parses
  // them. At most one of the three ways.
  std::optional<PreparedPatches> prepared;

  static HookOutcome answered(hookpb::HookResponse response) { return {grpc::Status::OK, std::move(response), {}, {}}; }
  static HookOutcome failed(grpc::StatusCode code, std::string message) {
    return {grpc::Status(code, std::move(message)), {}, {}, {}};
  }
  size_t patch_count() const {
    if (prepared) return prepared->size();
    return patch_json ? patch_json->size() : static_cast<size_t>(response.patches_size());
  }
  // Patches came more than one way (a hook's bug).
  bool patches_twice() const {
    return (patch_json ? 1 : 0) + (prepared ? 1 : 0) + (response.patches_size() > 0 ? 1 : 0) > 1;
  }
};
using HookDone = std::function<void(HookOutcome)>;

class Hook {
 public:
  explicit Hook(std::string name) : name_(std::move(name)) {}
  virtual ~Hook() = default;
  Hook(const Hook&) = delete;
  Hook& operator=(const Hook&) = delete;

  // The instance name from the configuration.
  const std::string& name() const { return name_; }
  // "builtin:<kind>", "exec" or "grpc".
  virtual std::string transport() const = 0;

  // Runs one phase. Calls `done` exactly once, from any thread, possibly
  // before invoke() returns (builtin hooks do). Never throws, never blocks
  // on the hook: spawning, I/O and waiting are asynchronous.
  virtual void invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options,
                      HookDone done) = 0;

  // After configuration, before the first call (grpc: starts Describe).
  virtual void start() {}
  // Ends every invocation in flight (their `done` still runs) and frees the
  // transport's resources; no `done` runs after stop() returns.
  virtual void stop() {}

  // The phases the hook itself says it implements: a builtin's fixed set, a
  // grpc hook's Describe once it answered; nullopt when unknown (exec, or
  // Describe not answered yet).
  virtual std::optional<PhaseSet> implemented_phases() const { return std::nullopt; }
  // What check-config shows besides the configuration: a grpc hook's
  // manifest, or why Describe failed.
  virtual nlohmann::json describe() const { return nlohmann::json::object(); }

  // A builtin hook that holds something for the duration of a call (quota's
  // reservation) learns that the call ended, whatever happened. Called once
  // per call in which the hook was invoked: on the call's thread, or, when a
  // hook of the call was still answering, on that hook's thread once it has.
  virtual void call_finished(const std::string& sandbox_id, bool delegate_committed) {}

  // Whether its validate requests carry path_owners (which hook set which
  // path). Every transport's do; a builtin that never reads them says no,
  // and the chain does not copy them for it.
  virtual bool reads_path_owners() const { return true; }

 private:
  std::string name_;
};

}  // namespace owrap
