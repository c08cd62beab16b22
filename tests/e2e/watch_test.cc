// WatchSandboxes through the wrapper: order, fan-out, slow watchers, and the
// upstream watch surviving a delegate restart with a resync.
#include "tests/support/harness.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <thread>

using namespace owrap::test;
using Catch::Contains;
namespace v1 = openshell::compute::v1;

namespace {

// Reads events on its own thread until `count` arrived or the stream ends.
struct WatchReader {
  WatchReader(const std::string& socket, size_t count) : stub(stub_for(socket)) {
    reader = stub->WatchSandboxes(&ctx, v1::WatchSandboxesRequest{});
    reader->WaitForInitialMetadata();
    thread = std::thread([this, count] {
      v1::WatchSandboxesEvent ev;
      while (events.size() < count && reader->Read(&ev)) {
        std::lock_guard<std::mutex> l(mu);
        events.push_back(ev);
      }
      if (events.size() >= count) ctx.TryCancel();
      status = reader->Finish();
      done = true;
    });
  }
  ~WatchReader() {
    ctx.TryCancel();
    thread.join();
  }
  size_t size() {
    std::lock_guard<std::mutex> l(mu);
    return events.size();
  }
  // Events with wall-clock fields removed, for comparing two streams.
  std::vector<std::string> normalized() {
    std::lock_guard<std::mutex> l(mu);
    std::vector<std::string> out;
    for (auto ev : events) {
      if (ev.has_platform_event()) ev.mutable_platform_event()->mutable_event()->clear_timestamp_ms();
      if (ev.has_sandbox()) {
        for (auto& c : *ev.mutable_sandbox()->mutable_sandbox()->mutable_status()->mutable_conditions()) {
          c.clear_last_transition_time();
        }
        ev.mutable_sandbox()->mutable_sandbox()->mutable_spec()->mutable_template_()->clear_driver_config();
      }
      out.push_back(ev.ShortDebugString());
    }
    return out;
  }
  std::unique_ptr<v1::ComputeDriver::Stub> stub;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::WatchSandboxesEvent>> reader;
  std::mutex mu;
  std::vector<v1::WatchSandboxesEvent> events;
  grpc::Status status;
  std::atomic<bool> done{false};
  std::thread thread;
};

void lifecycle(const std::string& socket, const std::string& prefix) {
  auto stub = stub_for(socket);
  for (int i = 0; i < 3; i++) {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox(prefix + std::to_string(i));
    grpc::ClientContext c;
    v1::CreateSandboxResponse r;
    REQUIRE(stub->CreateSandbox(&c, req, &r).ok());
  }
  v1::StopSandboxRequest stop;
  stop.set_sandbox_id(prefix + "1");
  grpc::ClientContext c1;
  v1::StopSandboxResponse sr;
  REQUIRE(stub->StopSandbox(&c1, stop, &sr).ok());
  v1::DeleteSandboxRequest del;
  del.set_sandbox_id(prefix + "0");
  grpc::ClientContext c2;
  v1::DeleteSandboxResponse dr;
  REQUIRE(stub->DeleteSandbox(&c2, del, &dr).ok());
}

}  // namespace

TEST_CASE("watch delivers every event in order through a wrapper and a chain", "[e2e][watch]") {
  TempDir dir;
  MemoryDriverProc direct(dir, "direct");
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  WrapperSpec inner{"inner", "memory", "nested", memory_command()};
  WrapperProc chain(dir, WrapperSpec{"outer", "inner", "nested", wrapper_command(dir, inner)});
  const size_t expected = 3 * 2 + 2 + 1;  // creates (snapshot+platform), stop, delete
  WatchReader a(direct.socket, expected), b(one.socket, expected), b2(one.socket, expected), c(chain.socket, expected);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // upstream watches settle
  lifecycle(direct.socket, "w-");
  lifecycle(one.socket, "w-");
  lifecycle(chain.socket, "w-");
  REQUIRE(wait_for(
      [&] { return a.size() == expected && b.size() == expected && b2.size() == expected && c.size() == expected; }));
  auto want = a.normalized();
  CHECK(b.normalized() == want);
  CHECK(b2.normalized() == want);
  CHECK(c.normalized() == want);
  CHECK(a.events.back().deleted().sandbox_id() == "w-0");
}

TEST_CASE("a watcher that stops reading is ended; others are unaffected", "[e2e][watch]") {
  TempDir dir;
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  spec.extra_toml = "watch_queue_capacity = 8\nwatch_finish_grace_ms = 60000\n";
  WrapperProc one(dir, spec);
  const int creates = 300;
  const size_t expected = creates * 2;
  auto stub = stub_for(one.socket);
  grpc::ClientContext slow_ctx;
  auto slow = stub->WatchSandboxes(&slow_ctx, v1::WatchSandboxesRequest{});
  slow->WaitForInitialMetadata();
  WatchReader fast(one.socket, expected);
  std::string big(64 * 1024, 'x');  // fills the slow watcher's flow-control window quickly
  for (int i = 0; i < creates; i++) {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("s-" + std::to_string(i));
    (*req.mutable_sandbox()->mutable_spec()->mutable_template_()->mutable_labels())["padding"] = big;
    grpc::ClientContext c;
    v1::CreateSandboxResponse r;
    REQUIRE(stub->CreateSandbox(&c, req, &r).ok());
  }
  REQUIRE(wait_for([&] { return fast.size() == expected; }, std::chrono::seconds(30)));
  REQUIRE(wait_for([&] { return one.proc->log().find("ending a watcher that fell behind") != std::string::npos; }));
  // The slow watcher now reads: what was in flight, then its end.
  v1::WatchSandboxesEvent ev;
  size_t got = 0;
  while (slow->Read(&ev)) got++;
  grpc::Status s = slow->Finish();
  CHECK(got < expected);
  CHECK(s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(s.error_message(), Contains("watcher fell behind") && Contains("reopen the watch"));
  // And the wrapper still serves new watchers.
  WatchReader again(one.socket, 2);
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox("after");
  grpc::ClientContext c;
  v1::CreateSandboxResponse r;
  REQUIRE(stub->CreateSandbox(&c, req, &r).ok());
  CHECK(wait_for([&] { return again.size() == 2; }));
}

TEST_CASE("a delegate restart: UNAVAILABLE meanwhile, then the open watch resyncs", "[e2e][watch][delegates]") {
  TempDir dir;
  std::string state = dir.file("memory.state");
  WrapperSpec spec{"acme", "memory", "nested", memory_command({}, {"--state-file", state})};
  // Down long enough that a call in between is sure to find it down.
  spec.extra_delegate_toml = "restart_backoff_initial_ms = 1500\n";
  WrapperProc one(dir, spec);
  auto stub = stub_for(one.socket);
  WatchReader watch(one.socket, 100);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto create = [&](const std::string& id) {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox(id);
    grpc::ClientContext c;
    v1::CreateSandboxResponse r;
    return stub->CreateSandbox(&c, req, &r);
  };
  REQUIRE(create("keep").ok());
  std::filesystem::copy_file(state, dir.file("saved.state"));
  REQUIRE(create("vanish").ok());
  REQUIRE(wait_for([&] { return watch.size() == 4; }));

  auto started = delegate_pids(one.proc->log());
  pid_t first = started.empty() ? 0 : started[0];
  REQUIRE(first > 0);
  // What the restarted driver will know: only "keep".
  std::filesystem::copy_file(dir.file("saved.state"), state, std::filesystem::copy_options::overwrite_existing);
  ::kill(first, SIGKILL);
  REQUIRE(wait_for([&] { return one.proc->log().find("\"delegate exited\"") != std::string::npos; }));
  grpc::ClientContext c;
  v1::GetSandboxRequest get;
  get.set_sandbox_id("keep");
  v1::GetSandboxResponse resp;
  auto down = std::chrono::steady_clock::now();
  auto s = stub->GetSandbox(&c, get, &resp);
  CHECK(std::chrono::steady_clock::now() - down < std::chrono::seconds(2));  // fails fast, no hang
  CHECK(s.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK_THAT(s.error_message(), Contains("delegate \"memory\" is unavailable"));
  REQUIRE(wait_for([&] { return delegate_pids(one.proc->log()).size() >= 2; }));
  // Resync on the same open watch: a snapshot of "keep", a deleted "vanish".
  REQUIRE(wait_for([&] { return watch.size() >= 6; }));
  CHECK_FALSE(watch.done);
  std::vector<std::string> tail;
  {
    std::lock_guard<std::mutex> l(watch.mu);
    for (size_t i = 4; i < watch.events.size(); i++) {
      const auto& ev = watch.events[i];
      tail.push_back(ev.has_sandbox()   ? "snapshot:" + ev.sandbox().sandbox().id()
                     : ev.has_deleted() ? "deleted:" + ev.deleted().sandbox_id()
                                        : "other");
    }
  }
  CHECK(tail == std::vector<std::string>{"snapshot:keep", "deleted:vanish"});
  CHECK_THAT(one.proc->log(), Contains("\"delegate exited\""));
  CHECK_THAT(one.proc->log(), Contains("killed by signal"));
  // Live events keep flowing on the same stream.
  REQUIRE(wait_for([&] { return create("later").ok(); }));
  CHECK(wait_for([&] { return watch.size() >= 8; }));
}

TEST_CASE("calls fail fast with UNAVAILABLE naming an endpoint delegate that is down", "[e2e][delegates]") {
  TempDir dir;
  auto mem = std::make_unique<MemoryDriverProc>(dir, "ext");
  WrapperSpec spec{"acme", "memory", "nested", {}};
  spec.endpoint_socket = mem->socket;
  WrapperProc one(dir, spec);
  auto stub = stub_for(one.socket);
  grpc::ClientContext ok_ctx;
  v1::ListSandboxesResponse list;
  REQUIRE(stub->ListSandboxes(&ok_ctx, {}, &list).ok());
  mem.reset();  // SIGTERM: the driver is gone
  auto start = std::chrono::steady_clock::now();
  grpc::ClientContext c;
  auto s = stub->ListSandboxes(&c, {}, &list);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
  CHECK(s.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK_THAT(s.error_message(), Contains("delegate \"memory\" is unavailable"));
}
