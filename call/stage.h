// The stage interface: what the pipeline runs around a delegated call.
//
// Modelled on Envoy's filter chain: a step either finishes at once
// (StepResult::done) or suspends (StepResult::suspended) and later resumes
// the call through its Resume handle, from whatever thread finished the
// work; the call continues on its own completion queue, never on that
// thread. Every suspension has a timer (the stage's timeout, never later
// than the caller's deadline). A resume that arrives after the call moved on
// (timed out, cancelled, shut down) is ignored.
#pragma once

#include "call/call_state.h"
#include "call/outcome.h"

#include <google/protobuf/message.h>
#include <grpcpp/support/status.h>

#include <bitset>
#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>

namespace owrap {

class CallHost;

// State shared by one suspension and the call that waits for it.
class ResumeToken {
 public:
  explicit ResumeToken(CallHost* host) : host_(host) {}

  // Any thread. Returns false when ignored (already resumed, or the call no
  // longer waits).
  bool resume(grpc::Status status);
  bool cancelled() const;
  bool resumed() const;
  void on_cancel(std::function<void()> f);
  // Any thread: what the stage is doing now ("hook \"quota\", phase
  // validate"), added to a timeout or cancellation message.
  void set_progress(std::string what);
  std::string progress() const;

  // The call's thread: what it learns when the host's resume arrives.
  grpc::Status take_status();
  // The call's thread: stop waiting. Returns false if a resume was already
  // posted (the call must then wait for it); otherwise the token is
  // detached, marked cancelled, and its on_cancel callback runs.
  bool abandon();
  // The call's thread, after a resume was taken or the stage was done: no
  // more resumes reach the host.
  void detach();
  // The call's thread, once a step said "done": detach(), or, when nobody
  // else holds the token (`unshared`) and it was never resumed, make it as
  // good as new for the call's next step on `host` (a callback the step
  // left is dropped, as with its token) and return true.
  bool detach_or_rearm(CallHost* host, bool unshared);

 private:
  mutable std::mutex mu_;
  CallHost* host_;  // nullptr once detached
  bool resumed_ = false;
  bool cancelled_ = false;
  grpc::Status status_;
  std::function<void()> on_cancel_;
  std::string progress_;
};

// The handle a suspended stage keeps. Copyable; every copy is the same
// one-shot resumption.
class Resume {
 public:
  Resume() = default;
  explicit Resume(std::shared_ptr<ResumeToken> token) : token_(std::move(token)) {}
  // Resumes the call: OK continues it, anything else fails it with that
  // status. Any thread; at most once takes effect.
  void operator()(grpc::Status status = grpc::Status::OK) const {
    if (token_) token_->resume(std::move(status));
  }
  // True once the call gave up waiting (caller cancelled, timeout, shutdown).
  bool cancelled() const { return token_ && token_->cancelled(); }
  // Runs `f` once when the call gives up waiting (on the call's thread), or
  // at once if it already has: a hook kills its process here.
  void on_cancel(std::function<void()> f) const {
    if (token_) token_->on_cancel(std::move(f));
  }
  // Names what the suspended stage waits for, for the message the call ends
  // with if it times out or is cancelled meanwhile.
  void set_progress(std::string what) const {
    if (token_) token_->set_progress(std::move(what));
  }

 private:
  std::shared_ptr<ResumeToken> token_;
};

class StepResult {
 public:
  static StepResult done(grpc::Status status = grpc::Status::OK) { return StepResult(std::move(status), {}, false); }
  // The stage resumes the call itself, within `timeout`.
  static StepResult suspended(std::chrono::milliseconds timeout) { return StepResult(grpc::Status::OK, timeout, true); }
  bool is_suspended() const { return suspended_; }
  const grpc::Status& status() const { return status_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  StepResult(grpc::Status s, std::chrono::milliseconds t, bool suspended)
      : status_(std::move(s)), timeout_(t), suspended_(suspended) {}
  grpc::Status status_;
  std::chrono::milliseconds timeout_{0};
  bool suspended_;
};

using RpcSet = std::bitset<kRpcCount>;
RpcSet rpc_set(std::initializer_list<Rpc> rpcs);

// A stage is data: its name (in every message about it), the RPCs it
// applies to, and up to four steps. `compensate` undoes `before` when the
// call fails after it ran, and is told what the delegate's answer means;
// its errors are the stage's to log, never the caller's. `finished` runs
// once the answer was handed to the caller, for every stage whose `before`
// ran (or that has none), whatever the answer: work that must not delay the
// answer (after-phase hooks) starts here.
struct Stage {
  using Step = std::function<StepResult(CallState&, google::protobuf::Message&, const Resume&)>;
  std::string name;
  RpcSet rpcs;
  Step before;  // the request, before the delegate
  Step after;   // the response, after the delegate said OK
  std::function<void(CallState&, const grpc::Status& cause, DelegateOutcome)> compensate;
  std::function<void(CallState&, const grpc::Status& answer, DelegateOutcome)> finished;
};

}  // namespace owrap
