// The `grpc` transport: a long-running hook server on a Unix socket serving
// LifecycleHook (proto/hooks.proto). Describe is called at start and retried
// with backoff until it answers; Invoke runs one phase as an async unary
// call on the caller's completion queue (no thread hop), or on the hook's own
// queue when the caller has none. docs/hooks.md (section 10) describes the
// behaviour operators see.
//
// Lifetime rule. Each invocation is an object that owns itself (and a share
// of the hook's channel and queue, the Core) until its Finish tag comes back
// on the queue it was started on. stop() cancels every invocation in flight
// and runs their `done` itself with CANCELLED, but an invocation on a foreign
// queue (InvokeOptions::cq) is freed only when that queue's poller hands its
// tag back, which may be after stop() returned and after the hook was
// destroyed: that queue's poller must keep polling until every tag is back
// (the wrapper's queues do, they drain before they go), and nothing else.
// stop() must not be called from inside a `done` of the same hook.
#pragma once

#include "hooks/hook.h"
#include "hooks/hook_spec.h"

#include <grpcpp/support/status.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace owrap {

class GrpcHook final : public Hook {
 public:
  explicit GrpcHook(const HookSpec& spec);
  ~GrpcHook() override;

  std::string transport() const override { return "grpc"; }
  void invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options, HookDone done) override;
  // Starts the Describe loop on the hook's own queue; never blocks.
  void start() override;
  void stop() override;
  std::optional<PhaseSet> implemented_phases() const override;
  // The manifest as JSON, {"error": ...} while Describe has not answered;
  // "problem" is added when the manifest does not fit the configuration.
  nlohmann::json describe() const override;

  // Set once Describe answered with a manifest this configuration cannot
  // use (another protocol version, a configured phase it does not
  // implement): FAILED_PRECONDITION naming them, which every invocation
  // then fails with. nullopt before Describe answered, and when it fits.
  // Like HookOutcome messages, it does not name the hook.
  std::optional<grpc::Status> describe_problem() const;
  // True once Describe has answered (whether or not the manifest fits).
  bool described() const;
  // One synchronous Describe, for check-config: OK when the hook answered
  // with a manifest that fits, describe_problem() when it does not, the
  // transport's failure otherwise. Its answer is recorded like the loop's.
  grpc::Status describe_now(std::chrono::milliseconds timeout);

  const std::string& socket() const;

 private:
  struct Core;
  class Invocation;
  std::shared_ptr<Core> core_;
  std::thread poller_;
  bool stopped_ = false;
};

}  // namespace owrap
