// The pipeline's per-RPC selection; how stages run is call/call_runner's
// (tests/call/call_runner_test.cc).
#include "proxy/pipeline.h"

#include <catch2/catch.hpp>

using namespace owrap;

TEST_CASE("stages are selected per RPC, in configuration order", "[proxy][pipeline]") {
  Pipeline p;
  p.add(Stage{"a", rpc_set({Rpc::kCreateSandbox, Rpc::kValidateSandboxCreate}), nullptr, nullptr, nullptr});
  p.add(Stage{"b", rpc_set({Rpc::kGetCapabilities}), nullptr, nullptr, nullptr});
  p.add(Stage{"c", rpc_set({Rpc::kCreateSandbox}), nullptr, nullptr, nullptr});
  REQUIRE(p.stage_count(Rpc::kCreateSandbox) == 2);
  CHECK(p.for_rpc(Rpc::kCreateSandbox)[0]->name == "a");
  CHECK(p.for_rpc(Rpc::kCreateSandbox)[1]->name == "c");
  CHECK(p.stage_count(Rpc::kValidateSandboxCreate) == 1);
  CHECK(p.stage_count(Rpc::kGetSandbox) == 0);
  CHECK(p.for_rpc(Rpc::kGetCapabilities)[0]->name == "b");
}
