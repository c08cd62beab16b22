// The hook chain end to end: a real wrapper, the memory driver as its
// delegate and real hooks (the Python grpc example; exec and builtin hooks
// in their own files) on temporary Unix sockets.
#include "support/harness.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>

using namespace owrap::test;
using Catch::Contains;
using namespace std::chrono_literals;

namespace {

const char* kToken = "eyJhbGciOi.TOKEN-e2e-hooks-secret.sig";

// The Python LifecycleHook example on `socket`, recording what it is sent.
std::unique_ptr<Process> start_python_hook(const TempDir& dir, const std::string& socket, const std::string& record) {
  std::string example = std::string(OWRAP_SOURCE_DIR) + "/examples/hooks/grpc";
  std::string out, err;
  if (!std::filesystem::exists(dir.file("pb2"))) {
    REQUIRE(run_command({example + "/generate.sh", dir.file("pb2")}, &out, &err) == 0);
  }
  auto proc =
      std::make_unique<Process>(std::vector<std::string>{system_python3(), example + "/quota_label_hook.py", "--socket",
                                                         socket, "--pb2-dir", dir.file("pb2"), "--record", record},
                                dir.file("python-hook.log"));
  // It serves LifecycleHook, not ComputeDriver: wait for the socket file.
  REQUIRE(wait_for([&] { return std::filesystem::exists(socket); }, 20s));
  return proc;
}

v1::CreateSandboxRequest create_request(const std::string& id, bool with_team = true) {
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox(id);
  req.mutable_sandbox()->mutable_spec()->set_sandbox_token(kToken);
  (*req.mutable_sandbox()->mutable_spec()->mutable_environment())["OPENSHELL_SANDBOX_TOKEN"] = kToken;
  if (!with_team) req.mutable_sandbox()->mutable_spec()->mutable_template_()->mutable_labels()->erase("team");
  return req;
}

grpc::Status create(v1::ComputeDriver::Stub& stub, const v1::CreateSandboxRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 20s);
  v1::CreateSandboxResponse resp;
  return stub.CreateSandbox(&ctx, req, &resp);
}

std::string grpc_hook_toml(const std::string& socket, const std::string& extra = "") {
  return "\n[[hooks]]\nname = \"pyhook\"\ntype = \"grpc\"\nsocket = \"" + socket +
         "\"\nphases = [\"prepare\", \"validate\"]\ntimeout_ms = 3000\n" + extra;
}

}  // namespace

TEST_CASE("a Python grpc hook shapes and judges creates end to end", "[e2e][hooks][grpc]") {
  if (!python_grpc_available()) {
    WARN("skipped: python3-grpcio is not importable");
    return;
  }
  TempDir dir;
  std::string hook_socket = dir.file("pyhook.sock");
  auto hook = start_python_hook(dir, hook_socket, dir.file("hook-record.jsonl"));
  WrapperSpec spec;
  spec.command = memory_command(dir.file("record.jsonl"));
  spec.extra_delegate_toml = grpc_hook_toml(hook_socket);
  WrapperProc wrapper(dir, spec);
  REQUIRE(wait_for_socket(wrapper.socket));
  auto stub = stub_for(wrapper.socket);

  SECTION("the prepare patch reaches the delegate; the chain is named in GetCapabilities") {
    REQUIRE(create(*stub, create_request("sb-ok")).ok());
    {
      grpc::ClientContext ctx;
      v1::GetSandboxRequest get;
      get.set_sandbox_id("sb-ok");
      v1::GetSandboxResponse got;
      REQUIRE(stub->GetSandbox(&ctx, get, &got).ok());
      CHECK(got.sandbox().spec().template_().labels().at("example.com/grpc-hook") == "seen");
    }
    grpc::ClientContext ctx;
    v1::GetCapabilitiesResponse caps;
    REQUIRE(stub->GetCapabilities(&ctx, v1::GetCapabilitiesRequest(), &caps).ok());
    CHECK_THAT(caps.driver_version(), Contains("hooks: pyhook"));
    // The token never reaches the hook nor a log line.
    REQUIRE(wait_for([&] { return file_contains(dir.file("hook-record.jsonl"), "sb-ok"); }));
    CHECK_FALSE(file_contains(dir.file("hook-record.jsonl"), "TOKEN-e2e-hooks-secret"));
    CHECK_FALSE(file_contains(wrapper.proc->log_file(), "TOKEN-e2e-hooks-secret"));
  }
  SECTION("a denial reaches the caller as FAILED_PRECONDITION naming hook and reason") {
    grpc::Status s = create(*stub, create_request("sb-no-team", false));
    CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK_THAT(s.error_message(), Contains("hook \"pyhook\" denied CreateSandbox: label team is required"));
    CHECK_FALSE(file_contains(dir.file("record.jsonl"), "sb-no-team"));
  }
}

TEST_CASE("a grpc hook unreachable at start: the wrapper serves; once it is up, calls use it", "[e2e][hooks][grpc]") {
  if (!python_grpc_available()) {
    WARN("skipped: python3-grpcio is not importable");
    return;
  }
  TempDir dir;
  std::string hook_socket = dir.file("late.sock");
  WrapperSpec spec;
  spec.command = memory_command(dir.file("record.jsonl"));
  spec.extra_delegate_toml = grpc_hook_toml(hook_socket);
  WrapperProc wrapper(dir, spec);
  REQUIRE(wait_for_socket(wrapper.socket));
  auto stub = stub_for(wrapper.socket);
  auto t0 = std::chrono::steady_clock::now();
  grpc::Status down = create(*stub, create_request("sb-early"));
  CHECK(down.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(down.error_message(), Contains("hook \"pyhook\""));
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);  // fails fast, not after the timeout
  auto hook = start_python_hook(dir, hook_socket, dir.file("hook-record.jsonl"));
  CHECK(wait_for([&] { return create(*stub, create_request("sb-late-" + std::to_string(::rand()))).ok(); }, 15s));
}
