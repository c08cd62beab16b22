#include "proxy/pipeline.h"

#include <catch2/catch.hpp>

using namespace owrap;

namespace {
Stage recording(const std::string& name, std::vector<std::string>& log, bool fail_before = false,
                bool fail_after = false) {
  return Stage{name,
               {Rpc::kCreateSandbox},
               [&log, name, fail_before](CallContext&, google::protobuf::Message&) {
                 log.push_back("before:" + name);
                 return fail_before ? grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, name + " refused")
                                    : grpc::Status::OK;
               },
               [&log, name, fail_after](CallContext&, google::protobuf::Message&) {
                 log.push_back("after:" + name);
                 return fail_after ? grpc::Status(grpc::StatusCode::INTERNAL, name + " failed") : grpc::Status::OK;
               },
               [&log, name](CallContext&, const grpc::Status& cause) {
                 log.push_back("undo:" + name + ":" + cause.error_message());
               }};
}
}  // namespace

TEST_CASE("stages run in order and a failing before undoes what ran, in reverse", "[proxy][pipeline]") {
  std::vector<std::string> log;
  Pipeline p;
  p.add(recording("a", log));
  p.add(recording("b", log));
  p.add(recording("c", log, true));
  p.add(recording("d", log));
  CallContext ctx{Rpc::kCreateSandbox, "sb", {}, {}};
  openshell::compute::v1::CreateSandboxRequest req;
  auto s = p.before(ctx, req);
  CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(log == std::vector<std::string>{"before:a", "before:b", "before:c", "undo:c:c refused", "undo:b:c refused",
                                        "undo:a:c refused"});
}

TEST_CASE("a delegate failure compensates every stage in reverse", "[proxy][pipeline]") {
  std::vector<std::string> log;
  Pipeline p;
  p.add(recording("a", log));
  p.add(recording("b", log));
  CallContext ctx{Rpc::kCreateSandbox, "sb", {}, {}};
  openshell::compute::v1::CreateSandboxRequest req;
  REQUIRE(p.before(ctx, req).ok());
  p.compensate(ctx, grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "base full"));
  CHECK(log == std::vector<std::string>{"before:a", "before:b", "undo:b:base full", "undo:a:base full"});
}

TEST_CASE("stages apply only to their RPCs; a failing after compensates", "[proxy][pipeline]") {
  std::vector<std::string> log;
  Pipeline p;
  p.add(recording("a", log, false, true));
  CallContext get{Rpc::kGetSandbox, "sb", {}, {}};
  openshell::compute::v1::GetSandboxRequest req;
  REQUIRE(p.before(get, req).ok());
  CHECK(log.empty());
  CHECK(p.stage_count(Rpc::kGetSandbox) == 0);
  CallContext create{Rpc::kCreateSandbox, "sb", {}, {}};
  openshell::compute::v1::CreateSandboxResponse resp;
  auto s = p.after(create, resp);
  CHECK(s.error_code() == grpc::StatusCode::INTERNAL);
  CHECK(log == std::vector<std::string>{"after:a", "undo:a:a failed"});
}
