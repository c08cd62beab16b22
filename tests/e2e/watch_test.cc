// WatchSandboxes through the wrapper: order, fan-out, slow watchers, and the
// upstream watch surviving a delegate restart with a resync.
#include "tests/support/harness.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <sstream>
#include <thread>

using namespace owrap::test;
using Catch::Contains;
namespace v1 = openshell::compute::v1;

namespace {

// Reads events on its own thread until `count` arrived or the stream ends.
struct WatchReader {
  // `wait_headers`: false for a driver that sends its headers only with the
  // first event (--lazy-headers); the watch is then given a moment instead.
  WatchReader(const std::string& socket, size_t count, bool wait_headers = true) : stub(stub_for(socket)) {
    reader = stub->WatchSandboxes(&ctx, v1::WatchSandboxesRequest{});
    if (wait_headers)
      reader->WaitForInitialMetadata();
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
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
  // "snapshot:<id>", "deleted:<id>" or "platform:<id>" per event from `from` on.
  std::vector<std::string> kinds(size_t from = 0) {
    std::lock_guard<std::mutex> l(mu);
    std::vector<std::string> out;
    for (size_t i = from; i < events.size(); i++) {
      const auto& ev = events[i];
      out.push_back(ev.has_sandbox()   ? "snapshot:" + ev.sandbox().sandbox().id()
                    : ev.has_deleted() ? "deleted:" + ev.deleted().sandbox_id()
                                       : "platform:" + ev.platform_event().sandbox_id());
    }
    return out;
  }
  size_t count(const std::string& kind) {
    auto all = kinds();
    return std::count(all.begin(), all.end(), kind);
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

grpc::Status create(const std::string& socket, const std::string& id) {
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox(id);
  grpc::ClientContext c;
  v1::CreateSandboxResponse r;
  return stub_for(socket)->CreateSandbox(&c, req, &r);
}

size_t count_lines(const std::string& log, const std::string& needle) {
  size_t n = 0;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);)
    if (line.find(needle) != std::string::npos) n++;
  return n;
}

// SIGKILLs a managed delegate and waits until its successor has started.
void kill_managed_delegate(const WrapperProc& wrapper) {
  auto pids = delegate_pids(wrapper.proc->log());
  REQUIRE(pids.size() == 1);
  ::kill(pids[0], SIGKILL);
  REQUIRE(wait_for([&] { return delegate_pids(wrapper.proc->log()).size() >= 2; }));
}

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
    // The fast watcher's queue holds 8 events too: on a loaded box its
    // reader thread could fall that far behind creates made back to back,
    // and be ended as well. Kept within 4 events, it never is.
    const size_t made = 2 * static_cast<size_t>(i + 1);
    if (fast.size() + 4 < made) REQUIRE(wait_for([&] { return fast.size() + 4 >= made; }, std::chrono::seconds(30)));
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
  // Resync on the same open watch: a deleted "vanish"; "keep" is unchanged
  // since the watcher last heard of it, so no snapshot repeats it.
  REQUIRE(wait_for([&] { return watch.size() >= 5; }));
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
  CHECK(tail == std::vector<std::string>{"deleted:vanish"});
  CHECK_THAT(one.proc->log(), Contains("\"delegate exited\""));
  CHECK_THAT(one.proc->log(), Contains("killed by signal"));
  // Live events keep flowing on the same stream.
  REQUIRE(wait_for([&] { return create("later").ok(); }));
  CHECK(wait_for([&] { return watch.size() >= 7; }));
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

// Issue 7 item 1: a reply that does not parse completes with ok=false and an
// OK status; read as "no sandboxes" it reported every sandbox deleted.
TEST_CASE("a resync list that does not parse reports nothing deleted; live events flow", "[e2e][watch][resync]") {
  TempDir dir;
  std::string state = dir.file("memory.state");
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested",
                                   memory_command({}, {"--state-file", state, "--reply-garbage", "ListSandboxes"})});
  WatchReader watch(one.socket, 100);
  REQUIRE(create(one.socket, "a").ok());
  REQUIRE(create(one.socket, "b").ok());
  REQUIRE(wait_for([&] { return watch.size() == 4; }));
  kill_managed_delegate(one);
  CHECK(wait_for(
      [&] { return one.proc->log().find("sent a ListSandboxes reply that does not parse") != std::string::npos; }));
  REQUIRE(wait_for([&] { return create(one.socket, "c").ok(); }));
  CHECK(wait_for([&] { return watch.count("snapshot:c") == 1; }));
  CHECK(watch.count("deleted:a") == 0);
  CHECK(watch.count("deleted:b") == 0);
  CHECK_THAT(one.proc->log(), Contains("\"status\":\"INTERNAL\""));
}

// Issue 7 item 1: an event that does not parse on an open stream must not
// leave the upstream Finish waiting forever.
TEST_CASE("a watch event that does not parse ends the upstream attempt", "[e2e][watch][resync]") {
  TempDir dir;
  MemoryDriverProc mem(dir, "garbled", {"--reply-garbage", "WatchSandboxes"});
  WrapperSpec spec{"acme", "memory", "nested", {}};
  spec.endpoint_socket = mem.socket;
  WrapperProc one(dir, spec);
  WatchReader watch(one.socket, 100);
  CHECK(wait_for(
      [&] { return one.proc->log().find("sent a WatchSandboxes reply that does not parse") != std::string::npos; }));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  // Retried with backoff, logged once: not once per retry.
  CHECK(count_lines(one.proc->log(), "upstream watch") <= 2);
  CHECK(watch.size() == 0);
  CHECK_FALSE(watch.done);
}

// Issue 7 item 2: a failing resync list used to tear the upstream watch
// down again and again, and no event reached the watchers.
TEST_CASE("a failing resync list is retried while live events keep flowing", "[e2e][watch][resync]") {
  TempDir dir;
  std::string state = dir.file("memory.state");
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested",
                                   memory_command({}, {"--state-file", state, "--fail", "ListSandboxes=UNAVAILABLE"})});
  WatchReader watch(one.socket, 100);
  REQUIRE(create(one.socket, "a").ok());
  REQUIRE(wait_for([&] { return watch.size() == 2; }));
  kill_managed_delegate(one);
  // The upstream watch is back once its resync list has been tried.
  REQUIRE(wait_for([&] { return one.proc->log().find("resync list failed") != std::string::npos; }));
  REQUIRE(create(one.socket, "b").ok());
  CHECK(wait_for([&] { return watch.count("snapshot:b") == 1 && watch.count("platform:b") == 1; },
                 std::chrono::seconds(5)));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  REQUIRE(create(one.socket, "c").ok());
  CHECK(wait_for([&] { return watch.count("snapshot:c") == 1; }));
  std::string log = one.proc->log();
  CHECK(count_lines(log, "resync list failed") == 1);
  CHECK(count_lines(log, "upstream watch ended") == 1);
  CHECK(watch.count("deleted:a") == 0);
}

TEST_CASE("wrapper.resync_timeout_ms bounds the resync list", "[e2e][watch][resync]") {
  TempDir dir;
  std::string state = dir.file("memory.state");
  WrapperSpec spec{"acme", "memory", "nested",
                   memory_command({}, {"--state-file", state, "--delay", "ListSandboxes=20000"})};
  spec.extra_toml = "resync_timeout_ms = 300\n";
  WrapperProc one(dir, spec);
  WatchReader watch(one.socket, 100);
  REQUIRE(create(one.socket, "a").ok());
  REQUIRE(wait_for([&] { return watch.size() == 2; }));
  kill_managed_delegate(one);
  CHECK(wait_for([&] { return one.proc->log().find("\"status\":\"DEADLINE_EXCEEDED\"") != std::string::npos; },
                 std::chrono::seconds(5)));
  CHECK_THAT(one.proc->log(), Contains("resync list failed"));
  REQUIRE(wait_for([&] { return create(one.socket, "b").ok(); }));
  CHECK(wait_for([&] { return watch.count("snapshot:b") == 1; }));
}

// Issue 7 item 5: grpc-go and grpcio send a watch's headers with its first
// event. The wrapper waited for them, then resynced: the first event came
// twice, and a sandbox that vanished during a restart was reported only
// when some later event came.
TEST_CASE("lazy headers: the wrapper relays exactly the delegate's event sequence", "[e2e][watch][resync]") {
  TempDir dir;
  MemoryDriverProc mem(dir, "lazy", {"--lazy-headers"});
  WrapperSpec spec{"acme", "memory", "nested", {}};
  spec.endpoint_socket = mem.socket;
  WrapperProc one(dir, spec);
  const size_t expected = 3 * 2 + 2 + 1;
  WatchReader direct(mem.socket, 100, false);
  WatchReader through(one.socket, 100);  // the wrapper itself sends its headers at once
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  lifecycle(mem.socket, "w-");
  REQUIRE(wait_for([&] { return direct.size() == expected && through.size() >= expected; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(through.normalized() == direct.normalized());
}

TEST_CASE("lazy headers: a sandbox that vanished during a restart is reported at once", "[e2e][watch][resync]") {
  TempDir dir;
  std::string state = dir.file("memory.state");
  std::vector<std::string> flags = {"--lazy-headers", "--state-file", state};
  auto mem = std::make_unique<MemoryDriverProc>(dir, "lazy", flags);
  WrapperSpec spec{"acme", "memory", "nested", {}};
  spec.endpoint_socket = mem->socket;
  WrapperProc one(dir, spec);
  WatchReader watch(one.socket, 100);
  REQUIRE(create(one.socket, "keep").ok());
  REQUIRE(create(one.socket, "vanish").ok());
  REQUIRE(wait_for([&] { return watch.size() == 4; }));
  mem->proc->signal(SIGKILL);
  mem->proc->wait();
  {
    // While the driver is down, another one on the same state file deletes "vanish".
    MemoryDriverProc editor(dir, "editor", {"--state-file", state});
    v1::DeleteSandboxRequest del;
    del.set_sandbox_id("vanish");
    grpc::ClientContext c;
    v1::DeleteSandboxResponse r;
    REQUIRE(stub_for(editor.socket)->DeleteSandbox(&c, del, &r).ok());
    REQUIRE(r.deleted());
  }
  mem = std::make_unique<MemoryDriverProc>(dir, "lazy", flags);
  // No event happens on the restarted driver; the resync alone reports it.
  CHECK(wait_for([&] { return watch.size() >= 5; }, std::chrono::seconds(6)));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(watch.kinds(4) == std::vector<std::string>{"deleted:vanish"});
}

// Issue 7 item 6: a delegate that refuses the watch at once was retried
// every 100 ms (the backoff reset on the trailers-only answer), logging each
// time, and every retry's resync repeated the snapshots.
TEST_CASE("a delegate that refuses WatchSandboxes: backoff, few log lines, no repeated snapshots",
          "[e2e][watch][resync]") {
  TempDir dir;
  MemoryDriverProc mem(dir, "refusing", {"--fail", "WatchSandboxes=UNIMPLEMENTED"});
  REQUIRE(create(mem.socket, "a").ok());
  REQUIRE(create(mem.socket, "b").ok());
  WrapperSpec spec{"acme", "memory", "nested", {}};
  spec.endpoint_socket = mem.socket;
  WrapperProc one(dir, spec);
  WatchReader watch(one.socket, 100);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  std::string log = one.proc->log();
  CHECK(count_lines(log, "upstream watch") <= 2);
  CHECK_THAT(log, Contains("\"status\":\"UNIMPLEMENTED\""));
  CHECK(watch.count("snapshot:a") <= 1);
  CHECK(watch.count("snapshot:b") <= 1);
  CHECK_FALSE(watch.done);
}

// Issue 7 item 12: while the delegate was down, a warning every 2 s.
TEST_CASE("a delegate that is down: one log line when the watch breaks, one when it is back", "[e2e][watch][resync]") {
  TempDir dir;
  auto mem = std::make_unique<MemoryDriverProc>(dir, "ext");
  WrapperSpec spec{"acme", "memory", "nested", {}};
  spec.endpoint_socket = mem->socket;
  WrapperProc one(dir, spec);
  WatchReader watch(one.socket, 100);
  mem.reset();
  std::this_thread::sleep_for(std::chrono::seconds(6));
  CHECK(count_lines(one.proc->log(), "upstream watch ended") == 1);
  CHECK(count_lines(one.proc->log(), "upstream watch") == 2);  // with "upstream watch open"
  mem = std::make_unique<MemoryDriverProc>(dir, "ext");
  // Back once the reconnected watch has resynced; then a live event.
  REQUIRE(wait_for([&] { return one.proc->log().find("watch resynced") != std::string::npos; }));
  REQUIRE(create(one.socket, "a").ok());
  CHECK(wait_for([&] { return watch.count("snapshot:a") == 1; }));
  CHECK(wait_for([&] { return count_lines(one.proc->log(), "upstream watch re-established") == 1; }));
  CHECK(count_lines(one.proc->log(), "upstream watch") == 3);
}
