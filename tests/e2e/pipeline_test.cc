// The suspendable pipeline through a real wrapper: a stage that suspends
// (the [testing] delay, resumed from the wrapper's Asio thread) neither
// serializes calls nor delays unrelated ones; the caller's deadline and
// cancellation reach it; shutdown does not wait for it forever.
#include "tests/support/harness.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <sstream>
#include <thread>

using namespace owrap::test;
using Catch::Contains;
using Clock = std::chrono::steady_clock;

namespace {

WrapperSpec delayed(const std::string& record, int delay_ms, int timeout_ms = 2000, std::string extra = {}) {
  WrapperSpec spec{"acme", "memory", "nested", memory_command(record)};
  spec.extra_toml = extra + "\n[testing]\ndelay_ms = " + std::to_string(delay_ms) +
                    "\ndelay_timeout_ms = " + std::to_string(timeout_ms) + "\ndelay_rpcs = [\"CreateSandbox\"]\n";
  return spec;
}

grpc::Status create(v1::ComputeDriver::Stub& stub, const std::string& id,
                    std::chrono::milliseconds deadline = std::chrono::milliseconds(0)) {
  grpc::ClientContext ctx;
  if (deadline.count() > 0) ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox(id);
  v1::CreateSandboxResponse resp;
  return stub.CreateSandbox(&ctx, req, &resp);
}
}  // namespace

// The stage suspends for 2 s (300 ms made "every GetSandbox answered before
// the first create" a race with starting 50 threads on a loaded box).
TEST_CASE("50 calls suspended for 2 s neither serialize nor delay an unrelated call", "[e2e][pipeline]") {
  TempDir dir;
  WrapperProc w(dir, delayed({}, 2000, 10000));
  auto stub = stub_for(w.socket);
  std::vector<double> idle;
  for (int i = 0; i < 20; i++) idle.push_back(get_sandbox_ms(*stub));

  // A create on a connected channel reaches the stage in about a millisecond;
  // 300 ms leaves a loaded box room, and is well inside the 2 s suspension.
  BesideSuspended r = get_sandbox_beside_creates(w.socket, *stub, 50, std::chrono::milliseconds(300), "sb-");
  std::sort(idle.begin(), idle.end());
  const auto& busy = r.busy_ms;
  const auto all_done = r.all_creates;
  std::printf("GetSandbox p50 idle %.2f ms, with 50 suspended creates %.2f ms (max %.2f ms); 50 creates in %.0f ms\n",
              idle[10], busy[10], busy.back(), std::chrono::duration<double, std::milli>(all_done).count());
  CHECK(r.all_connected);
  CHECK(r.ok == 50);
  // The unrelated calls all finished while every create was still suspended.
  CHECK(r.gets_first);
  // Queued behind the creates, a GetSandbox would wait the 2 s suspension;
  // 50 ms over the idle median is a time slice or two on a loaded box.
  CHECK(busy[10] < idle[10] + 50.0);
  // 50 x 2 s in parallel, not 100 s in a row.
  CHECK(all_done < std::chrono::seconds(10));
}

TEST_CASE("a caller deadline shorter than a suspended stage: DEADLINE_EXCEEDED naming the stage", "[e2e][pipeline]") {
  TempDir dir;
  std::string record = dir.file("record.jsonl");
  WrapperProc w(dir, delayed(record, 3000, 5000));
  auto stub = stub_for(w.socket);
  (void)get_sandbox_ms(*stub);  // connected: the 100 ms are the call's own
  auto start = Clock::now();
  grpc::Status s = create(*stub, "late", std::chrono::milliseconds(100));
  auto took = Clock::now() - start;
  CHECK(s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_THAT(s.error_message(), Contains("testing_delay"));
  // Answered at the deadline, not when the 3 s stage ends: 1.5 s is what a
  // loaded box needs at worst, and still half the stage.
  CHECK(took < std::chrono::milliseconds(1500));
  std::printf("deadline 100 ms answered after %.1f ms: %s\n", std::chrono::duration<double, std::milli>(took).count(),
              s.error_message().c_str());
  // The delegate never saw it, not even once the stage's 3 s were up.
  std::this_thread::sleep_until(start + std::chrono::milliseconds(3500));
  CHECK_FALSE(file_contains(record, "\"rpc\":\"CreateSandbox\""));
}

TEST_CASE("a stage's own timeout ends the call with DEADLINE_EXCEEDED naming it", "[e2e][pipeline]") {
  TempDir dir;
  WrapperProc w(dir, delayed({}, 5000, 200));
  auto stub = stub_for(w.socket);
  auto start = Clock::now();
  grpc::Status s = create(*stub, "slow");
  CHECK(s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_THAT(s.error_message(), Contains("\"testing_delay\" did not finish within its timeout of 200 ms"));
  // At the 200 ms timeout, not when the 5 s stage ends.
  CHECK(Clock::now() - start < std::chrono::milliseconds(2500));
}

TEST_CASE("a caller that cancels during a suspended stage: the delegate is never called", "[e2e][pipeline]") {
  TempDir dir;
  std::string record = dir.file("record.jsonl");
  WrapperProc w(dir, delayed(record, 2000, 5000));
  auto stub = stub_for(w.socket);
  (void)get_sandbox_ms(*stub);  // connected: the create reaches the stage at once
  grpc::ClientContext ctx;
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox("cancelled");
  v1::CreateSandboxResponse resp;
  auto start = Clock::now();
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ctx.TryCancel();
  });
  grpc::Status s = stub->CreateSandbox(&ctx, req, &resp);
  canceller.join();
  CHECK(s.error_code() == grpc::StatusCode::CANCELLED);
  REQUIRE(wait_for([&] { return w.proc->log().find("\"status\":\"CANCELLED\"") != std::string::npos; }));
  std::this_thread::sleep_until(start + std::chrono::milliseconds(2500));  // past the stage's end
  CHECK_FALSE(file_contains(record, "\"rpc\":\"CreateSandbox\""));
  CHECK_THAT(w.proc->log(), Contains("while stage \\\"testing_delay\\\" was running"));
}

TEST_CASE("SIGTERM with suspended calls: grace, then they are cancelled and the wrapper exits", "[e2e][pipeline]") {
  TempDir dir;
  WrapperProc w(dir, delayed({}, 60000, 60000, "shutdown_grace_ms = 300\n"));
  std::vector<std::thread> callers;
  std::atomic<int> answered{0};
  std::atomic<int> ready{0};
  for (int i = 0; i < 5; i++) {
    callers.emplace_back([&, i] {
      auto stub = stub_for(w.socket);
      (void)get_sandbox_ms(*stub);
      ready++;
      grpc::Status s = create(*stub, "stuck-" + std::to_string(i), std::chrono::milliseconds(20000));
      if (!s.ok()) answered++;
    });
  }
  CHECK(wait_for([&] { return ready == 5; }, std::chrono::seconds(30)));
  // Connected callers reach the 60 s stage within a millisecond or so.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto sent = Clock::now();
  w.proc->signal(SIGTERM);
  CHECK(w.proc->wait(std::chrono::seconds(10)) == 0);
  CHECK(Clock::now() - sent < std::chrono::seconds(5));
  for (auto& t : callers) t.join();
  CHECK(answered == 5);
  // The access log says the answers never reached the callers (logged once
  // Finish completed, with its outcome).
  size_t undelivered = 0;
  std::istringstream lines(w.proc->log());
  for (std::string line; std::getline(lines, line);) {
    if (line.find("\"message\":\"rpc\"") != std::string::npos && line.find("\"delivered\":false") != std::string::npos)
      undelivered++;
  }
  CHECK(undelivered == 5);
}
