// Drives one call through its stages and the delegate, independent of gRPC:
//
//   before steps (in order) -> delegate -> after steps (reverse order)
//        \ on a failure: compensate, in reverse, every stage whose before
//          step ran, told what the delegate's answer means
//
// Every event reaches the runner on the call's own thread (its completion
// queue); only Resume handles are called from other threads, and they only
// ask the host to post on_resumed(). The host decides where that thread is:
// UnaryCall uses its completion queue and grpc::Alarm; the ordering tests
// use a fake host and deliver events in every order.
#pragma once

#include "call/stage.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace owrap {

class CallHost {
 public:
  virtual ~CallHost() = default;
  // Any thread, at most once per suspension: have the call's own thread run
  // CallRunner::on_resumed() soon.
  virtual void post_resume() = 0;
  // The call's thread: run CallRunner::on_timer() at `at`, replacing any
  // timer armed before; cancel_timer() disarms it (a timer that fires
  // anyway is ignored by the runner).
  virtual void arm_timer(std::chrono::steady_clock::time_point at) = 0;
  virtual void cancel_timer() = 0;
  // Sends the request to the delegate; the answer comes back through
  // CallRunner::on_delegate_done (possibly from within this call).
  virtual void call_delegate() = 0;
  // Answers the caller; called exactly once.
  virtual void finish(const grpc::Status& status) = 0;
};

class CallRunner {
 public:
  // `stages` are those that apply to state.rpc, in configuration order;
  // they outlive the call.
  CallRunner(CallHost& host, CallState& state, const std::vector<const Stage*>& stages,
             google::protobuf::Message& request, google::protobuf::Message& response);
  ~CallRunner();

  void start();
  void on_resumed();
  void on_timer();
  // The caller cancelled or went away, its deadline passed, or the server
  // is shutting down; `why` is what the call ends with.
  void on_cancelled(const grpc::Status& why = grpc::Status(grpc::StatusCode::CANCELLED,
                                                           "call cancelled by the caller"));
  void on_delegate_done(const grpc::Status& status, bool may_have_reached);

  bool finished() const { return phase_ == Phase::kDone; }
  // True while a stage is suspended (a resume may still be posted).
  bool suspended() const { return token_ != nullptr; }
  DelegateOutcome outcome() const { return outcome_; }
  // The stage the call waits for, or "".
  const std::string& waiting_for() const;

  // How long before the caller's deadline a suspended stage is given up, so
  // the answer (naming the stage) still reaches the caller in time.
  static std::chrono::milliseconds deadline_margin(std::chrono::steady_clock::duration remaining);
  // Whether a caller that went away at `now` gave up at its deadline (set at
  // `start`): gRPC's client resets the stream at its deadline, which it
  // reckoned a little before this end did (the headers' transit, a timeout
  // rounded up), so a reset that close to the deadline is the deadline. Both
  // relays judge by this, so their access logs and after-phases agree.
  static bool at_deadline(std::chrono::steady_clock::time_point deadline, std::chrono::steady_clock::time_point start,
                          std::chrono::steady_clock::time_point now);

 private:
  enum class Phase { kBefore, kDelegate, kAfter, kDone };

  void run();
  void run_before();
  void run_after();
  // Runs one step; returns false when the call must wait.
  bool step(const Stage& stage, const Stage::Step& fn, google::protobuf::Message& message);
  void suspend(const Stage& stage, std::chrono::milliseconds timeout);
  void stop_waiting();
  void fail(const grpc::Status& status, DelegateOutcome outcome);
  void finish(const grpc::Status& status);
  void notify_finished(const grpc::Status& status, DelegateOutcome outcome);

  CallHost& host_;
  CallState& state_;
  const std::vector<const Stage*>& stages_;
  google::protobuf::Message& request_;
  google::protobuf::Message& response_;
  Phase phase_ = Phase::kBefore;
  size_t next_ = 0;        // the next stage whose step runs in this phase
  size_t before_ran_ = 0;  // how many stages' before steps ran
  const Stage* waiting_ = nullptr;
  std::shared_ptr<ResumeToken> token_;
  std::shared_ptr<ResumeToken> spare_;  // a quick step's token, unshared, for the next step
  bool deadline_governs_ = false;       // the caller's deadline, not the stage's timeout, set the timer
  std::chrono::milliseconds waiting_timeout_{0};
  bool cancelled_ = false;
  grpc::Status cancel_reason_;
  DelegateOutcome outcome_ = DelegateOutcome::kNotCalled;
};

}  // namespace owrap
