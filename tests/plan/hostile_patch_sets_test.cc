// Hostile patch sets against the plan's shortcuts (review of the direct
// operations and the write-back by changed paths): the write-back by
// changed paths must write what comparing the whole plan writes, and
// never what the view did not hold.
#include "plan/plan.h"
#include "plan/write_back.h"
#include "tests/plan/random_plans.h"

#include <google/protobuf/util/json_util.h>
#include <catch2/catch.hpp>

#include <random>

using namespace owrap;
using nlohmann::json;
namespace v1 = openshell::compute::v1;
using owrap::test::pick;
using owrap::test::with_unknown_fields;

namespace {

const char* kAttackSandbox = R"({
  "id": "sb-1", "name": "one", "namespace": "ns",
  "spec": {
    "log_level": "info",
    "environment": {"OPENSHELL_SANDBOX_TOKEN": "env-token", "APP": "1", "a/b": "2", "t~n": "3"},
    "sandbox_token": "jwt-secret",
    "command": ["sleep", "1"],
    "resource_requirements": {"gpu": {"count": 0}},
    "template": {
      "image": "busybox",
      "labels": {"team": "a", "a/b": "gold", "-": "dash", "0": "zero"},
      "environment": {"OPENSHELL_SANDBOX_TOKEN_FILE": "/run/token", "X": "y"},
      "driver_config": {"pod": {"node_selector": {"zone": "a", "x/y": "b"}, "tolerations": [{"key": "k"}, [1, {"deep": "v"}]]},
                        "keep": true, "-": 1, "0": [0]},
      "platform_config": {"p": {"q": [1, 2]}},
      "resources": {"cpu_limit": "1"}
    }
  }
})";

v1::DriverSandbox attack_request() {
  return with_unknown_fields(kAttackSandbox);
}

std::string random_path(std::mt19937& rng) {
  static const std::vector<std::string> paths = {
      "",
      "/spec",
      "/spec/template",
      "/spec/environment",
      "/spec/environment/APP",
      "/spec/environment/a~1b",
      "/spec/environment/t~0n",
      "/spec/environment/NEW",
      "/spec/template/labels",
      "/spec/template/labels/team",
      "/spec/template/labels/a~1b",
      "/spec/template/labels/-",
      "/spec/template/labels/0",
      "/spec/template/labels/new",
      "/spec/template/environment/X",
      "/spec/template/driver_config",
      "/spec/template/driver_config/pod",
      "/spec/template/driver_config/pod/node_selector/x~1y",
      "/spec/template/driver_config/pod/tolerations",
      "/spec/template/driver_config/pod/tolerations/0",
      "/spec/template/driver_config/pod/tolerations/1/1/deep",
      "/spec/template/driver_config/pod/tolerations/-",
      "/spec/template/driver_config/-",
      "/spec/template/driver_config/0",
      "/spec/template/driver_config/0/0",
      "/spec/template/driver_config/0/-",
      "/spec/template/driver_config/keep",
      "/spec/template/platform_config",
      "/spec/template/platform_config/p/q/1",
      "/spec/template/platform_config/n",
      "/spec/template/resources",
      "/spec/template/resources/memory_limit",
      "/spec/template/image",
      "/spec/resource_requirements",
      "/spec/resource_requirements/gpu",
      "/spec/resource_requirements/gpu/count",
      "/spec/command",
      "/spec/command/0",
      "/spec/command/-",
      "/spec/tty",
      "/spec/log_level",
      "/name",
  };
  return pick(rng, paths);
}

json random_value(std::mt19937& rng) {
  switch (rng() % 9) {
    case 0:
      return "v";
    case 1:
      return 1;
    case 2:
      return true;
    case 3:
      return json::object();
    case 4:
      return {{"a", "b"}};
    case 5:
      return {{"gpu", {{"count", 2}}}};
    case 6:
      return json::array({"x", "y"});
    case 7:
      return {{"image", "alpine"}, {"labels", {{"k", "v"}}}};
    default:
      return nullptr;
  }
}

json random_op(std::mt19937& rng) {
  static const std::vector<std::string> ops = {"add", "remove", "replace", "move", "copy", "add", "replace"};
  json op = {{"op", pick(rng, ops)}, {"path", random_path(rng)}};
  if (op["op"] == "move" || op["op"] == "copy") op["from"] = random_path(rng);
  if (op["op"] == "add" || op["op"] == "replace") op["value"] = random_value(rng);
  return op;
}

}  // namespace

TEST_CASE("hostile patch sets write back what the whole comparison writes, secrets and unknown fields kept",
          "[plan][review]") {
  std::mt19937 rng(31);
  std::vector<v1::DriverSandbox> requests(4, attack_request());
  requests[1].mutable_spec()->mutable_template_()->clear_driver_config();
  requests[1].mutable_spec()->clear_resource_requirements();
  requests[2].mutable_spec()->mutable_template_()->clear_labels();
  requests[3].mutable_spec()->clear_template_();
  int compared = 0;
  for (int round = 0; round < 5000; round++) {
    const v1::DriverSandbox& request = requests[round % requests.size()];
    auto plan = Plan::from(request);
    REQUIRE(plan.ok());
    json all = json::array();
    for (int hook = 0; hook < 3; hook++) {
      json patches = json::array();
      for (unsigned n = 1 + rng() % 3; n > 0; n--) patches.push_back(random_op(rng));
      // Half the rounds judge ownership too; a preview first (audit mode) must change nothing.
      const bool may_override = round % 2 == 0;
      const std::string before = plan->json().dump();
      auto preview = plan->preview("h" + std::to_string(hook), patches, may_override, PatchRules{});
      REQUIRE(plan->json().dump() == before);
      auto applied = plan->apply("h" + std::to_string(hook), patches, may_override, PatchRules{});
      REQUIRE(applied.ok() == preview.ok());
      if (applied.ok()) {
        all.push_back(patches);
      }
    }
    if (plan->changes().empty()) continue;
    INFO("patches " << all.dump() << " plan " << plan->json().dump());
    v1::DriverSandbox by_paths = request;
    REQUIRE(plan->write_back(by_paths).ok());
    v1::DriverSandbox whole = request;
    v1::DriverSandbox after = plan->view();
    write_changes(plan->original(), after, whole);
    REQUIRE(canonical_bytes(by_paths) == canonical_bytes(whole));
    CHECK(by_paths.spec().sandbox_token() == "jwt-secret");
    CHECK(by_paths.spec().environment().at("OPENSHELL_SANDBOX_TOKEN") == "env-token");
    if (request.spec().has_template_()) {
      CHECK(by_paths.spec().template_().environment().at("OPENSHELL_SANDBOX_TOKEN_FILE") == "/run/token");
    }
    // The view after write-back, read again, is the plan's view.
    CHECK(canonical_bytes(hook_view(by_paths)) == canonical_bytes(plan->view()));
    compared++;
  }
  CHECK(compared > 1000);
}
