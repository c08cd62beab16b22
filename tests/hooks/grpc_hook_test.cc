// The grpc hook transport against real LifecycleHook servers on temporary
// Unix sockets: an in-test C++ server for most cases, the Python example
// (examples/hooks/grpc/) end to end.
#include "hooks/grpc_hook.h"
#include "common/completion_tag.h"
#include "hooks.grpc.pb.h"
#include "tests/support/harness.h"

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

using namespace owrap;
using namespace owrap::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// A LifecycleHook the test steers: its manifest, how slow it answers, how
// big its reply is.
class FakeHookService final : public hookpb::LifecycleHook::Service {
 public:
  FakeHookService() {
    manifest.set_name("fake");
    manifest.add_phases("prepare");
    manifest.add_phases("validate");
    manifest.set_failure_policy("fail_closed");
    manifest.set_request_config_key("fake-key");
    manifest.set_protocol_version(kHookProtocolVersion);
  }

  grpc::Status Describe(grpc::ServerContext*, const hookpb::DescribeRequest* request,
                        hookpb::HookManifest* reply) override {
    describes++;
    std::lock_guard lock(mu);
    last_describe_hook = request->hook();
    *reply = manifest;
    return grpc::Status::OK;
  }

  grpc::Status Invoke(grpc::ServerContext* ctx, const hookpb::HookRequest* request,
                      hookpb::HookResponse* reply) override {
    invokes++;
    auto until = Clock::now() + delay;
    while (Clock::now() < until && !ctx->IsCancelled()) std::this_thread::sleep_for(5ms);
    {
      std::lock_guard lock(mu);
      requests.push_back(*request);
    }
    if (request->sandbox_id() == "deny") {
      reply->set_allowed(false);
      reply->set_reason("denied by the fake");
      reply->set_status_code("PERMISSION_DENIED");
    } else {
      reply->set_allowed(true);
      reply->set_reason("seen " + request->phase());
      (*reply->mutable_log_annotations())["phase"] = request->phase();
    }
    if (reply_padding > 0) reply->set_reason(std::string(reply_padding, 'x'));
    return grpc::Status::OK;
  }

  std::mutex mu;
  hookpb::HookManifest manifest;
  std::string last_describe_hook;
  std::vector<hookpb::HookRequest> requests;
  std::chrono::milliseconds delay{0};
  size_t reply_padding = 0;
  std::atomic<int> describes{0};
  std::atomic<int> invokes{0};
};

struct FakeHookServer {
  explicit FakeHookServer(const std::string& socket, std::function<void(FakeHookService&)> setup = {}) {
    if (setup) setup(service);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    REQUIRE(server != nullptr);
  }
  ~FakeHookServer() { stop(); }
  void stop() {
    if (!server) return;
    server->Shutdown(std::chrono::system_clock::now() + 1s);
    server->Wait();
    server.reset();
  }
  FakeHookService service;
  std::unique_ptr<grpc::Server> server;
};

// A completion queue polled like the wrapper's (proxy/completion_queues.cc):
// every tag is a CompletionTag.
struct CallerQueue {
  CallerQueue() : thread([this] { poll_tags(&cq); }) {}
  ~CallerQueue() {
    cq.Shutdown();
    thread.join();
  }
  grpc::CompletionQueue cq;
  std::thread thread;
};

// One invocation's end: counts `done` calls, keeps the first outcome and
// the thread it ran on.
struct Waiter {
  HookDone done() {
    return [this](HookOutcome o) {
      if (calls.fetch_add(1) > 0) return;
      thread = std::this_thread::get_id();
      promise.set_value(std::move(o));
    };
  }
  HookOutcome wait(std::chrono::seconds timeout = 10s) {
    REQUIRE(future.wait_for(timeout) == std::future_status::ready);
    return future.get();
  }
  std::promise<HookOutcome> promise;
  std::future<HookOutcome> future = promise.get_future();
  std::atomic<int> calls{0};
  std::thread::id thread;
};

HookSpec grpc_spec(const std::string& socket,
                   std::vector<HookPhase> phases = {HookPhase::kPrepare, HookPhase::kValidate}) {
  HookSpec spec;
  spec.name = "fake-hook";
  spec.transport = HookTransport::kGrpc;
  spec.socket = socket;
  for (HookPhase p : phases) spec.phases.set(static_cast<size_t>(p));
  spec.timeout = 2000ms;
  return spec;
}

std::shared_ptr<const hookpb::HookRequest> request_for(std::string_view phase, const std::string& sandbox = "sb-1") {
  auto r = std::make_shared<hookpb::HookRequest>();
  r->set_protocol_version(kHookProtocolVersion);
  r->set_hook("fake-hook");
  r->set_phase(std::string(phase));
  r->set_rpc("CreateSandbox");
  r->set_sandbox_id(sandbox);
  r->mutable_sandbox()->set_id(sandbox);
  return r;
}

InvokeOptions options_in(std::chrono::milliseconds within, grpc::CompletionQueue* cq = nullptr) {
  InvokeOptions o;
  o.deadline = Clock::now() + within;
  o.cq = cq;
  return o;
}

HookOutcome invoke_and_wait(GrpcHook& hook, std::string_view phase, InvokeOptions options,
                            const std::string& sandbox = "sb-1") {
  Waiter w;
  hook.invoke(request_for(phase, sandbox), options, w.done());
  return w.wait();
}

// A socket file nobody listens on: what a hook server that died leaves.
void leave_dead_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  ::close(fd);
}

void check_fails_fast(GrpcHook& hook, const std::string& socket) {
  auto start = Clock::now();
  HookOutcome out = invoke_and_wait(hook, "prepare", options_in(5000ms));
  auto took = ms_since(start);
  INFO(out.failure.error_message());
  CHECK(out.failure.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(out.failure.error_message().find("is not reachable at " + socket) != std::string::npos);
  // At once, not after the 5 s timeout (generous for a loaded CI box).
  CHECK(took < 500);
}

}  // namespace

TEST_CASE("grpc hook: Describe gives the manifest and the implemented phases", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  FakeHookServer server(socket);
  GrpcHook hook(grpc_spec(socket));
  CHECK(hook.transport() == "grpc");
  CHECK_FALSE(hook.implemented_phases().has_value());
  CHECK(hook.describe().contains("error"));
  hook.start();
  REQUIRE(wait_for([&] { return hook.described(); }, 5s));
  nlohmann::json d = hook.describe();
  CHECK(d["name"] == "fake");
  CHECK(d["phases"] == nlohmann::json::array({"prepare", "validate"}));
  CHECK(d["failure_policy"] == "fail_closed");
  CHECK(d["request_config_key"] == "fake-key");
  CHECK(d["protocol_version"] == kHookProtocolVersion);
  CHECK_FALSE(d.contains("problem"));
  REQUIRE(hook.implemented_phases().has_value());
  CHECK(phase_list(*hook.implemented_phases()) == "prepare, validate");
  CHECK_FALSE(hook.describe_problem().has_value());
  {
    std::lock_guard lock(server.service.mu);
    CHECK(server.service.last_describe_hook == "fake-hook");
  }
  CHECK(hook.describe_now(2000ms).ok());
}

TEST_CASE("grpc hook: Invoke answers pass through, on the caller's queue and on the hook's own", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  FakeHookServer server(socket);
  GrpcHook hook(grpc_spec(socket));
  hook.start();
  CallerQueue caller;

  SECTION("on the caller's completion queue: done runs on its poller, no thread hop") {
    Waiter w;
    hook.invoke(request_for("validate"), options_in(2000ms, &caller.cq), w.done());
    HookOutcome out = w.wait();
    REQUIRE(out.failure.ok());
    CHECK(w.thread == caller.thread.get_id());
    CHECK(out.response.allowed());
    CHECK(out.response.reason() == "seen validate");
    CHECK(out.response.log_annotations().at("phase") == "validate");
  }
  SECTION("on the hook's own queue when the caller has none") {
    Waiter w;
    hook.invoke(request_for("prepare"), options_in(2000ms), w.done());
    HookOutcome out = w.wait();
    REQUIRE(out.failure.ok());
    CHECK(w.thread != caller.thread.get_id());
    CHECK(w.thread != std::this_thread::get_id());
    CHECK(out.response.reason() == "seen prepare");
  }
  SECTION("a denial is an answer, not a failure") {
    HookOutcome out = invoke_and_wait(hook, "validate", options_in(2000ms, &caller.cq), "deny");
    REQUIRE(out.failure.ok());
    CHECK_FALSE(out.response.allowed());
    CHECK(out.response.reason() == "denied by the fake");
    CHECK(out.response.status_code() == "PERMISSION_DENIED");
  }
  SECTION("many at once on both queues") {
    std::vector<std::unique_ptr<Waiter>> waiters;
    for (int i = 0; i < 40; i++) {
      waiters.push_back(std::make_unique<Waiter>());
      hook.invoke(request_for("prepare", "sb-" + std::to_string(i)), options_in(5000ms, i % 2 ? &caller.cq : nullptr),
                  waiters.back()->done());
    }
    for (auto& w : waiters) CHECK(w->wait().failure.ok());
  }
  std::lock_guard lock(server.service.mu);
  REQUIRE_FALSE(server.service.requests.empty());
  CHECK(server.service.requests.front().hook() == "fake-hook");
  CHECK(server.service.requests.front().rpc() == "CreateSandbox");
}

namespace {

// The voluntary context switches of this process's thread named `name`, or
// -1 if there is none.
long switches_of_thread(const std::string& name) {
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string c;
    std::getline(comm, c);
    if (c != name) continue;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) return std::stol(line.substr(line.find(':') + 1));
    }
  }
  return -1;
}

}  // namespace

TEST_CASE("grpc hook: its own thread sleeps while invocations run on the caller's queue", "[hooks][grpc]") {
  // A thread waiting in Next on a gRPC queue polls every socket of the
  // process and is woken for the calls' bytes: the hook's own thread must
  // wait in Next only while work of its own is in flight (Describe, the
  // calls without a caller queue).
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  FakeHookServer server(socket);
  CallerQueue caller;
  GrpcHook hook(grpc_spec(socket));
  hook.start();
  REQUIRE(wait_for([&] { return hook.implemented_phases().has_value(); }, 5s));
  REQUIRE(invoke_and_wait(hook, "prepare", options_in(2000ms)).failure.ok());  // its own queue works
  std::this_thread::sleep_for(50ms);
  long before = switches_of_thread("hook:fake-hook");
  REQUIRE(before >= 0);
  for (int i = 0; i < 200; i++) {
    REQUIRE(invoke_and_wait(hook, "validate", options_in(2000ms, &caller.cq)).failure.ok());
  }
  long woken = switches_of_thread("hook:fake-hook") - before;
  CHECK(woken <= 2);  // was one or more per invocation while it polled
}

TEST_CASE("grpc hook: a hook server that is down fails at once with UNAVAILABLE", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");

  SECTION("nobody listens at the path") {
    auto spec = grpc_spec(socket);
    spec.timeout = 5000ms;
    GrpcHook hook(spec);
    hook.start();
    check_fails_fast(hook, socket);
    check_fails_fast(hook, socket);  // again, with the channel in backoff
    auto s = hook.describe_now(5000ms);
    CHECK(s.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK(hook.describe()["error"].get<std::string>().find("is not reachable at " + socket) != std::string::npos);
  }
  SECTION("a socket file whose server is gone") {
    leave_dead_socket(socket);
    auto spec = grpc_spec(socket);
    spec.timeout = 5000ms;
    GrpcHook hook(spec);
    check_fails_fast(hook, socket);
  }
  SECTION("the server answered, then went away") {
    auto spec = grpc_spec(socket);
    spec.timeout = 5000ms;
    GrpcHook hook(spec);
    auto server = std::make_unique<FakeHookServer>(socket);
    REQUIRE(invoke_and_wait(hook, "prepare", options_in(5000ms)).failure.ok());
    server.reset();
    check_fails_fast(hook, socket);
  }
}

TEST_CASE("grpc hook: a slow hook ends with DEADLINE_EXCEEDED at the deadline", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  FakeHookServer server(socket, [](FakeHookService& s) { s.delay = 5000ms; });
  CallerQueue caller;

  SECTION("the caller's deadline") {
    GrpcHook hook(grpc_spec(socket));
    auto start = Clock::now();
    HookOutcome out = invoke_and_wait(hook, "validate", options_in(500ms, &caller.cq));
    auto took = ms_since(start);
    CHECK(out.failure.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
    CHECK(out.failure.error_message() == "did not answer within 500 ms");
    CHECK(took >= 450);
    CHECK(took < 2500);
  }
  SECTION("the hook's own timeout bounds a caller without a deadline") {
    auto spec = grpc_spec(socket);
    spec.timeout = 300ms;
    GrpcHook hook(spec);
    auto start = Clock::now();
    Waiter w;
    hook.invoke(request_for("validate"), InvokeOptions{}, w.done());
    HookOutcome out = w.wait();
    CHECK(out.failure.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
    CHECK(out.failure.error_message() == "did not answer within 300 ms");
    CHECK(ms_since(start) < 2500);
  }
}

TEST_CASE("grpc hook: a cancelled invocation ends at once with CANCELLED", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  FakeHookServer server(socket, [](FakeHookService& s) { s.delay = 5000ms; });
  GrpcHook hook(grpc_spec(socket));
  CallerQueue caller;
  grpc::CompletionQueue* cq = nullptr;
  SECTION("on the hook's own queue") {}
  SECTION("on the caller's queue") {
    cq = &caller.cq;
  }

  auto options = options_in(10000ms, cq);
  Waiter w;
  hook.invoke(request_for("validate"), options, w.done());
  REQUIRE(wait_for([&] { return server.service.invokes.load() == 1; }, 5s));
  auto start = Clock::now();
  options.cancel->cancel();
  HookOutcome out = w.wait();
  CHECK(ms_since(start) < 1000);
  CHECK(out.failure.error_code() == grpc::StatusCode::CANCELLED);
  CHECK(out.failure.error_message() == "was cancelled");
  CHECK(w.calls.load() == 1);

  // Cancelled before it starts: done at once, nothing sent.
  auto pre = options_in(10000ms, cq);
  pre.cancel->cancel();
  HookOutcome out2 = invoke_and_wait(hook, "validate", pre);
  CHECK(out2.failure.error_code() == grpc::StatusCode::CANCELLED);
  CHECK(server.service.invokes.load() == 1);
}

TEST_CASE("grpc hook: unreachable at start, used once it comes up", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  GrpcHook hook(grpc_spec(socket));
  hook.start();
  // Describe keeps failing meanwhile; the hook still takes calls.
  REQUIRE(wait_for(
      [&] { return hook.describe()["error"].get<std::string>().find("not reachable") != std::string::npos; }, 5s));
  CHECK_FALSE(hook.described());
  CHECK(invoke_and_wait(hook, "prepare", options_in(2000ms)).failure.error_code() == grpc::StatusCode::UNAVAILABLE);
  std::this_thread::sleep_for(500ms);  // a few retries

  FakeHookServer server(socket);
  auto up = Clock::now();
  REQUIRE(wait_for([&] { return hook.described(); }, 15s));
  // The retry backoff is 200 ms doubling: well under its 10 s cap here.
  CHECK(ms_since(up) < 5000);
  CHECK(hook.describe()["name"] == "fake");
  HookOutcome out = invoke_and_wait(hook, "validate", options_in(2000ms));
  INFO(out.failure.error_message());
  CHECK(out.failure.ok());
  CHECK(out.response.reason() == "seen validate");
  CHECK(server.service.describes.load() == 1);  // no retries once it answered
}

TEST_CASE("grpc hook: a manifest that does not fit the configuration fails every invocation", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  CallerQueue caller;

  SECTION("a configured phase it does not implement") {
    FakeHookServer server(socket);
    GrpcHook hook(grpc_spec(socket, {HookPhase::kPrepare, HookPhase::kValidate, HookPhase::kBeforeDelete}));
    hook.start();
    REQUIRE(wait_for([&] { return hook.describe_problem().has_value(); }, 5s));
    auto problem = *hook.describe_problem();
    CHECK(problem.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK(problem.error_message().find("before_delete") != std::string::npos);
    CHECK(hook.describe()["problem"] == problem.error_message());
    HookOutcome out = invoke_and_wait(hook, "prepare", options_in(2000ms, &caller.cq));
    CHECK(out.failure.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK(out.failure.error_message().find("before_delete") != std::string::npos);
    CHECK(server.service.invokes.load() == 0);
    CHECK(hook.describe_now(2000ms).error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  }
  SECTION("another protocol version") {
    FakeHookServer server(socket, [](FakeHookService& s) { s.manifest.set_protocol_version(2); });
    GrpcHook hook(grpc_spec(socket));
    hook.start();
    REQUIRE(wait_for([&] { return hook.describe_problem().has_value(); }, 5s));
    CHECK(hook.describe_problem()->error_message().find("protocol version 2") != std::string::npos);
    HookOutcome out = invoke_and_wait(hook, "prepare", options_in(2000ms));
    CHECK(out.failure.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  }
}

TEST_CASE("grpc hook: a reply over max_reply_bytes is a failure naming the limit", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  FakeHookServer server(socket, [](FakeHookService& s) { s.reply_padding = 4096; });
  auto spec = grpc_spec(socket);
  spec.max_reply_bytes = 1024;
  GrpcHook hook(spec);
  HookOutcome out = invoke_and_wait(hook, "prepare", options_in(2000ms));
  INFO(out.failure.error_message());
  CHECK(out.failure.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(out.failure.error_message().find("max_reply_bytes (1024 bytes)") != std::string::npos);
}

TEST_CASE("grpc hook: stop() ends the calls in flight, on every queue", "[hooks][grpc]") {
  TempDir dir;
  std::string socket = dir.file("hook.sock");
  FakeHookServer server(socket, [](FakeHookService& s) { s.delay = 5000ms; });
  // The caller's queue outlives the hook: its poller hands back the tags of
  // calls the stopped hook started there.
  CallerQueue caller;
  std::vector<std::unique_ptr<Waiter>> waiters;
  {
    auto hook = std::make_unique<GrpcHook>(grpc_spec(socket));
    hook->start();
    for (int i = 0; i < 6; i++) {
      waiters.push_back(std::make_unique<Waiter>());
      hook->invoke(request_for("validate"), options_in(10000ms, i % 2 ? &caller.cq : nullptr), waiters.back()->done());
    }
    REQUIRE(wait_for([&] { return server.service.invokes.load() == 6; }, 5s));
    auto start = Clock::now();
    hook->stop();
    CHECK(ms_since(start) < 2000);
    // Every done ran before stop() returned.
    for (auto& w : waiters) {
      REQUIRE(w->calls.load() == 1);
      HookOutcome out = w->wait(0s);
      CHECK(out.failure.error_code() == grpc::StatusCode::CANCELLED);
    }
    Waiter late;
    hook->invoke(request_for("validate"), options_in(1000ms, &caller.cq), late.done());
    CHECK(late.wait(0s).failure.error_code() == grpc::StatusCode::UNAVAILABLE);
  }
  // The hook is gone; the tags still on the caller's queue come back there
  // without touching freed state, and no done runs twice.
  std::this_thread::sleep_for(300ms);
  for (auto& w : waiters) CHECK(w->calls.load() == 1);
}

TEST_CASE("grpc hook: the Python example works end to end", "[hooks][grpc][python]") {
  std::string python = system_python3();
  std::string out, err;
  if (!python_grpc_available()) {
    WARN("skipped: python3-grpcio / python3-protobuf are not importable by " + python +
         " (scripts/dev.sh installs them)");
    return;
  }
  TempDir dir;
  std::string example = std::string(OWRAP_SOURCE_DIR) + "/examples/hooks/grpc";
  REQUIRE(run_command({example + "/generate.sh", dir.file("pb2")}, &out, &err) == 0);
  std::string socket = dir.file("quota.sock");
  std::string record = dir.file("record.jsonl");
  Process proc(
      {python, example + "/quota_label_hook.py", "--socket", socket, "--pb2-dir", dir.file("pb2"), "--record", record},
      dir.file("hook.log"));
  // The hook answers Describe once it serves: no need to wait for it first.

  auto spec = grpc_spec(socket);
  spec.name = "quota";
  GrpcHook hook(spec);
  hook.start();
  bool described = wait_for([&] { return hook.described(); }, 20s);
  INFO(read_file(dir.file("hook.log")));
  REQUIRE(described);
  nlohmann::json d = hook.describe();
  CHECK(d["name"] == "quota-label");
  CHECK(d["phases"] == nlohmann::json::array({"prepare", "validate"}));
  CHECK(d["failure_policy"] == "fail_closed");
  CHECK(d["request_config_key"] == "quota");
  CHECK_FALSE(hook.describe_problem().has_value());

  CallerQueue caller;
  auto request = [](std::string_view phase, bool team) {
    auto r = std::make_shared<hookpb::HookRequest>(*request_for(phase, "py-1"));
    r->set_hook("quota");
    auto& labels = *r->mutable_sandbox()->mutable_spec()->mutable_template_()->mutable_labels();
    labels["tenant"] = "acme";
    if (team) labels["team"] = "infra";
    return r;
  };
  auto run = [&](std::shared_ptr<const hookpb::HookRequest> r) {
    Waiter w;
    hook.invoke(std::move(r), options_in(5000ms, &caller.cq), w.done());
    HookOutcome o = w.wait();
    INFO(o.failure.error_message());
    REQUIRE(o.failure.ok());
    return o.response;
  };

  hookpb::HookResponse prepared = run(request("prepare", false));
  CHECK(prepared.allowed());
  REQUIRE(prepared.patches_size() == 1);
  CHECK(prepared.patches(0).op() == "add");
  CHECK(prepared.patches(0).path() == "/spec/template/labels/example.com~1grpc-hook");
  CHECK(prepared.patches(0).value().string_value() == "seen");

  hookpb::HookResponse denied = run(request("validate", false));
  CHECK_FALSE(denied.allowed());
  CHECK(denied.reason() == "label team is required");
  CHECK(denied.status_code() == "FAILED_PRECONDITION");

  CHECK(run(request("validate", true)).allowed());

  std::vector<nlohmann::json> lines;
  std::ifstream in(record);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["phase"] == "prepare");
  CHECK(lines[0]["sandbox"]["spec"]["template"]["labels"]["tenant"] == "acme");
  CHECK(lines[2]["sandbox"]["spec"]["template"]["labels"]["team"] == "infra");
}
