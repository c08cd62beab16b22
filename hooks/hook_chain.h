// The hook chain: the operator's [[hooks]] run around every delegated call
// as pipeline stages (call/stage.h). docs/hooks.md is the specification.
//
//   CreateSandbox / ValidateSandboxCreate: prepare (every hook, in order;
//     patches the plan), then validate (every hook, in order; judges the
//     final plan), then the delegate gets the mutated plan;
//   Stop/Start/DeleteSandbox: before_<rpc> (in order);
//   afterwards, without delaying the answer: after_* / on_create_failed
//     (reverse order) through the AfterQueue; after_ready from the watch.
//
// A deny always denies; failures follow each hook's failure policy; audit
// hooks never change anything; a per-RPC budget bounds the whole chain.
#pragma once

#include "call/stage.h"
#include "hooks/after_queue.h"
#include "hooks/hook.h"
#include "hooks/hook_config.h"
#include "plan/plan.h"

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace owrap {

struct ConfiguredHook {
  HookSpec spec;
  std::unique_ptr<Hook> hook;
};

// Counted per hook, for logs now and metrics later.
struct HookCounters {
  std::atomic<uint64_t> invocations{0};
  std::atomic<uint64_t> denials{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> failed_open{0};  // failures a fail_open policy let pass
  std::atomic<uint64_t> audit_findings{0};
};

struct HookChainOptions {
  std::string wrapper_name;
  std::string delegate_name;
  // Where a hook's request block lives, for messages: "driver_config.acme".
  std::string request_config_path;
  HookChainConfig config;
};

// One hook's part in a plan or a call, for the plan tool and the logs.
struct HookVerdict {
  std::string hook;
  std::string phase;
  std::string verdict;  // "allowed", "denied", "failed", "failed_open", "audit_denied", "audit_failed", "skipped"
  std::string reason;
  std::vector<std::string> changed_paths;
};

struct PlanReport {
  grpc::Status status;
  nlohmann::json plan;  // the final DriverSandbox view (secrets removed)
  // The sandbox the delegate would get: the input with the plan written back.
  openshell::compute::v1::DriverSandbox sandbox;
  std::vector<HookVerdict> hooks;
};

class ChainRun;

class HookChain {
 public:
  HookChain(HookChainOptions options, std::vector<ConfiguredHook> hooks);
  ~HookChain();

  // The stages to add to the pipeline right after the config split.
  std::vector<Stage> stages();
  // The driver_config keys the hooks claim (their instance names).
  std::set<std::string> claimed_keys() const;
  void start();
  // Cancels what runs (calls answer CANCELLED), drains the after queue.
  void stop();

  // The watch: every sandbox snapshot and deletion the delegate reports.
  // The first Ready=True of a sandbox runs after_ready (at least once per
  // sandbox: a restart of the wrapper may run it again).
  void sandbox_reported(const openshell::compute::v1::DriverSandbox& sandbox);
  void sandbox_deleted(const std::string& sandbox_id);

  void set_delegate_version(std::string version);
  // Per RPC, the hooks that may run and in which phases (logged at start).
  nlohmann::json effective_chain() const;
  // "hooks: a, b" for GetCapabilities' driver_version; "" without hooks.
  std::string summary() const;
  const std::vector<ConfiguredHook>& hooks() const { return hooks_; }
  const HookCounters& counters(size_t i) const { return *counters_[i]; }
  const AfterQueue& after_queue() const { return after_; }

  // The `plan` tool: prepare and validate for `sandbox` as `rpc` would run
  // them, nothing created. `done` runs once, on any thread.
  void plan(const openshell::compute::v1::DriverSandbox& sandbox, const google::protobuf::Struct& wrapper_config,
            std::function<void(PlanReport)> done);

 private:
  friend class ChainRun;
  StepResult before(CallState& state, google::protobuf::Message& request, const Resume& resume);
  StepResult apply_plan(CallState& state, google::protobuf::Message& request);
  void finished(CallState& state, const grpc::Status& answer, DelegateOutcome outcome);
  std::shared_ptr<ChainRun> make_run(Rpc rpc, const openshell::compute::v1::DriverSandbox* sandbox,
                                     const std::string& sandbox_id, const google::protobuf::Struct& wrapper_config,
                                     grpc::Status& error);
  bool active(const ConfiguredHook& h, HookPhase phase, const openshell::compute::v1::DriverSandbox* sandbox,
              const google::protobuf::Struct& wrapper_config) const;
  // `sandbox` (null for Stop/Start/Delete: the request names the id) and
  // the hook's static config are held, not copied: neither changes while a
  // request holds them (the plan makes a new view per change; the spec
  // lives as long as the chain). Callers set scalars only, never the
  // sandbox or the config.
  std::shared_ptr<hookpb::HookRequest> base_request(
      const ConfiguredHook& h, HookPhase phase, Rpc rpc, const std::string& sandbox_id,
      const google::protobuf::Struct& wrapper_config,
      std::shared_ptr<const openshell::compute::v1::DriverSandbox> sandbox) const;
  void enqueue_after(const ChainRun& run, HookPhase phase, const grpc::Status* failure, DelegateOutcome outcome);
  PatchRules rules_for(const HookSpec& spec) const;

  HookChainOptions options_;
  std::vector<ConfiguredHook> hooks_;
  std::vector<std::unique_ptr<HookCounters>> counters_;
  // Per hook and phase, what the call says runs ('hook "a", phase validate'),
  // made once: every invocation reports it.
  std::vector<std::array<std::string, kHookPhaseCount>> labels_;
  AfterQueue after_;
  // The patch rules, made once; null if the configured paths do not make
  // rules (every apply() then says why).
  std::shared_ptr<const Protection> protection_;
  std::shared_ptr<CancelSignal> stopping_ = std::make_shared<CancelSignal>();
  mutable std::mutex mu_;
  std::string delegate_version_;
  std::set<std::string> ready_;    // sandboxes whose after_ready ran
  bool after_ready_ = false;       // some hook has the phase: else events cost nothing
  std::set<std::string> claimed_;  // the hooks' request-config keys
};

// The phases an RPC runs before the delegate and after it.
std::span<const HookPhase> before_phases(Rpc rpc);
std::optional<HookPhase> after_phase(Rpc rpc, bool committed);

// The code a refusal reaches the caller with: what the gateway passes
// through for that RPC (FAILED_PRECONDITION on create), honouring the
// hook's own code where it can.
grpc::StatusCode refusal_code(Rpc rpc, const std::string& hook_code);
// A non-OK code by its name ("FAILED_PRECONDITION"); nullopt otherwise.
std::optional<grpc::StatusCode> status_code_from_name(const std::string& name);

}  // namespace owrap
