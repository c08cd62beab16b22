// bench/pipeline: issue 8's two timing figures, printed rather than asserted
// (tests/e2e/pipeline_test.cc asserts the behaviour with a loaded box's
// margins). For each relay, over several rounds:
//  - 50 creates suspended 300 ms in a stage (the wrapper's [testing] delay)
//    while 20 unrelated GetSandbox calls run: their median against the idle
//    median, whether they all finished before the first create answered,
//    and how long the 50 creates took together;
//  - a create with a 100 ms deadline on a 300 ms stage: how long until the
//    caller had its DEADLINE_EXCEEDED, and whether the message names the
//    stage.
// Usage: bench_pipeline [rounds] (default 5).
#include "tests/support/harness.h"

#include <grpcpp/client_context.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace owrap::bench {
namespace {

using namespace owrap::test;
using Clock = std::chrono::steady_clock;

WrapperSpec delayed(const std::string& relay, int delay_ms) {
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  spec.extra_toml = "log_level = \"warn\"\nrelay = \"" + relay +
                    "\"\n[testing]\ndelay_ms = " + std::to_string(delay_ms) +
                    "\ndelay_timeout_ms = 10000\ndelay_rpcs = [\"CreateSandbox\"]\n";
  return spec;
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

grpc::Status create(v1::ComputeDriver::Stub& stub, const std::string& id, std::chrono::milliseconds deadline) {
  grpc::ClientContext ctx;
  if (deadline.count() > 0) ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox(id);
  v1::CreateSandboxResponse resp;
  return stub.CreateSandbox(&ctx, req, &resp);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct SuspendedRound {
  double idle_ms, busy_ms, all_creates_ms;
  bool gets_first;
  int ok;
};

SuspendedRound suspended_round(const std::string& socket, int round) {
  auto stub = stub_for(socket);
  std::vector<double> idle;
  for (int i = 0; i < 20; i++) idle.push_back(get_sandbox_ms(*stub));
  // 20 ms: the creates, on connected channels, reach the stage in about one.
  BesideSuspended r =
      get_sandbox_beside_creates(socket, *stub, 50, std::chrono::milliseconds(20), "r" + std::to_string(round) + "-");
  return {median(idle), median(r.busy_ms), std::chrono::duration<double, std::milli>(r.all_creates).count(),
          r.all_connected && r.gets_first, r.ok};
}

void run_relay(const std::string& relay, int rounds) {
  TempDir dir;
  std::printf("relay = \"%s\"\n", relay.c_str());
  {
    WrapperProc w(dir, delayed(relay, 300));
    std::printf("  50 creates suspended 300 ms, 20 GetSandbox meanwhile:\n");
    for (int r = 0; r < rounds; r++) {
      auto s = suspended_round(w.socket, r);
      std::printf(
          "    round %d: GetSandbox median %.2f ms idle, %.2f ms meanwhile (%+.2f); all before the first create "
          "answered: %s; 50 creates %d ok in %.0f ms\n",
          r + 1, s.idle_ms, s.busy_ms, s.busy_ms - s.idle_ms, s.gets_first ? "yes" : "NO", s.ok, s.all_creates_ms);
    }
  }
  {
    TempDir dir2;
    WrapperProc w(dir2, delayed(relay, 300));
    auto stub = stub_for(w.socket);
    (void)get_sandbox_ms(*stub);
    std::printf("  a 100 ms deadline on a 300 ms stage:\n");
    for (int r = 0; r < rounds; r++) {
      auto start = Clock::now();
      grpc::Status s = create(*stub, "late-" + std::to_string(r), std::chrono::milliseconds(100));
      const double took = ms_since(start);
      std::printf("    round %d: %s after %.1f ms: %s\n", r + 1,
                  s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? "DEADLINE_EXCEEDED" : "OTHER", took,
                  s.error_message().c_str());
      std::this_thread::sleep_for(std::chrono::milliseconds(350));  // the stage of the last one ends
    }
  }
}

}  // namespace
}  // namespace owrap::bench

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  std::printf("bench/pipeline: issue 8's suspended-stage figures, %u cores\n", std::thread::hardware_concurrency());
  for (const char* relay : {"frames", "grpc"}) owrap::bench::run_relay(relay, rounds);
  return 0;
}
