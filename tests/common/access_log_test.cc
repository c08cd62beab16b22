// The access log, end to end: unary and unknown-method calls write the same
// line (same fields, same level rules), and the last lines of a process that
// exits normally are never lost to the background log writer.
#include "support/harness.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <condition_variable>
#include <csignal>
#include <mutex>
#include <set>
#include <sstream>

using namespace owrap::test;

namespace {

std::vector<nlohmann::json> json_lines(const std::string& log) {
  std::vector<nlohmann::json> out;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

std::vector<nlohmann::json> access_lines(const std::string& log, const std::string& rpc) {
  std::vector<nlohmann::json> out;
  for (auto& j : json_lines(log)) {
    if (j.value("message", "") == "rpc" && j.value("rpc", "") == rpc) out.push_back(j);
  }
  return out;
}

std::set<std::string> keys_of(const nlohmann::json& j) {
  std::set<std::string> out;
  for (auto& [k, v] : j.items()) out.insert(k);
  return out;
}

}  // namespace

TEST_CASE("unary and unknown-method calls write one kind of access-log line", "[e2e][log]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  auto stub = stub_for(one.socket);
  {
    grpc::ClientContext ctx;
    v1::GetCapabilitiesResponse caps;
    REQUIRE(stub->GetCapabilities(&ctx, v1::GetCapabilitiesRequest(), &caps).ok());
  }
  {
    grpc::ClientContext ctx;
    v1::GetSandboxRequest req;
    req.set_sandbox_id("no-such-sandbox");
    v1::GetSandboxResponse resp;
    REQUIRE(stub->GetSandbox(&ctx, req, &resp).error_code() == grpc::StatusCode::NOT_FOUND);
  }
  const std::string echo = "/openshell.compute.test.Echo/Frobnicate";
  const std::string missing = "/openshell.compute.test.Missing/Nothing";
  REQUIRE(generic_unary(one.socket, echo, "hello").ok());
  grpc::Status unimplemented = generic_unary(one.socket, missing, "hello");
  REQUIRE(unimplemented.error_code() == grpc::StatusCode::UNIMPLEMENTED);

  REQUIRE(wait_for([&] { return !access_lines(one.proc->log(), missing).empty(); }));
  std::string log = one.proc->log();
  auto ok_unary = access_lines(log, "GetCapabilities");
  auto failed_unary = access_lines(log, "GetSandbox");
  auto ok_unknown = access_lines(log, echo);
  auto failed_unknown = access_lines(log, missing);
  REQUIRE(ok_unary.size() >= 1);  // the wrapper's own start-up probe is not served, so one
  REQUIRE(failed_unary.size() == 1);
  REQUIRE(ok_unknown.size() == 1);
  REQUIRE(failed_unknown.size() == 1);

  const std::set<std::string> base = {"time", "level", "message", "rpc", "latency_us", "status"};
  CHECK(keys_of(ok_unary[0]) == base);
  CHECK(ok_unary[0]["level"] == "info");
  std::set<std::string> failed = base;
  failed.insert({"error", "sandbox_id"});
  CHECK(keys_of(failed_unary[0]) == failed);
  CHECK(failed_unary[0]["level"] == "warn");
  CHECK(failed_unary[0]["status"] == "NOT_FOUND");

  // Unknown methods: the same fields and levels, plus passthrough.
  std::set<std::string> passthrough = base;
  passthrough.insert("passthrough");
  CHECK(keys_of(ok_unknown[0]) == passthrough);
  CHECK(ok_unknown[0]["level"] == "info");
  CHECK(ok_unknown[0]["passthrough"] == true);
  passthrough.insert("error");
  CHECK(keys_of(failed_unknown[0]) == passthrough);
  CHECK(failed_unknown[0]["level"] == "warn");
  CHECK(failed_unknown[0]["status"] == "UNIMPLEMENTED");
  CHECK(failed_unknown[0]["error"] == unimplemented.error_message());
  CHECK(failed_unknown[0]["latency_us"].is_number_integer());
}

TEST_CASE("the last log lines of a normal exit are written", "[e2e][log]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  one.proc->signal(SIGTERM);
  REQUIRE(one.proc->wait() == 0);
  auto lines = json_lines(one.proc->log());
  REQUIRE_FALSE(lines.empty());
  CHECK(lines.back()["message"] == "stopped");

  MemoryDriverProc driver(dir, "memory-alone");
  driver.proc->signal(SIGTERM);
  REQUIRE(driver.proc->wait() == 0);
  auto driver_lines = json_lines(driver.proc->log());
  REQUIRE_FALSE(driver_lines.empty());
  CHECK(driver_lines.back()["message"] == "shutting down");
}
