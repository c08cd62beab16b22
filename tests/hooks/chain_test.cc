// The hook chain driven through the real CallRunner with scripted hooks
// (CNI's fake Exec idea: the chain is tested without forking). Each hook
// answers per phase as the test says, at once or later from its own thread.
#include "call/call_runner.h"
#include "common/secrets.h"
#include "hooks/chain_run.h"
#include "hooks/hook_chain.h"

#include <google/protobuf/text_format.h>
#include <catch2/catch.hpp>

#include <condition_variable>
#include <deque>
#include <thread>

using namespace owrap;
using Catch::Contains;
using namespace std::chrono_literals;

namespace {

// Holds a hook inside invoke() until the test opens it.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return open; });
  }
  void release() {
    std::lock_guard lock(mu);
    open = true;
    cv.notify_all();
  }
};

struct Script {
  std::chrono::milliseconds delay{0};                 // 0: answer inside invoke()
  std::shared_ptr<Gate> gate;                         // answer inside invoke(), once the gate opens
  std::optional<hookpb::HookResponse> second_answer;  // a broken hook: 50 ms later, answers again
  bool hang = false;                                  // never answer; only the deadline or a cancel ends it
  grpc::Status failure;
  hookpb::HookResponse response;
  std::optional<nlohmann::json> patch_json;  // an in-process hook's patches as JSON
};

Script allow() {
  Script s;
  s.response.set_allowed(true);
  return s;
}
Script deny(const std::string& reason, const std::string& code = "") {
  Script s;
  s.response.set_allowed(false);
  s.response.set_reason(reason);
  s.response.set_status_code(code);
  return s;
}
Script patch_label(const std::string& key, const std::string& value) {
  Script s = allow();
  auto* op = s.response.add_patches();
  op->set_op("add");
  op->set_path("/spec/template/labels/" + key);
  op->mutable_value()->set_string_value(value);
  return s;
}

struct Journal {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> events;
  std::vector<std::string> requests;  // every HookRequest, serialized
  std::vector<std::string> finished;

  void add(const std::string& e, const std::string& request) {
    std::lock_guard lock(mu);
    events.push_back(e);
    requests.push_back(request);
    cv.notify_all();
  }
  std::vector<std::string> snapshot() {
    std::lock_guard lock(mu);
    return events;
  }
  bool wait_for(size_t n, std::chrono::milliseconds within = 5s) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, within, [&] { return events.size() >= n; });
  }
};

class ScriptedHook final : public Hook {
 public:
  ScriptedHook(std::string name, Journal& journal) : Hook(std::move(name)), journal_(journal) {}
  std::map<std::string, Script> scripts;  // by phase name; missing = allow
  bool reads_owners = true;
  std::string transport() const override { return "builtin:scripted"; }
  bool reads_path_owners() const override { return reads_owners; }

  void invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options,
              HookDone done) override {
    journal_.add(name() + ":" + request->phase(), request->DebugString());
    Script s = scripts.count(request->phase()) ? scripts[request->phase()] : allow();
    if (s.gate) s.gate->wait();
    if (s.second_answer) {
      std::thread([done, again = *s.second_answer] {
        std::this_thread::sleep_for(50ms);
        done(HookOutcome::answered(again));
      }).detach();
    }
    if (s.delay.count() == 0 && !s.hang) return done(answer(s));
    auto once = std::make_shared<std::atomic<bool>>(false);
    auto shared_done = std::make_shared<HookDone>(std::move(done));
    auto finish = [once, shared_done](HookOutcome o) {
      if (!once->exchange(true)) (*shared_done)(std::move(o));
    };
    options.cancel->on_cancel([finish] { finish(HookOutcome::failed(grpc::StatusCode::CANCELLED, "cancelled")); });
    auto deadline = options.deadline;
    std::thread([s, finish, deadline, cancel = options.cancel] {
      auto ready_at = std::chrono::steady_clock::now() + s.delay;
      auto until = s.hang ? deadline : std::min(deadline, ready_at);
      while (std::chrono::steady_clock::now() < until && !cancel->cancelled()) std::this_thread::sleep_for(2ms);
      if (cancel->cancelled()) return;
      if (s.hang || std::chrono::steady_clock::now() < ready_at) {
        return finish(HookOutcome::failed(grpc::StatusCode::DEADLINE_EXCEEDED, "did not answer in time"));
      }
      finish(answer(s));
    }).detach();
  }
  void call_finished(const std::string& sandbox_id, bool committed) override {
    std::lock_guard lock(journal_.mu);
    journal_.finished.push_back(name() + ":" + (committed ? "committed" : "not"));
  }

 private:
  static HookOutcome answer(const Script& s) {
    if (!s.failure.ok()) return HookOutcome{s.failure, {}, {}};
    HookOutcome out = HookOutcome::answered(s.response);
    out.patch_json = s.patch_json;
    return out;
  }
  Journal& journal_;
};

// A host whose "completion queue" is the test thread: resumes are queued
// and run by drive(), timers checked there too.
class LoopHost final : public CallHost {
 public:
  void post_resume() override {
    std::lock_guard lock(mu);
    resumes++;
    cv.notify_all();
  }
  void arm_timer(std::chrono::steady_clock::time_point at) override { timer = at; }
  void cancel_timer() override { timer.reset(); }
  void call_delegate() override {
    delegate_calls++;
    delegate_request.CopyFrom(*request);
    runner->on_delegate_done(delegate_answer, true);
  }
  void finish(const grpc::Status& s) override {
    finished = true;
    status = s;
    finished_at = std::chrono::steady_clock::now();
  }
  // Runs the call's events until it has answered.
  void drive(std::chrono::milliseconds limit = 10s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (!finished && std::chrono::steady_clock::now() < end) {
      std::unique_lock lock(mu);
      cv.wait_for(lock, 2ms, [&] { return resumes > 0; });
      if (resumes > 0) {
        resumes--;
        lock.unlock();
        runner->on_resumed();
        continue;
      }
      lock.unlock();
      if (timer && std::chrono::steady_clock::now() >= *timer) {
        timer.reset();
        runner->on_timer();
      }
    }
  }

  std::mutex mu;
  std::condition_variable cv;
  int resumes = 0;
  std::optional<std::chrono::steady_clock::time_point> timer;
  CallRunner* runner = nullptr;
  google::protobuf::Message* request = nullptr;
  v1::CreateSandboxRequest delegate_request;
  grpc::Status delegate_answer;
  int delegate_calls = 0;
  bool finished = false;
  grpc::Status status;
  std::chrono::steady_clock::time_point finished_at;
};

bool wait_for_finished(Journal& journal, size_t n, std::chrono::milliseconds within = 5s) {
  auto end = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < end) {
    {
      std::lock_guard lock(journal.mu);
      if (journal.finished.size() >= n) return true;
    }
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

HookSpec spec(const std::string& name, std::initializer_list<HookPhase> phases) {
  HookSpec s;
  s.name = name;
  for (HookPhase p : phases) s.phases.set(static_cast<size_t>(p));
  return s;
}

const std::initializer_list<HookPhase> kCreatePhases = {HookPhase::kPrepare, HookPhase::kValidate,
                                                        HookPhase::kAfterCreate, HookPhase::kOnCreateFailed};

struct ChainFixture {
  Journal journal;
  std::vector<ConfiguredHook> hooks;
  HookChainConfig config;
  std::unique_ptr<HookChain> chain;
  std::vector<Stage> stages;

  ScriptedHook& add(HookSpec s) {
    auto hook = std::make_unique<ScriptedHook>(s.name, journal);
    ScriptedHook& ref = *hook;
    hooks.push_back(ConfiguredHook{std::move(s), std::move(hook)});
    return ref;
  }
  void build() {
    chain =
        std::make_unique<HookChain>(HookChainOptions{"acme", "memory", "driver_config.acme", config}, std::move(hooks));
    stages = chain->stages();
  }
  HookSpec& spec_of(size_t i) { return const_cast<HookSpec&>(chain->hooks()[i].spec); }
};

struct Call {
  LoopHost host;
  CallState state;
  v1::CreateSandboxRequest create;
  v1::CreateSandboxResponse create_response;
  v1::StopSandboxRequest stop;
  v1::StopSandboxResponse stop_response;
  std::vector<const Stage*> stage_ptrs;
  std::unique_ptr<CallRunner> runner;

  Call() {
    auto* sb = create.mutable_sandbox();
    sb->set_id("sb-1");
    sb->set_name("one");
    sb->mutable_spec()->set_sandbox_token("TOKEN-very-secret-123");
    (*sb->mutable_spec()->mutable_environment())["OPENSHELL_SANDBOX_TOKEN"] = "TOKEN-very-secret-123";
    sb->mutable_spec()->mutable_template_()->set_image("ghcr.io/acme/base:1");
    (*sb->mutable_spec()->mutable_template_()->mutable_labels())["team"] = "blue";
    stop.set_sandbox_id("sb-1");
  }
  grpc::Status run(ChainFixture& f, Rpc rpc = Rpc::kCreateSandbox, std::chrono::milliseconds limit = 10s) {
    start(f, rpc);
    host.drive(limit);
    return host.status;
  }
  // Starts the call without driving it: the test delivers its events.
  void start(ChainFixture& f, Rpc rpc = Rpc::kCreateSandbox) {
    state.rpc = rpc;
    state.sandbox_id = "sb-1";
    for (const auto& s : f.stages) {
      if (s.rpcs.test(static_cast<size_t>(rpc))) stage_ptrs.push_back(&s);
    }
    google::protobuf::Message* req = rpc == Rpc::kCreateSandbox ? static_cast<google::protobuf::Message*>(&create)
                                                                : static_cast<google::protobuf::Message*>(&stop);
    google::protobuf::Message* resp = rpc == Rpc::kCreateSandbox
                                          ? static_cast<google::protobuf::Message*>(&create_response)
                                          : static_cast<google::protobuf::Message*>(&stop_response);
    runner = std::make_unique<CallRunner>(host, state, stage_ptrs, *req, *resp);
    host.runner = runner.get();
    host.request = req;
    runner->start();
  }
  std::shared_ptr<ChainRun> chain_run() const { return std::static_pointer_cast<ChainRun>(state.hook_run); }
};

}  // namespace

TEST_CASE("prepare runs before validate, before-phases in order, after-phases reversed", "[chain]") {
  ChainFixture f;
  f.add(spec("a", kCreatePhases));
  Script later = allow();
  later.delay = 30ms;  // one answers from its own thread
  f.add(spec("b", kCreatePhases)).scripts["prepare"] = later;
  f.add(spec("c", kCreatePhases));
  f.build();
  Call call;
  REQUIRE(call.run(f).ok());
  REQUIRE(f.journal.wait_for(9));
  auto events = f.journal.snapshot();
  std::vector<std::string> want = {"a:prepare",  "b:prepare",      "c:prepare",      "a:validate",    "b:validate",
                                   "c:validate", "c:after_create", "b:after_create", "a:after_create"};
  CHECK(events == want);
  CHECK(call.host.delegate_calls == 1);
}

TEST_CASE("prepare patches reach the delegate; validate sees who set which path", "[chain]") {
  ChainFixture f;
  f.add(spec("stamp", kCreatePhases)).scripts["prepare"] = patch_label("stamped", "yes");
  f.add(spec("judge", kCreatePhases));
  f.build();
  Call call;
  REQUIRE(call.run(f).ok());
  CHECK(call.host.delegate_request.sandbox().spec().template_().labels().at("stamped") == "yes");
  // The secret survives the rewrite for the delegate, and no hook saw it.
  CHECK(call.host.delegate_request.sandbox().spec().sandbox_token() == "TOKEN-very-secret-123");
  f.journal.wait_for(6);
  std::lock_guard lock(f.journal.mu);
  for (const auto& r : f.journal.requests) CHECK_THAT(r, !Contains("TOKEN-very-secret"));
  bool owners_seen = false;
  for (const auto& r : f.journal.requests) {
    if (r.find("phase: \"validate\"") != std::string::npos && r.find("stamp") != std::string::npos &&
        r.find("path_owners") != std::string::npos)
      owners_seen = true;
  }
  CHECK(owners_seen);
}

TEST_CASE("a builtin that does not read path_owners is not sent them; the others are", "[chain]") {
  ChainFixture f;
  f.add(spec("stamp", kCreatePhases)).scripts["prepare"] = patch_label("stamped", "yes");
  f.add(spec("judge", kCreatePhases));
  f.add(spec("blind", kCreatePhases)).reads_owners = false;
  f.build();
  Call call;
  REQUIRE(call.run(f).ok());
  REQUIRE(f.journal.wait_for(9));
  std::lock_guard lock(f.journal.mu);
  int judged = 0, blind = 0;
  for (const auto& r : f.journal.requests) {
    if (r.find("phase: \"validate\"") == std::string::npos) continue;
    if (r.find("hook: \"judge\"") != std::string::npos) {
      judged++;
      CHECK_THAT(r, Contains("/spec/template/labels/stamped"));
    }
    if (r.find("hook: \"blind\"") != std::string::npos) {
      blind++;
      CHECK_THAT(r, !Contains("path_owners"));
    }
  }
  CHECK(judged == 1);
  CHECK(blind == 1);
}

TEST_CASE("a deny always denies; codes reach the caller the gateway lets through", "[chain]") {
  ChainFixture f;
  auto& guard = f.add(spec("guard", kCreatePhases));
  SECTION("create: FAILED_PRECONDITION with hook and reason, even under fail_open") {
    guard.scripts["validate"] = deny("image not allowed", "RESOURCE_EXHAUSTED");
    f.build();
    f.spec_of(0).failure_policy = FailurePolicy::kFailOpen;
    Call call;
    grpc::Status s = call.run(f);
    CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK_THAT(s.error_message(), Contains("hook \"guard\" denied CreateSandbox: image not allowed"));
    CHECK(call.host.delegate_calls == 0);
  }
  SECTION("create: ALREADY_EXISTS is honoured") {
    guard.scripts["prepare"] = deny("dup", "ALREADY_EXISTS");
    f.build();
    Call call;
    CHECK(call.run(f).error_code() == grpc::StatusCode::ALREADY_EXISTS);
  }
  SECTION("stop: the hook's own code is honoured") {
    f.add(spec("stopper", {HookPhase::kBeforeStop})).scripts["before_stop"] = deny("busy", "RESOURCE_EXHAUSTED");
    f.build();
    Call call;
    grpc::Status s = call.run(f, Rpc::kStopSandbox);
    CHECK(s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK_THAT(s.error_message(), Contains("hook \"stopper\" denied StopSandbox: busy"));
  }
}

TEST_CASE("failures follow the failure policy", "[chain]") {
  ChainFixture f;
  Script broken;
  broken.failure = grpc::Status(grpc::StatusCode::UNAVAILABLE, "is not reachable at /run/x.sock");
  f.add(spec("flaky", kCreatePhases)).scripts["validate"] = broken;
  f.build();
  SECTION("fail_closed refuses, naming the hook") {
    Call call;
    grpc::Status s = call.run(f);
    CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK_THAT(s.error_message(), Contains("hook \"flaky\", phase validate: is not reachable at /run/x.sock"));
    CHECK_THAT(s.error_message(), Contains("fail_closed"));
    CHECK(call.host.delegate_calls == 0);
  }
  SECTION("fail_open lets the call pass, counted") {
    f.spec_of(0).failure_policy = FailurePolicy::kFailOpen;
    Call call;
    CHECK(call.run(f).ok());
    CHECK(call.host.delegate_calls == 1);
    CHECK(f.chain->counters(0).failed_open == 1);
  }
}

TEST_CASE("a timeout under fail_closed and under fail_open", "[chain]") {
  ChainFixture f;
  Script slow;
  slow.hang = true;
  f.add(spec("slow", kCreatePhases)).scripts["validate"] = slow;
  f.build();
  f.spec_of(0).timeout = 200ms;
  SECTION("fail_closed") {
    Call call;
    auto t0 = std::chrono::steady_clock::now();
    grpc::Status s = call.run(f);
    CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK_THAT(s.error_message(), Contains("hook \"slow\""));
    CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  }
  SECTION("fail_open") {
    f.spec_of(0).failure_policy = FailurePolicy::kFailOpen;
    Call call;
    CHECK(call.run(f).ok());
    CHECK(call.host.delegate_calls == 1);
  }
}

TEST_CASE("no caller deadline, four hanging fail_open hooks, a 1 s budget: about 1 s", "[chain]") {
  ChainFixture f;
  f.config.budget = 1000ms;
  Script hang;
  hang.hang = true;
  for (int i = 0; i < 4; i++) {
    HookSpec s = spec("h" + std::to_string(i), kCreatePhases);
    s.failure_policy = FailurePolicy::kFailOpen;
    s.timeout = 5000ms;
    f.add(std::move(s)).scripts["validate"] = hang;
  }
  f.build();
  Call call;
  auto t0 = std::chrono::steady_clock::now();
  CHECK(call.run(f).ok());
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 2500ms);
  CHECK(took >= 900ms);
  CHECK(call.host.delegate_calls == 1);
}

TEST_CASE("a caller deadline of 1 s with hooks that would take 5 s: DEADLINE_EXCEEDED in about 1 s", "[chain]") {
  ChainFixture f;
  Script slow;
  slow.delay = 5000ms;
  HookSpec s = spec("slowpoke", kCreatePhases);
  s.timeout = 10000ms;
  f.add(std::move(s)).scripts["prepare"] = slow;
  f.build();
  Call call;
  call.state.deadline = std::chrono::steady_clock::now() + 1000ms;
  auto t0 = std::chrono::steady_clock::now();
  grpc::Status status = call.run(f);
  CHECK(status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_THAT(status.error_message(), Contains("slowpoke"));
  // At the 1 s deadline, not after the 5 s hook: 3 s leaves a loaded box room.
  CHECK(std::chrono::steady_clock::now() - t0 < 3000ms);
}

TEST_CASE("audit hooks never change anything", "[chain]") {
  ChainFixture f;
  Script broken;
  broken.failure = grpc::Status(grpc::StatusCode::INTERNAL, "exited with code 3");
  auto& a = f.add(spec("auditor", kCreatePhases));
  a.scripts["prepare"] = patch_label("audited", "yes");
  a.scripts["validate"] = deny("would deny");
  auto& b = f.add(spec("broken", kCreatePhases));
  b.scripts["validate"] = broken;
  f.build();
  f.spec_of(0).mode = HookMode::kAudit;
  f.spec_of(1).mode = HookMode::kAudit;
  Call call;
  CHECK(call.run(f).ok());
  CHECK(call.host.delegate_calls == 1);
  CHECK(call.host.delegate_request.sandbox().spec().template_().labels().count("audited") == 0);
  CHECK(f.chain->counters(0).audit_findings == 2);
  CHECK(f.chain->counters(1).audit_findings == 1);
}

TEST_CASE("activation by extension label and by request config", "[chain]") {
  ChainFixture f;
  HookSpec ext = spec("gpu", kCreatePhases);
  ext.when = Activation{Activation::Kind::kExtension, "gpu"};
  f.add(std::move(ext));
  HookSpec rc = spec("quota", kCreatePhases);
  rc.when = Activation{Activation::Kind::kRequestConfig, ""};
  f.add(std::move(rc));
  f.build();
  SECTION("neither") {
    Call call;
    CHECK(call.run(f).ok());
    CHECK(f.journal.snapshot().empty());
  }
  SECTION("label enabled (any of the VM driver's spellings) and a request block") {
    Call call;
    (*call.create.mutable_sandbox()
          ->mutable_spec()
          ->mutable_template_()
          ->mutable_labels())["openshell.io/extension.gpu"] = "Yes";
    (*call.state.wrapper_config.mutable_fields())["quota"].mutable_struct_value();
    CHECK(call.run(f).ok());
    auto events = f.journal.snapshot();
    CHECK(std::count(events.begin(), events.end(), "gpu:prepare") == 1);
    CHECK(std::count(events.begin(), events.end(), "quota:validate") == 1);
  }
  SECTION("a request block that is not an object names its path") {
    Call call;
    (*call.state.wrapper_config.mutable_fields())["quota"].set_string_value("x");
    grpc::Status s = call.run(f);
    CHECK(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(s.error_message(), Contains("driver_config.acme.quota: must be an object"));
  }
}

TEST_CASE("on_create_failed gets the delegate's status and its classification", "[chain]") {
  ChainFixture f;
  f.add(spec("watcher", kCreatePhases));
  f.build();
  Call call;
  call.host.delegate_answer = grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
  CHECK(call.run(f).error_code() == grpc::StatusCode::UNAVAILABLE);
  REQUIRE(f.journal.wait_for(3));
  std::lock_guard lock(f.journal.mu);
  CHECK(f.journal.events.back() == "watcher:on_create_failed");
  CHECK_THAT(f.journal.requests.back(), Contains("in_doubt"));
  CHECK_THAT(f.journal.requests.back(), Contains("UNAVAILABLE"));
  CHECK(f.journal.finished == std::vector<std::string>{"watcher:not"});
}

TEST_CASE("a cancelled caller reaches the hook that runs", "[chain]") {
  ChainFixture f;
  Script slow;
  slow.hang = true;
  f.add(spec("slow", kCreatePhases)).scripts["prepare"] = slow;
  f.build();
  Call call;
  call.state.rpc = Rpc::kCreateSandbox;
  for (const auto& s : f.stages) call.stage_ptrs.push_back(&s);
  call.runner = std::make_unique<CallRunner>(call.host, call.state, call.stage_ptrs, call.create, call.create_response);
  call.host.runner = call.runner.get();
  call.host.request = &call.create;
  call.runner->start();
  REQUIRE(f.journal.wait_for(1));
  call.runner->on_cancelled();
  CHECK(call.host.finished);
  CHECK(call.host.status.error_code() == grpc::StatusCode::CANCELLED);
  CHECK_THAT(call.host.status.error_message(), Contains("hook \"slow\", phase prepare"));
}

TEST_CASE("after_ready runs once per sandbox, again after it was deleted", "[chain]") {
  ChainFixture f;
  f.add(spec("ready", {HookPhase::kAfterReady}));
  f.build();
  v1::DriverSandbox sb;
  sb.set_id("r-1");
  sb.mutable_spec()->set_sandbox_token("TOKEN-very-secret-123");
  auto* c = sb.mutable_status()->add_conditions();
  c->set_type("Ready");
  c->set_status("False");
  f.chain->sandbox_reported(sb);  // not ready yet
  c->set_status("True");
  f.chain->sandbox_reported(sb);
  f.chain->sandbox_reported(sb);  // a resync repeats it: no second run
  REQUIRE(f.journal.wait_for(1));
  std::this_thread::sleep_for(50ms);
  CHECK(f.journal.snapshot() == std::vector<std::string>{"ready:after_ready"});
  f.chain->sandbox_deleted("r-1");
  f.chain->sandbox_reported(sb);
  REQUIRE(f.journal.wait_for(2));
  std::lock_guard lock(f.journal.mu);
  for (const auto& r : f.journal.requests) CHECK_THAT(r, !Contains("TOKEN-very-secret"));
}

TEST_CASE("a full after-phase queue drops jobs and counts them; answers never wait", "[chain]") {
  ChainFixture f;
  f.config.after_queue_capacity = 1;
  f.config.after_concurrency = 1;
  Script slow = allow();
  // Long enough that the first job still runs while all 4 calls are made
  // on a loaded box (300 ms was not: a dropped job less).
  slow.delay = 3000ms;
  f.add(spec("observer", kCreatePhases)).scripts["after_create"] = slow;
  f.build();
  for (int i = 0; i < 4; i++) {
    Call call;
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(call.run(f).ok());
    CHECK(std::chrono::steady_clock::now() - t0 < 1000ms);  // the 3 s observer never delays the answer
  }
  // One runs, one waits, two are dropped.
  CHECK(f.chain->after_queue().dropped() == 2);
  f.chain->stop();
}

TEST_CASE("call_finished reaches every hook that ran, for a denied call too", "[chain]") {
  ChainFixture f;
  f.add(spec("first", kCreatePhases));
  f.add(spec("guard", kCreatePhases)).scripts["validate"] = deny("no");
  f.add(spec("never", kCreatePhases));
  f.build();
  Call call;
  CHECK(call.run(f).error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  std::lock_guard lock(f.journal.mu);
  std::vector<std::string> want = {"first:not", "guard:not", "never:not"};
  // "never" ran its prepare before guard's validate denied.
  CHECK(f.journal.finished == want);
}

TEST_CASE("a refused patch set fails the hook by its policy; the delegate is not called", "[chain]") {
  ChainFixture f;
  Script bad = allow();
  auto* op = bad.response.add_patches();
  op->set_op("replace");
  op->set_path("/id");
  op->mutable_value()->set_string_value("hijacked");
  f.add(spec("sneaky", kCreatePhases)).scripts["prepare"] = bad;
  f.build();
  SECTION("fail_closed: refused naming hook and path") {
    Call call;
    grpc::Status s = call.run(f);
    CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK_THAT(s.error_message(), Contains("hook \"sneaky\""));
    CHECK_THAT(s.error_message(), Contains("/id"));
    CHECK(call.host.delegate_calls == 0);
  }
  SECTION("fail_open: the call goes on without the patches") {
    f.spec_of(0).failure_policy = FailurePolicy::kFailOpen;
    Call call;
    CHECK(call.run(f).ok());
    CHECK(call.host.delegate_request.sandbox().id() == "sb-1");
  }
}

TEST_CASE("a call that gives up while a hook answers on the run's thread: nothing is applied after it",
          "[chain][race]") {
  ChainFixture f;
  Script first = allow();
  first.delay = 20ms;  // the run goes on from this hook's thread
  f.add(spec("first", kCreatePhases)).scripts["prepare"] = first;
  Script held = patch_label("late", "yes");
  held.gate = std::make_shared<Gate>();
  f.add(spec("held", kCreatePhases)).scripts["prepare"] = held;
  f.build();
  Call call;
  call.start(f);
  REQUIRE(f.journal.wait_for(2));  // "held" is inside invoke(), on first's thread
  call.runner->on_cancelled();
  REQUIRE(call.host.finished);
  CHECK(call.host.status.error_code() == grpc::StatusCode::CANCELLED);
  auto run = call.chain_run();
  REQUIRE(run);
  // The call ended: from now on the call's thread may read the plan (the
  // after-phases are built from it), so nobody may change it any more.
  held.gate->release();
  REQUIRE(wait_for_finished(f.journal, 2));
  CHECK(run->status().error_code() == grpc::StatusCode::CANCELLED);  // under the run's lock: held's answer is done
  CHECK(run->plan()->changes().empty());
  CHECK(run->status().error_code() == grpc::StatusCode::CANCELLED);
  CHECK(call.host.delegate_calls == 0);
}

TEST_CASE("on_create_failed never carries a secret the delegate echoed in its error", "[chain][secrets]") {
  ChainFixture f;
  f.add(spec("watcher", kCreatePhases));
  f.build();
  Call call;
  call.state.secrets = collect_secrets(call.create);
  call.host.delegate_answer =
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sandbox_token TOKEN-very-secret-123 is not accepted");
  CHECK(call.run(f).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  REQUIRE(f.journal.wait_for(3));
  std::lock_guard lock(f.journal.mu);
  REQUIRE(f.journal.events.back() == "watcher:on_create_failed");
  CHECK_THAT(f.journal.requests.back(), Contains("is not accepted"));
  for (const auto& r : f.journal.requests) CHECK_THAT(r, !Contains("TOKEN-very-secret"));
}

TEST_CASE("after-phase requests say how long the hook has and carry the caller's traceparent", "[chain]") {
  ChainFixture f;
  f.add(spec("observer", kCreatePhases));
  f.build();
  f.spec_of(0).timeout = 1500ms;
  Call call;
  call.state.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  REQUIRE(call.run(f).ok());
  REQUIRE(f.journal.wait_for(3));
  std::lock_guard lock(f.journal.mu);
  REQUIRE(f.journal.events.back() == "observer:after_create");
  hookpb::HookRequest after;
  REQUIRE(google::protobuf::TextFormat::ParseFromString(f.journal.requests.back(), &after));
  CHECK(after.deadline_ms() > 1000);
  CHECK(after.deadline_ms() <= 1500);
  CHECK(after.traceparent() == call.state.traceparent);
}

TEST_CASE("stop: a failed hook's CANCELLED is not passed on; fail_closed refuses as documented", "[chain]") {
  ChainFixture f;
  Script stopping;
  stopping.failure = grpc::Status(grpc::StatusCode::CANCELLED, "the wrapper is stopping");
  f.add(spec("stopper", {HookPhase::kBeforeStop})).scripts["before_stop"] = stopping;
  f.build();
  Call call;
  grpc::Status s = call.run(f, Rpc::kStopSandbox);
  CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(s.error_message(), Contains("hook \"stopper\", phase before_stop: the wrapper is stopping"));
}

TEST_CASE("a hook that answers twice never answers for the hook after it", "[chain]") {
  ChainFixture f;
  Script twice = allow();
  twice.second_answer = deny("second answer").response;
  f.add(spec("twice", kCreatePhases)).scripts["prepare"] = twice;
  Script slow = allow();
  slow.delay = 600ms;  // still running when the second answer comes
  f.add(spec("slow", kCreatePhases)).scripts["prepare"] = slow;
  f.build();
  Call call;
  grpc::Status s = call.run(f);
  CHECK(s.ok());
  CHECK_THAT(s.error_message(), !Contains("second answer"));
  CHECK(call.host.delegate_calls == 1);
}

TEST_CASE("an audit hook never uses up the budget of the hooks that enforce", "[chain]") {
  ChainFixture f;
  f.config.budget = 300ms;
  Script slow;
  slow.hang = true;
  HookSpec audit = spec("auditor", kCreatePhases);
  audit.mode = HookMode::kAudit;
  audit.timeout = 500ms;
  f.add(std::move(audit)).scripts["prepare"] = slow;
  f.add(spec("enforcer", kCreatePhases));
  f.build();
  Call call;
  CHECK(call.run(f).ok());
  CHECK(call.host.delegate_calls == 1);
  CHECK(f.chain->counters(1).failures == 0);
}

TEST_CASE("activation is judged on the request as sent, for after-phases too", "[chain]") {
  ChainFixture f;
  f.add(spec("labeller", kCreatePhases)).scripts["prepare"] = patch_label("openshell.io~1extension.gpu", "on");
  HookSpec ext = spec("gpu", kCreatePhases);
  ext.when = Activation{Activation::Kind::kExtension, "gpu"};
  f.add(std::move(ext));
  f.build();
  Call call;
  REQUIRE(call.run(f).ok());
  REQUIRE(f.journal.wait_for(3));  // labeller: prepare, validate, after_create
  std::this_thread::sleep_for(100ms);
  auto events = f.journal.snapshot();
  CHECK(std::count_if(events.begin(), events.end(), [](const std::string& e) { return e.rfind("gpu:", 0) == 0; }) == 0);
}

// Requests lend the plan's view and the static config instead of copying
// them: a request a hook keeps must still show what that hook was shown,
// after later hooks patched the plan and after the call ended.
class KeepingHook final : public Hook {
 public:
  explicit KeepingHook(std::string name) : Hook(std::move(name)) {}
  std::string transport() const override { return "builtin:keeping"; }
  void invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions&, HookDone done) override {
    {
      std::lock_guard lock(mu_);
      kept_.push_back(request);
    }
    hookpb::HookResponse response;
    response.set_allowed(true);
    if (request->phase() == "prepare") {
      auto* op = response.add_patches();
      op->set_op("add");
      op->set_path("/spec/template/labels/" + name());
      op->mutable_value()->set_string_value("set");
    }
    done(HookOutcome::answered(response));
  }
  // The requests kept so far, once there are `n` (after-phases run on the
  // after queue's thread).
  std::vector<std::shared_ptr<const hookpb::HookRequest>> kept(size_t n) {
    for (auto end = std::chrono::steady_clock::now() + 5s; std::chrono::steady_clock::now() < end;) {
      {
        std::lock_guard lock(mu_);
        if (kept_.size() >= n) return kept_;
      }
      std::this_thread::sleep_for(2ms);
    }
    std::lock_guard lock(mu_);
    return kept_;
  }

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<const hookpb::HookRequest>> kept_;
};

TEST_CASE("a request a hook keeps shows what it was shown, after later patches and after the call", "[chain]") {
  ChainFixture f;
  std::vector<KeepingHook*> keepers;
  for (const char* name : {"first", "second"}) {
    HookSpec s = spec(name, kCreatePhases);
    (*s.config.mutable_fields())["pool"].set_string_value(std::string("pool-of-") + name);
    auto hook = std::make_unique<KeepingHook>(name);
    keepers.push_back(hook.get());
    f.hooks.push_back(ConfiguredHook{std::move(s), std::move(hook)});
  }
  f.build();
  {
    Call call;
    REQUIRE(call.run(f).ok());
    REQUIRE(call.host.delegate_request.sandbox().spec().template_().labels().count("second") == 1);
  }  // the call, its run and its plan are gone
  auto first = keepers[0]->kept(3), second = keepers[1]->kept(3);
  REQUIRE(first.size() == 3);
  REQUIRE(second.size() == 3);
  auto labels = [](const hookpb::HookRequest& r) { return r.sandbox().spec().template_().labels(); };
  const auto& first_prepare = *first[0];
  const auto& second_prepare = *second[0];
  const auto& first_validate = *first[1];
  CHECK(first_prepare.phase() == "prepare");
  CHECK(labels(first_prepare).count("first") == 0);  // shown before its own patch
  CHECK(labels(second_prepare).count("first") == 1);
  CHECK(labels(second_prepare).count("second") == 0);
  CHECK(first_validate.phase() == "validate");
  CHECK(labels(first_validate).count("second") == 1);
  CHECK(first_prepare.sandbox().spec().sandbox_token().empty());
  CHECK(first_prepare.config().fields().at("pool").string_value() == "pool-of-first");
  CHECK(second_prepare.config().fields().at("pool").string_value() == "pool-of-second");
  CHECK(second[2]->phase() == "after_create");
  CHECK(labels(*second[2]).count("second") == 1);
}

TEST_CASE("a hook's patches as JSON: both forms at once, or not an array of operations, fail the hook",
          "[chain][review]") {
  ChainFixture f;
  Script both = patch_label("from_response", "r");
  both.patch_json =
      nlohmann::json::array({{{"op", "add"}, {"path", "/spec/template/labels/from_json"}, {"value", "j"}}});
  Script empty_json = patch_label("from_response", "r");
  empty_json.patch_json = nlohmann::json::array();
  Script object = allow();
  object.patch_json = nlohmann::json{{"op", "add"}, {"path", "/spec/template/labels/x"}, {"value", "y"}};
  Script numbers = allow();
  numbers.patch_json = nlohmann::json::array({1, 2});
  Script text = allow();
  text.patch_json = "add";
  Script json_only = allow();
  json_only.patch_json =
      nlohmann::json::array({{{"op", "add"}, {"path", "/spec/template/labels/from_json"}, {"value", "j"}}});
  auto [script, refused] = GENERATE_COPY(table<Script, bool>(
      {{both, true}, {empty_json, true}, {object, true}, {numbers, true}, {text, true}, {json_only, false}}));
  f.add(spec("builtin", kCreatePhases)).scripts["prepare"] = script;
  f.build();
  Call call;
  grpc::Status s = call.run(f);
  if (refused) {
    CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK_THAT(s.error_message(), Contains("hook \"builtin\""));
    CHECK(call.host.delegate_calls == 0);
  } else {
    REQUIRE(s.ok());
    CHECK(call.host.delegate_request.sandbox().spec().template_().labels().at("from_json") == "j");
  }
}
