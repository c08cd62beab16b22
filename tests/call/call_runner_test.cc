// The call runner's interleavings, driven deterministically in the manner of
// Envoy's ext_proc ordering_test: a fake host records what the runner asks
// for, and the test delivers resumes, timer expiries, cancellations and
// delegate answers in every order that matters.
#include "call/call_runner.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

using namespace owrap;
using Catch::Contains;

namespace {

class FakeHost final : public CallHost {
 public:
  void post_resume() override { posted++; }
  void arm_timer(std::chrono::steady_clock::time_point at) override {
    timer_at = at;
    armed = true;
  }
  void cancel_timer() override { armed = false; }
  void call_delegate() override { delegate_calls++; }
  void finish(const grpc::Status& s) override {
    finishes++;
    status = s;
  }

  std::atomic<int> posted{0};
  bool armed = false;
  std::chrono::steady_clock::time_point timer_at;
  int delegate_calls = 0;
  int finishes = 0;
  grpc::Status status;
};

// A stage whose completion the test controls: it suspends and hands its
// Resume handle to the test.
struct Controlled {
  std::string name;
  std::chrono::milliseconds timeout{300};
  Resume handle;
  bool cancel_seen = false;
  std::vector<std::string>* log;

  Stage stage(RpcSet rpcs = rpc_set({Rpc::kCreateSandbox})) {
    return Stage{name, rpcs,
                 [this](CallState&, google::protobuf::Message&, const Resume& r) {
                   log->push_back("before:" + name);
                   handle = r;
                   r.on_cancel([this] { cancel_seen = true; });
                   return StepResult::suspended(timeout);
                 },
                 nullptr,
                 [this](CallState&, const grpc::Status& cause, DelegateOutcome o) {
                   log->push_back("undo:" + name + ":" + std::string(outcome_name(o)) + ":" +
                                  std::to_string(cause.error_code()));
                 }};
  }
};

Stage quick(const std::string& name, std::vector<std::string>& log, grpc::Status result = grpc::Status::OK) {
  return Stage{name, rpc_set({Rpc::kCreateSandbox}),
               [&log, name, result](CallState&, google::protobuf::Message&, const Resume&) {
                 log.push_back("before:" + name);
                 return StepResult::done(result);
               },
               [&log, name](CallState&, google::protobuf::Message&, const Resume&) {
                 log.push_back("after:" + name);
                 return StepResult::done();
               },
               [&log, name](CallState&, const grpc::Status&, DelegateOutcome o) {
                 log.push_back("undo:" + name + ":" + std::string(outcome_name(o)));
               }};
}

struct Fixture {
  FakeHost host;
  CallState state;
  v1::CreateSandboxRequest request;
  v1::CreateSandboxResponse response;
  std::vector<std::string> log;
  std::vector<Stage> owned;
  std::vector<const Stage*> stages;
  std::unique_ptr<CallRunner> runner;

  Fixture() { state.rpc = Rpc::kCreateSandbox; }
  void add(Stage s) { owned.push_back(std::move(s)); }
  CallRunner& start() {
    owned.reserve(owned.size());
    for (const auto& s : owned) stages.push_back(&s);
    runner = std::make_unique<CallRunner>(host, state, stages, request, response);
    runner->start();
    return *runner;
  }
};

}  // namespace

TEST_CASE("quick stages run inline: no timer, no suspension; after steps in reverse", "[call][ordering]") {
  Fixture f;
  f.add(quick("a", f.log));
  f.add(quick("b", f.log));
  auto& r = f.start();
  CHECK_FALSE(f.host.armed);
  CHECK(f.host.delegate_calls == 1);
  r.on_delegate_done(grpc::Status::OK, true);
  CHECK(f.host.finishes == 1);
  CHECK(f.host.status.ok());
  CHECK(r.outcome() == DelegateOutcome::kCommitted);
  CHECK(f.log == std::vector<std::string>{"before:a", "before:b", "after:b", "after:a"});
}

TEST_CASE("a suspended stage resumes the call; OK continues to the delegate", "[call][ordering]") {
  Fixture f;
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(quick("a", f.log));
  f.add(slow.stage());
  auto& r = f.start();
  CHECK(r.suspended());
  CHECK(r.waiting_for() == "slow");
  CHECK(f.host.armed);
  CHECK(f.host.delegate_calls == 0);
  // The work finishes on another thread; the call resumes on its own.
  std::thread([&] { slow.handle(); }).join();
  CHECK(f.host.posted == 1);
  CHECK(f.host.delegate_calls == 0);
  r.on_resumed();
  CHECK_FALSE(f.host.armed);
  CHECK(f.host.delegate_calls == 1);
  r.on_delegate_done(grpc::Status::OK, true);
  CHECK(f.host.status.ok());
  CHECK_FALSE(slow.cancel_seen);
}

TEST_CASE("resume before cancel: the resume wins the race, the call still ends CANCELLED", "[call][ordering]") {
  Fixture f;
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(slow.stage());
  auto& r = f.start();
  slow.handle();     // posted
  r.on_cancelled();  // arrives before the posted resume is delivered
  CHECK(f.host.finishes == 0);
  CHECK_FALSE(slow.cancel_seen);  // its work had finished: nothing to kill
  r.on_resumed();
  CHECK(f.host.finishes == 1);
  CHECK(f.host.status.error_code() == grpc::StatusCode::CANCELLED);
  CHECK(f.host.delegate_calls == 0);
  CHECK(f.log == std::vector<std::string>{"before:slow", "undo:slow:not_called:1"});
}

TEST_CASE("resume after cancel is ignored; the handle reports cancelled", "[call][ordering]") {
  Fixture f;
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(slow.stage());
  auto& r = f.start();
  r.on_cancelled();
  CHECK(f.host.finishes == 1);
  CHECK(f.host.status.error_code() == grpc::StatusCode::CANCELLED);
  CHECK_THAT(f.host.status.error_message(), Contains("\"slow\""));
  CHECK(slow.cancel_seen);
  CHECK(slow.handle.cancelled());
  CHECK_FALSE(f.host.armed);
  slow.handle();  // late
  CHECK(f.host.posted == 0);
  r.on_resumed();  // a stray event changes nothing
  CHECK(f.host.finishes == 1);
}

TEST_CASE("timer expiry, then a late resume: DEADLINE_EXCEEDED naming the stage", "[call][ordering]") {
  Fixture f;
  Controlled slow{"slow-hook", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(quick("a", f.log));
  f.add(slow.stage());
  auto& r = f.start();
  r.on_timer();
  CHECK(f.host.finishes == 1);
  CHECK(f.host.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_THAT(f.host.status.error_message(), Contains("\"slow-hook\"") && Contains("300 ms"));
  CHECK(slow.cancel_seen);
  slow.handle();
  CHECK(f.host.posted == 0);
  CHECK(f.log ==
        std::vector<std::string>{"before:a", "before:slow-hook", "undo:slow-hook:not_called:4", "undo:a:not_called"});
}

TEST_CASE("the caller's deadline caps a stage's timeout", "[call][ordering]") {
  Fixture f;
  f.state.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(slow.stage());
  auto& r = f.start();
  REQUIRE(f.host.armed);
  CHECK(f.host.timer_at <= f.state.deadline);
  CHECK(f.host.timer_at >= f.state.deadline - std::chrono::milliseconds(25));
  r.on_timer();
  CHECK(f.host.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_THAT(f.host.status.error_message(), Contains("caller's deadline") && Contains("\"slow\""));
}

TEST_CASE("a timer that fires after the resume was posted is ignored", "[call][ordering]") {
  Fixture f;
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(slow.stage());
  auto& r = f.start();
  slow.handle();
  r.on_timer();
  CHECK(f.host.finishes == 0);
  r.on_resumed();
  CHECK(f.host.delegate_calls == 1);
}

TEST_CASE("shutdown with a suspended stage: the call is cancelled and the stage told", "[call][ordering]") {
  Fixture f;
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(slow.stage());
  f.start();
  // The server's shutdown cancels every call still running after its grace.
  f.runner->on_cancelled();
  CHECK(slow.cancel_seen);
  f.runner.reset();
  slow.handle();  // the hook's thread finishes after the call is gone
  CHECK(f.host.posted == 0);

  // A runner destroyed while still suspended (no cancel delivered) tells the stage too.
  Fixture g;
  Controlled other{"other", std::chrono::milliseconds(300), {}, false, &g.log};
  g.add(other.stage());
  g.start();
  g.runner.reset();
  CHECK(other.cancel_seen);
  other.handle();
  CHECK(g.host.posted == 0);
}

TEST_CASE("a delegate answer racing a cancel decides the outcome", "[call][ordering]") {
  SECTION("the delegate committed before the cancel reached it") {
    Fixture f;
    f.add(quick("a", f.log));
    auto& r = f.start();
    r.on_cancelled();
    r.on_delegate_done(grpc::Status::OK, true);
    CHECK(r.outcome() == DelegateOutcome::kCommitted);
    CHECK(f.host.finishes == 1);
    CHECK(f.log == std::vector<std::string>{"before:a", "after:a"});
  }
  SECTION("the cancel reached the delegate: in doubt, compensated as such") {
    Fixture f;
    f.add(quick("a", f.log));
    auto& r = f.start();
    r.on_cancelled();
    r.on_delegate_done(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"), true);
    CHECK(r.outcome() == DelegateOutcome::kInDoubt);
    CHECK(f.host.status.error_code() == grpc::StatusCode::CANCELLED);
    CHECK(f.log == std::vector<std::string>{"before:a", "undo:a:in_doubt"});
  }
}

TEST_CASE("compensation receives the classification of the delegate's answer", "[call][ordering]") {
  struct Case {
    grpc::StatusCode code;
    bool reached;
    DelegateOutcome expected;
  };
  for (Case c : {Case{grpc::StatusCode::FAILED_PRECONDITION, true, DelegateOutcome::kFailed},
                 Case{grpc::StatusCode::ALREADY_EXISTS, true, DelegateOutcome::kFailed},
                 Case{grpc::StatusCode::RESOURCE_EXHAUSTED, true, DelegateOutcome::kFailed},
                 Case{grpc::StatusCode::UNAVAILABLE, false, DelegateOutcome::kFailed},
                 Case{grpc::StatusCode::UNAVAILABLE, true, DelegateOutcome::kInDoubt},
                 Case{grpc::StatusCode::DEADLINE_EXCEEDED, true, DelegateOutcome::kInDoubt},
                 Case{grpc::StatusCode::UNKNOWN, true, DelegateOutcome::kInDoubt},
                 Case{grpc::StatusCode::INTERNAL, true, DelegateOutcome::kInDoubt}}) {
    Fixture f;
    f.add(quick("a", f.log));
    auto& r = f.start();
    r.on_delegate_done(grpc::Status(c.code, "x"), c.reached);
    INFO("code " << c.code);
    CHECK(r.outcome() == c.expected);
    CHECK(f.log.back() == "undo:a:" + std::string(outcome_name(c.expected)));
  }
}

TEST_CASE("a stale resume from a step that then said done does not resume a later stage", "[call][ordering]") {
  Fixture f;
  f.add(Stage{"eager", rpc_set({Rpc::kCreateSandbox}),
              [](CallState&, google::protobuf::Message&, const Resume& r) {
                r();  // resumes, then says done anyway
                return StepResult::done();
              },
              nullptr, nullptr});
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(slow.stage());
  auto& r = f.start();
  CHECK(f.host.posted == 1);
  CHECK(r.waiting_for() == "slow");
  r.on_resumed();  // the stale post
  CHECK(r.suspended());
  CHECK(f.host.delegate_calls == 0);
  slow.handle();
  r.on_resumed();
  CHECK(f.host.delegate_calls == 1);
}

// A quick step's token is handed to the next step when nothing else holds
// it (call_runner.cc): neither a handle a done step kept nor a callback it
// left may reach a later stage's suspension.
TEST_CASE("a handle kept by a step that said done neither resumes nor cancels a later stage", "[call][ordering]") {
  Fixture f;
  Resume kept;
  bool kept_cancel_seen = false;
  f.add(Stage{"keeper", rpc_set({Rpc::kCreateSandbox}),
              [&](CallState&, google::protobuf::Message&, const Resume& r) {
                kept = r;
                r.on_cancel([&] { kept_cancel_seen = true; });
                return StepResult::done();
              },
              nullptr, nullptr});
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(slow.stage());
  auto& r = f.start();
  REQUIRE(r.waiting_for() == "slow");
  kept();  // detached: ignored
  CHECK(f.host.posted == 0);
  CHECK(r.suspended());
  r.on_cancelled();
  CHECK(slow.cancel_seen);
  CHECK_FALSE(kept_cancel_seen);
  CHECK_FALSE(kept.cancelled());
  CHECK(f.host.status.error_code() == grpc::StatusCode::CANCELLED);
}

TEST_CASE("a callback left by a step that said done never runs when a later stage is cancelled", "[call][ordering]") {
  Fixture f;
  bool quick_cancel_seen = false;
  std::string quick_progress_left;
  for (const char* name : {"first", "second"}) {
    f.add(Stage{name, rpc_set({Rpc::kCreateSandbox}),
                [&](CallState&, google::protobuf::Message&, const Resume& r) {
                  CHECK_FALSE(r.cancelled());
                  r.on_cancel([&] { quick_cancel_seen = true; });
                  r.set_progress("quick work");
                  return StepResult::done();
                },
                nullptr, nullptr});
  }
  // Suspends without a cancel callback of its own.
  Resume slow;
  f.add(Stage{"slow", rpc_set({Rpc::kCreateSandbox}),
              [&](CallState&, google::protobuf::Message&, const Resume& r) {
                slow = r;
                return StepResult::suspended(std::chrono::milliseconds(300));
              },
              nullptr, nullptr});
  auto& r = f.start();
  REQUIRE(r.waiting_for() == "slow");
  CHECK_FALSE(slow.cancelled());
  r.on_cancelled();
  CHECK(slow.cancelled());
  CHECK_FALSE(quick_cancel_seen);
  // The message names the suspended stage alone, not a quick step's progress.
  CHECK(f.host.status.error_message() == "call cancelled by the caller while stage \"slow\" was running");
}

TEST_CASE("a failing before step stops the call before the delegate and undoes in reverse", "[call][ordering]") {
  Fixture f;
  f.add(quick("a", f.log));
  f.add(quick("b", f.log, grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "b refused")));
  f.add(quick("c", f.log));
  f.start();
  CHECK(f.host.delegate_calls == 0);
  CHECK(f.host.status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(f.log == std::vector<std::string>{"before:a", "before:b", "undo:b:not_called", "undo:a:not_called"});
}

TEST_CASE("resumes from many threads racing the timer: exactly one outcome", "[call][ordering][threads]") {
  for (int round = 0; round < 200; round++) {
    Fixture f;
    Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
    f.add(slow.stage());
    auto& r = f.start();
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; i++) threads.emplace_back([&] { slow.handle(); });
    r.on_timer();
    for (auto& t : threads) t.join();
    r.on_resumed();
    CHECK(f.host.posted <= 1);
    CHECK(f.host.finishes + f.host.delegate_calls == 1);
    CHECK(slow.cancel_seen == (f.host.posted == 0));
  }
}

TEST_CASE("the RPC table: names, method paths and sandboxes", "[call][rpc]") {
  CHECK(kRpcCount == 12);
  CHECK(rpc_name(Rpc::kCreateSandbox) == "CreateSandbox");
  CHECK(rpc_info(Rpc::kWatchSandboxes).server_streaming);
  CHECK(rpc_info(Rpc::kGetSandbox).method_path == "/openshell.compute.v1.ComputeDriver/GetSandbox");
  CHECK(rpc_from_name("DeleteWorkspace") == Rpc::kDeleteWorkspace);
  CHECK_FALSE(rpc_from_name("Nope").has_value());
  // The table follows the service's own method order.
  const auto* service = v1::DriverSandbox::descriptor()->file()->FindServiceByName("ComputeDriver");
  REQUIRE(service != nullptr);
  REQUIRE(service->method_count() == static_cast<int>(kRpcCount));
  for (const auto& info : all_rpcs()) {
    CHECK(service->method(static_cast<int>(info.rpc))->name() == info.name);
  }
  v1::CreateSandboxRequest create;
  create.mutable_sandbox()->set_id("sb-1");
  CHECK(sandbox_id_of(Rpc::kCreateSandbox, create) == "sb-1");
  CHECK(sandbox_of(Rpc::kCreateSandbox, create) == create.mutable_sandbox());
  v1::StopSandboxRequest stop;
  stop.set_sandbox_id("sb-2");
  CHECK(sandbox_id_of(Rpc::kStopSandbox, stop) == "sb-2");
  CHECK(sandbox_of(Rpc::kStopSandbox, stop) == nullptr);
  v1::ListSandboxesRequest list;
  CHECK(sandbox_id_of(Rpc::kListSandboxes, list).empty());
}

TEST_CASE("finished runs after the answer for every stage whose before ran; progress names the wait",
          "[runner][ordering]") {
  Fixture f;
  std::vector<std::string> finished;
  auto with_finished = [&finished](Stage s) {
    std::string name = s.name;
    s.finished = [&finished, name](CallState&, const grpc::Status& st, DelegateOutcome o) {
      finished.push_back(name + ":" + std::to_string(st.error_code()) + ":" + std::string(outcome_name(o)));
    };
    return s;
  };
  Controlled slow{"slow", std::chrono::milliseconds(300), {}, false, &f.log};
  f.add(with_finished(quick("a", f.log)));
  f.add(with_finished(slow.stage()));
  f.add(with_finished(quick("never", f.log)));
  CallRunner& r = f.start();
  slow.handle.set_progress("hook \"x\", phase validate");
  CHECK(finished.empty());
  r.on_timer();
  CHECK(f.host.finishes == 1);
  CHECK_THAT(f.host.status.error_message(), Contains("stage \"slow\" (hook \"x\", phase validate) did not finish"));
  // "never" did not run its before step: it is not told.
  CHECK(finished == std::vector<std::string>{"a:4:not_called", "slow:4:not_called"});
}

// Both relays classify a caller that went away by this: the gRPC relay's
// delegate call ended CANCELLED or DEADLINE_EXCEEDED at the same deadline
// depending on which of two timers fired first (a flaky parity test on a
// loaded box); within the margin it is the deadline on both.
TEST_CASE("at_deadline: a caller gone within the margin of its deadline gave up at the deadline", "[call]") {
  using std::chrono::milliseconds;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + milliseconds(300);  // margin: min(300/5, 20) + 2 = 22 ms
  CHECK(CallRunner::at_deadline(deadline, start, deadline + milliseconds(5)));
  CHECK(CallRunner::at_deadline(deadline, start, deadline));
  CHECK(CallRunner::at_deadline(deadline, start, deadline - milliseconds(21)));
  CHECK_FALSE(CallRunner::at_deadline(deadline, start, deadline - milliseconds(30)));
  CHECK_FALSE(
      CallRunner::at_deadline(std::chrono::steady_clock::time_point::max(), start, start + std::chrono::hours(1)));
}
