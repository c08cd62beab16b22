// The frame relay (relay = "frames", the default) against the gRPC relay
// (relay = "grpc") and against hostile peers: the same answers for the same
// calls; garbage on the socket; callers that cancel or run out of time
// while the delegate is slow; a delegate killed mid-call and started again;
// replies larger than the flow-control windows.
#include "tests/support/harness.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

using namespace owrap::test;
using Catch::Contains;
namespace v1 = openshell::compute::v1;

namespace {

WrapperSpec endpoint_spec(const std::string& name, const std::string& socket, const std::string& relay) {
  WrapperSpec spec{name, "memory", "nested", {}};
  spec.endpoint_socket = socket;
  spec.extra_toml = "relay = \"" + relay + "\"\n";
  return spec;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// One call's answer, as comparable text: code, message (the wrapper's name
// made neutral), details, and the custom metadata keys and values.
std::string answer_of(const grpc::Status& s, const grpc::ClientContext& ctx, const std::string& wrapper) {
  std::string out = std::to_string(s.error_code()) + "|" + replace_all(s.error_message(), wrapper, "W") + "|" +
                    std::to_string(s.error_details().size());
  for (const auto* md : {&ctx.GetServerInitialMetadata(), &ctx.GetServerTrailingMetadata()}) {
    out += md == &ctx.GetServerInitialMetadata() ? "|initial:" : "|trailing:";
    for (const auto& [k, v] : *md) {
      std::string key(k.data(), k.size());
      if (key.rfind("x-", 0) == 0) out += key + "=" + std::string(v.data(), v.size()) + ",";
    }
  }
  return out;
}

std::vector<std::string> battery(const std::string& socket, const std::string& wrapper) {
  auto stub = stub_for(socket);
  std::vector<std::string> out;
  auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(10); };
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("same-" + wrapper);
    req.mutable_sandbox()->set_id("same");  // the second wrapper's create meets the first one's
    req.mutable_sandbox()->mutable_spec()->set_sandbox_token("tok-PARITY-1");
    v1::CreateSandboxResponse resp;
    out.push_back("create " + answer_of(stub->CreateSandbox(&ctx, req, &resp), ctx, wrapper));
  }
  for (const char* id : {"same", "nobody"}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    ctx.AddMetadata("x-trace-me", "1");
    v1::GetSandboxRequest req;
    req.set_sandbox_id(id);
    v1::GetSandboxResponse resp;
    grpc::Status s = stub->GetSandbox(&ctx, req, &resp);
    out.push_back(std::string("get ") + id + " " + answer_of(s, ctx, wrapper) + " " + resp.sandbox().id());
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    v1::ListSandboxesResponse resp;
    out.push_back("list " + answer_of(stub->ListSandboxes(&ctx, v1::ListSandboxesRequest{}, &resp), ctx, wrapper));
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    v1::StopSandboxRequest req;
    req.set_sandbox_id("same");
    v1::StopSandboxResponse resp;
    out.push_back("stop " + answer_of(stub->StopSandbox(&ctx, req, &resp), ctx, wrapper));
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    v1::GetCapabilitiesResponse resp;
    grpc::Status s = stub->GetCapabilities(&ctx, v1::GetCapabilitiesRequest{}, &resp);
    out.push_back("caps " + answer_of(s, ctx, wrapper) + " " + replace_all(resp.driver_name(), wrapper, "W"));
  }
  grpc::Status unknown = generic_unary(socket, "/openshell.compute.v1.ComputeDriver/NoSuchMethod", "");
  out.push_back("unknown " + std::to_string(unknown.error_code()));
  grpc::Status garbled = generic_unary(socket, "/openshell.compute.v1.ComputeDriver/GetSandbox", "\xff\xff\xff");
  out.push_back("garbled " + std::to_string(garbled.error_code()) + " " + garbled.error_message());
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    v1::DeleteSandboxRequest req;
    req.set_sandbox_id("same");
    v1::DeleteSandboxResponse resp;
    out.push_back("delete " + answer_of(stub->DeleteSandbox(&ctx, req, &resp), ctx, wrapper));
  }
  return out;
}

size_t open_fds(pid_t pid) {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) n++;
  return n;
}

int connect_raw(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

bool get_answers(const std::string& socket, std::chrono::seconds within = std::chrono::seconds(5)) {
  auto stub = stub_for(socket);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + within);
  v1::GetSandboxRequest req;
  req.set_sandbox_id("anyone");
  v1::GetSandboxResponse resp;
  grpc::Status s = stub->GetSandbox(&ctx, req, &resp);
  return s.error_code() == grpc::StatusCode::NOT_FOUND || s.ok();
}

}  // namespace

TEST_CASE("the frame relay answers every call as the gRPC relay does", "[e2e][relay]") {
  TempDir dir;
  MemoryDriverProc memory(
      dir, "memory", {"--reply-garbage", "ListSandboxes", "--fail", "StopSandbox=FAILED_PRECONDITION", "--echo-token"});
  WrapperProc frames(dir, endpoint_spec("frames", memory.socket, "frames"));
  WrapperProc grpc(dir, endpoint_spec("grpcrelay", memory.socket, "grpc"));
  std::vector<std::string> a = battery(frames.socket, "frames");
  std::vector<std::string> b = battery(grpc.socket, "grpcrelay");
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); i++) {
    INFO(i);
    CHECK(a[i] == b[i]);
  }
  // The battery covers what it claims: a success, a refusal with details,
  // a reply that does not parse, a request that does not parse.
  CHECK_THAT(a[1], Contains("0|") && Contains(" same"));
  CHECK_THAT(a[2], Contains("5|"));
  CHECK_THAT(a[3], Contains("does not parse as"));
  CHECK_THAT(a[4], Contains("9|"));
  CHECK_THAT(a[7], Contains("the request does not parse as openshell.compute.v1.GetSandboxRequest"));
  CHECK_THAT(frames.proc->log(), !Contains("tok-PARITY-1"));
}

TEST_CASE("garbage, half prefaces and idle connections on the socket do not stop the frame relay", "[e2e][relay]") {
  TempDir dir;
  MemoryDriverProc memory(dir, "memory");
  WrapperProc w(dir, endpoint_spec("acme", memory.socket, "frames"));
  const size_t fds_before = open_fds(w.proc->pid());
  std::vector<int> idle;
  for (int round = 0; round < 20; round++) {
    int garbage = connect_raw(w.socket);
    std::string junk(4096, static_cast<char>(round * 37));
    (void)!::write(garbage, junk.data(), junk.size());
    ::close(garbage);
    int half = connect_raw(w.socket);
    (void)!::write(half, "PRI * HTTP/2.0\r\n", 16);
    ::close(half);
    int preface_then_junk = connect_raw(w.socket);
    const std::string bad =
        std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + "\x00\x00\x04\x99\x00\x00\x00\x00\x01zzzz";
    (void)!::write(preface_then_junk, bad.data(), bad.size());
    ::close(preface_then_junk);
    if (round % 5 == 0) {
      int fd = connect_raw(w.socket);
      (void)!::write(fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
      idle.push_back(fd);
    }
  }
  CHECK(get_answers(w.socket));
  CHECK(w.proc->running());
  for (int fd : idle) ::close(fd);
  // Every connection the garbage opened is gone again.
  CHECK(wait_for([&] { return open_fds(w.proc->pid()) <= fds_before + 1; }, std::chrono::seconds(5)));
}

TEST_CASE("callers that give up while the delegate is slow: answered in time, delegate streams reset, nothing kept",
          "[e2e][relay]") {
  TempDir dir;
  MemoryDriverProc memory(dir, "memory", {"--delay", "GetSandbox=1500"});
  WrapperProc w(dir, endpoint_spec("acme", memory.socket, "frames"));
  auto stub = stub_for(w.socket);
  REQUIRE(get_answers(w.socket, std::chrono::seconds(10)));  // the delegate connection is made
  const size_t fds_before = open_fds(w.proc->pid());

  // 30 callers with a 200 ms deadline, 30 that cancel after 100 ms.
  std::vector<std::future<std::pair<grpc::StatusCode, double>>> calls;
  for (int i = 0; i < 60; i++) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      grpc::ClientContext ctx;
      if (i % 2 == 0) ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
      std::thread canceller;
      if (i % 2 == 1) {
        canceller = std::thread([&ctx] {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          ctx.TryCancel();
        });
      }
      v1::GetSandboxRequest req;
      req.set_sandbox_id("slow-" + std::to_string(i));
      v1::GetSandboxResponse resp;
      auto start = std::chrono::steady_clock::now();
      grpc::Status s = stub->GetSandbox(&ctx, req, &resp);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (canceller.joinable()) canceller.join();
      return std::make_pair(s.error_code(), ms);
    }));
  }
  // Meanwhile an RPC the delegate answers at once is not held up.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListSandboxesResponse resp;
    CHECK(stub->ListSandboxes(&ctx, v1::ListSandboxesRequest{}, &resp).ok());
  }
  for (size_t i = 0; i < calls.size(); i++) {
    auto [code, ms] = calls[i].get();
    INFO("call " << i << " took " << ms << " ms");
    CHECK(code == (i % 2 == 0 ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED));
    CHECK(ms < 1200);  // not the delegate's 1500 ms
  }
  // The wrapper let go of every call: the access log has a line for each
  // (logged once its stream closed), and no descriptor is left behind.
  CHECK(wait_for(
      [&] {
        std::string log = w.proc->log();
        size_t lines = 0;
        for (size_t at = log.find("\"rpc\":\"GetSandbox\""); at != std::string::npos;
             at = log.find("\"rpc\":\"GetSandbox\"", at + 1)) {
          lines++;
        }
        return lines >= 61;
      },
      std::chrono::seconds(5)));
  CHECK(open_fds(w.proc->pid()) <= fds_before + 1);
  // The delegate's streams were reset: once its delays end, nothing more
  // is waiting on the wrapper's connection, and it still serves.
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));
  CHECK(get_answers(w.socket));
}

TEST_CASE("a delegate killed mid-call: UNAVAILABLE naming it, and the relay reconnects to its successor",
          "[e2e][relay]") {
  TempDir dir;
  auto memory =
      std::make_unique<MemoryDriverProc>(dir, "memory", std::vector<std::string>{"--delay", "GetSandbox=3000"});
  WrapperProc w(dir, endpoint_spec("acme", memory->socket, "frames"));
  auto stub = stub_for(w.socket);
  auto in_flight = std::async(std::launch::async, [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetSandboxRequest req;
    req.set_sandbox_id("x");
    v1::GetSandboxResponse resp;
    return stub->GetSandbox(&ctx, req, &resp);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  memory->proc->signal(SIGKILL);
  REQUIRE(in_flight.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  grpc::Status s = in_flight.get();
  CHECK(s.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK_THAT(s.error_message(), Contains("delegate \"memory\" is unavailable"));
  // Nobody on the socket: refused at once, named.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ListSandboxesResponse resp;
    grpc::Status down = stub->ListSandboxes(&ctx, v1::ListSandboxesRequest{}, &resp);
    CHECK(down.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK_THAT(down.error_message(), Contains("delegate \"memory\" is unavailable"));
  }
  memory->proc->wait();
  memory = std::make_unique<MemoryDriverProc>(dir, "memory");
  CHECK(wait_for([&] { return get_answers(w.socket, std::chrono::seconds(2)); }, std::chrono::seconds(10)));
}

TEST_CASE("replies larger than the flow-control windows arrive whole, in both relays", "[e2e][relay]") {
  TempDir dir;
  MemoryDriverProc memory(dir, "memory");
  WrapperProc frames(dir, endpoint_spec("frames", memory.socket, "frames"));
  WrapperProc grpc(dir, endpoint_spec("grpcrelay", memory.socket, "grpc"));
  auto direct = stub_for(memory.socket);
  // 40 sandboxes with a 512 KiB label each: a list of about 20 MiB, past
  // a stream's window (1 MiB) and the connection's (16 MiB).
  const std::string big(512 * 1024, 'x');
  const int kBig = std::getenv("OWRAP_BIG") ? std::atoi(std::getenv("OWRAP_BIG")) : 40;
  for (int i = 0; i < kBig; i++) {
    grpc::ClientContext ctx;
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("big-" + std::to_string(i));
    (*req.mutable_sandbox()->mutable_spec()->mutable_template_()->mutable_labels())["blob"] = big;
    v1::CreateSandboxResponse resp;
    REQUIRE(direct->CreateSandbox(&ctx, req, &resp).ok());
  }
  for (const std::string* socket : {&frames.socket, &grpc.socket}) {
    INFO(*socket);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
    auto stub = v1::ComputeDriver::NewStub(
        grpc::CreateCustomChannel("unix:" + *socket, grpc::InsecureChannelCredentials(), args));
    // Four at once on one channel: their windows interleave.
    std::vector<std::future<size_t>> lists;
    const int kLists = std::getenv("OWRAP_LISTS") ? std::atoi(std::getenv("OWRAP_LISTS")) : 4;
    for (int i = 0; i < kLists; i++) {
      lists.push_back(std::async(std::launch::async, [&stub] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        v1::ListSandboxesResponse resp;
        grpc::Status s = stub->ListSandboxes(&ctx, v1::ListSandboxesRequest{}, &resp);
        if (!s.ok()) {
          UNSCOPED_INFO(s.error_message());
          return size_t{0};
        }
        size_t whole = 0;
        for (const auto& sb : resp.sandboxes()) {
          auto it = sb.spec().template_().labels().find("blob");
          if (it != sb.spec().template_().labels().end() && it->second.size() == 512 * 1024) whole++;
        }
        return whole;
      }));
    }
    for (auto& l : lists) CHECK(l.get() == 40);
  }
}
