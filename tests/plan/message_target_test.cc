// Patch sets applied to the plan's message directly (plan/message_target.h)
// against the same patch sets applied to its JSON form: every outcome, error
// text, change, owner and resulting view must be the same. Random cases,
// fixed seeds; operations aimed at every kind of member the schema has.
#include "plan/message_target.h"
#include "plan/plan.h"
#include "plan/write_back.h"
#include "tests/plan/plan_pair.h"
#include "tests/plan/random_plans.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <random>

using namespace owrap;
using nlohmann::json;
namespace v1 = openshell::compute::v1;
using owrap::test::pick;
using owrap::test::PlanPair;
using owrap::test::with_unknown_fields;

namespace {

const char* kRequest = R"({
  "id": "sb-1", "name": "one", "namespace": "ns", "workspace": "w",
  "spec": {
    "log_level": "info",
    "environment": {"OPENSHELL_SANDBOX_TOKEN": "env-token", "APP": "1", "a/b": "2"},
    "sandbox_token": "jwt-secret",
    "command": ["sleep", "1"],
    "tty": true,
    "resource_requirements": {"gpu": {"count": 0}},
    "template": {
      "image": "busybox",
      "labels": {"team": "a", "-": "dash", "0": "zero"},
      "environment": {"OPENSHELL_SANDBOX_TOKEN_FILE": "/run/token", "X": "y"},
      "driver_config": {"pod": {"node_selector": {"zone": "a"}, "tolerations": [{"key": "k"}, [1, {"deep": "v"}]]},
                        "keep": true, "n": null, "0": [0]},
      "platform_config": {"p": {"q": [1, 2]}},
      "resources": {"cpu_limit": "1"}
    }
  }
})";

std::string random_path(std::mt19937& rng) {
  static const std::vector<std::string> paths = {
      "",
      "/spec",
      "/spec/template",
      "/spec/environment",
      "/spec/environment/APP",
      "/spec/environment/a~1b",
      "/spec/environment/NEW",
      "/spec/environment/OPENSHELL_SANDBOX_TOKEN",
      "/spec/template/labels",
      "/spec/template/labels/team",
      "/spec/template/labels/-",
      "/spec/template/labels/0",
      "/spec/template/labels/new",
      "/spec/template/labels/new/deeper",
      "/spec/template/environment",
      "/spec/template/environment/X",
      "/spec/template/driver_config",
      "/spec/template/driver_config/pod",
      "/spec/template/driver_config/pod/node_selector",
      "/spec/template/driver_config/pod/node_selector/zone",
      "/spec/template/driver_config/pod/node_selector/pool",
      "/spec/template/driver_config/pod/tolerations",
      "/spec/template/driver_config/pod/tolerations/0",
      "/spec/template/driver_config/pod/tolerations/0/key",
      "/spec/template/driver_config/pod/tolerations/1",
      "/spec/template/driver_config/pod/tolerations/1/0",
      "/spec/template/driver_config/pod/tolerations/1/1/deep",
      "/spec/template/driver_config/pod/tolerations/2",
      "/spec/template/driver_config/pod/tolerations/01",
      "/spec/template/driver_config/pod/tolerations/-",
      "/spec/template/driver_config/keep",
      "/spec/template/driver_config/keep/x",
      "/spec/template/driver_config/n",
      "/spec/template/driver_config/n/x",
      "/spec/template/driver_config/0",
      "/spec/template/driver_config/0/0",
      "/spec/template/driver_config/0/-",
      "/spec/template/driver_config/new",
      "/spec/template/platform_config",
      "/spec/template/platform_config/p/q/1",
      "/spec/template/platform_config/p/q/-",
      "/spec/template/resources",
      "/spec/template/resources/cpu_limit",
      "/spec/template/resources/memory_limit",
      "/spec/template/resources/nope",
      "/spec/template/image",
      "/spec/template/image/0",
      "/spec/template/agent_socket_path",
      "/spec/template/driverConfig",
      "/spec/resource_requirements",
      "/spec/resource_requirements/gpu",
      "/spec/resource_requirements/gpu/count",
      "/spec/command",
      "/spec/command/0",
      "/spec/command/1",
      "/spec/command/2",
      "/spec/command/-",
      "/spec/tty",
      "/spec/log_level",
      "/spec/sandbox_token",
      "/workspace",
      "/status",
      "/status/conditions/-",
      "/name",
  };
  return pick(rng, paths);
}

json random_value(std::mt19937& rng) {
  static const std::vector<json> values = {
      "v",
      "",
      "\xc3\x28",  // not UTF-8
      0,
      1,
      -1,
      2.5,
      4294967296,
      "7",
      true,
      false,
      nullptr,
      json::object(),
      json::array(),
      json::array({"x", "y"}),
      json::array({1, nullptr}),
      {{"a", "b"}},
      {{"a", ""}},
      {{"count", 2}},
      {{"count", 0}},
      {{"gpu", {{"count", 2}}}},
      {{"gpu", json::object()}},
      {{"gpu", nullptr}},
      {{"key", "t"}, {"effect", "NoSchedule"}},
      {{"image", "alpine"}, {"labels", {{"k", "v"}}}},
      {{"image", ""}},
      {{"labels", json::object()}},
      {{"pod", {{"node_selector", {{"pool", "s"}}}, {"tolerations", json::array({{{"key", "x"}}})}}}},
      {{"cpu_limit", "2"}, {"memory_limit", "1Gi"}},
      {{"cpuLimit", "2"}},
      {{"type", "Ready"}, {"status", "True"}},
  };
  return pick(rng, values);
}

// `plain`: add, remove and replace only, the patch sets the message takes.
json random_op(std::mt19937& rng, bool plain) {
  static const std::vector<std::string> ops = {"add",     "remove", "replace", "add",  "add",
                                               "replace", "remove", "move",    "copy", "test"};
  json op = {{"op", pick(rng, ops)}, {"path", random_path(rng)}};
  if (plain && (op["op"] == "move" || op["op"] == "copy" || op["op"] == "test")) op["op"] = "add";
  if (op["op"] == "move" || op["op"] == "copy") op["from"] = random_path(rng);
  if (op["op"] == "add" || op["op"] == "replace" || op["op"] == "test") op["value"] = random_value(rng);
  return op;
}

struct Tally {
  int handled_ok = 0;  // add/remove/replace sets that applied
  int on_message = 0;  // of those, the ones the message took
  int refused = 0;     // of those, refused by a safety rule
  int sets = 0;
  int prepared = 0;  // sets the fast side was given prepared
};

// Three hooks' patch sets on one request, both ways, compared after each.
void run_round(std::mt19937& rng, const v1::DriverSandbox& request, bool may_override, Tally& tally,
               bool prepared = false) {
  PlanPair pair(request);
  if (prepared) pair.use_prepared();
  for (int hook = 0; hook < 3; hook++) {
    json patches = json::array();
    const bool plain = rng() % 4 != 0;
    for (unsigned n = 1 + rng() % 3; n > 0; n--) patches.push_back(random_op(rng, plain));
    const size_t before = pair.fast().applied_on_message();
    grpc::Status a = pair.apply("h" + std::to_string(hook), patches, may_override);
    tally.sets++;
    if (MessageTarget::handles(patches)) {
      if (pair.fast().applied_on_message() > before) tally.on_message++;
      if (a.ok()) tally.handled_ok++;
      if (!a.ok() && a.error_message().find("driver-owned") != std::string::npos) tally.refused++;
    }
  }
  pair.check_write_back();
  tally.prepared += pair.prepared_sets();
}

}  // namespace

TEST_CASE("patch sets on the message give what they give on the JSON form", "[plan]") {
  std::mt19937 rng(41);
  std::vector<v1::DriverSandbox> requests(4, with_unknown_fields(kRequest));
  requests[1].mutable_spec()->mutable_template_()->clear_driver_config();
  requests[1].mutable_spec()->clear_resource_requirements();
  requests[2].mutable_spec()->mutable_template_()->clear_labels();
  requests[2].mutable_spec()->clear_command();
  requests[3].mutable_spec()->clear_template_();
  Tally tally;
  for (int round = 0; round < 6000; round++) {
    run_round(rng, requests[round % requests.size()], round % 2 == 0, tally);
  }
  // The message took most of the add/remove/replace sets that applied, and
  // refused sets of its own (the rest, and the other sets, the JSON form).
  CHECK(tally.on_message > 1000);
  CHECK(tally.on_message > tally.handled_ok * 3 / 4);
  CHECK(tally.refused > 100);
}

// An in-process hook's prepared sets (plan/patch_session.h) against the
// same sets as JSON on the JSON form: the same again, including the sets the
// message gives up on midway, which run again as JSON from their operations.
TEST_CASE("prepared patch sets give what their JSON gives on the JSON form", "[plan]") {
  std::mt19937 rng(43);
  std::vector<v1::DriverSandbox> requests(3, with_unknown_fields(kRequest));
  requests[1].mutable_spec()->mutable_template_()->clear_driver_config();
  requests[2].mutable_spec()->clear_template_();
  Tally tally;
  for (int round = 0; round < 3000; round++) {
    run_round(rng, requests[round % requests.size()], round % 2 == 0, tally, /*prepared=*/true);
  }
  CHECK(tally.prepared > 3000);
  CHECK(tally.on_message > 500);
}

TEST_CASE("what a defaults hook sends is applied to the message", "[plan]") {
  auto plan = Plan::from(with_unknown_fields(kRequest));
  REQUIRE(plan.ok());
  json patches = json::array({
      {{"op", "add"}, {"path", "/spec/template/labels/tenant"}, {"value", "a"}},
      {{"op", "add"}, {"path", "/spec/environment/HTTP_PROXY"}, {"value", "http://proxy:3128"}},
      {{"op", "add"}, {"path", "/spec/template/driver_config/pod/node_selector/pool"}, {"value", "s"}},
      {{"op", "add"},
       {"path", "/spec/template/driver_config/pod/tolerations/-"},
       {"value", {{"key", "sandbox"}, {"operator", "Exists"}}}},
      {{"op", "replace"}, {"path", "/spec/template/resources"}, {"value", {{"cpu_limit", "2"}}}},
  });
  REQUIRE(plan->apply("defaults", patches, false, PatchRules{}).ok());
  CHECK(plan->applied_on_message() == 1);
  const auto& t = plan->view().spec().template_();
  CHECK(t.labels().at("tenant") == "a");
  CHECK(plan->view().spec().environment().at("HTTP_PROXY") == "http://proxy:3128");
  CHECK(t.driver_config()
            .fields()
            .at("pod")
            .struct_value()
            .fields()
            .at("node_selector")
            .struct_value()
            .fields()
            .at("pool")
            .string_value() == "s");
  CHECK(t.driver_config().fields().at("pod").struct_value().fields().at("tolerations").list_value().values_size() == 3);
  CHECK(t.resources().cpu_limit() == "2");
  CHECK(plan->owners().at("/spec/template/driver_config/pod/tolerations/2/key") == "defaults");
}

TEST_CASE("what the message is unsure of goes to the JSON form, with its wording", "[plan]") {
  struct Case {
    json op;
    std::string error;  // empty: applies
  };
  std::vector<Case> cases = {
      // A default value: the form keeps "tty": false, the message prints nothing.
      {{{"op", "add"}, {"path", "/spec/tty"}, {"value", false}}, ""},
      // The form's own error for a missing member.
      {{{"op", "remove"}, {"path", "/spec/template/labels/none"}}, "not found"},
      // A type error: named by the type check.
      {{{"op", "add"}, {"path", "/spec/template/labels/n"}, {"value", 5}}, "not a DriverSandbox"},
      // A JSON name: refused by the type check, which wants proto names.
      {{{"op", "add"}, {"path", "/spec/template/agentSocketPath"}, {"value", "/x"}}, "no such field"},
      // Not UTF-8: refused by the type check, not thrown.
      {{{"op", "replace"}, {"path", "/spec/template/image"}, {"value", "\xc3\x28"}}, "not valid UTF-8"},
  };
  for (const auto& c : cases) {
    INFO(c.op.dump(-1, ' ', false, json::error_handler_t::replace));
    auto plan = Plan::from(with_unknown_fields(kRequest));
    REQUIRE(plan.ok());
    grpc::Status s = plan->apply("h", json::array({c.op}), false, PatchRules{});
    CHECK(plan->applied_on_message() == 0);
    if (c.error.empty()) {
      CHECK(s.error_message() == "");
    } else {
      REQUIRE_FALSE(s.ok());
      CHECK_THAT(s.error_message(), Catch::Contains(c.error));
    }
  }
}

namespace {

std::string hostile_path(std::mt19937& rng) {
  static const std::vector<std::string> paths = {
      "/spec/template/driver_config",
      "/spec/template/driver_config/new",
      "/spec/template/driver_config/pod",
      "/spec/template/driver_config/pod/node_selector/pool",
      "/spec/template/driver_config/pod/tolerations/-",
      "/spec/template/driver_config/pod/tolerations/1/1/deep",
      "/spec/template/driver_config/pod/tolerations/1/-",
      "/spec/template/driver_config/0/0",
      "/spec/template/platform_config",
      "/spec/template/platform_config/p/q/-",
      "/spec/template/platform_config/p/deeper",
      "/spec/template/labels/new",
      "/spec/template/labels",
      "/spec/environment/NEW",
      "/spec/template/resources",
      "/spec/resource_requirements",
      "/spec/resource_requirements/gpu",
      "/spec/template",
  };
  return pick(rng, paths);
}

}  // namespace

// MessageTarget::still_prints_back() skips the walk of the whole view when
// every written value is plainly printable: it must never say yes where
// the walk says no.
TEST_CASE("a target's still_prints_back is the walk of the whole view", "[plan]") {
  std::mt19937 rng(47);
  const v1::DriverSandbox request = hook_view(with_unknown_fields(kRequest));
  REQUIRE(MessageTarget::prints_back(request));
  int printable = 0, not_printable = 0;
  for (int round = 0; round < 20000; round++) {
    v1::DriverSandbox view = request;
    MessageTarget target(view);
    json patches = json::array();
    for (unsigned n = 1 + rng() % 3; n > 0; n--) {
      json op = {{"op", rng() % 4 == 0 ? "replace" : "add"}, {"path", hostile_path(rng)}};
      op["value"] = rng() % 3 == 0 ? random_value(rng) : owrap::test::hostile_value(rng);
      patches.push_back(op);
    }
    try {
      for (const auto& raw : patches) owrap::test::run_operation(target, raw);
    } catch (const MessageTarget::Unsure&) {
      continue;
    }
    const bool whole = MessageTarget::prints_back(view);
    INFO(patches.dump(-1, ' ', false, json::error_handler_t::replace));
    REQUIRE(target.still_prints_back() == whole);
    if (!whole) not_printable++;
    if (whole) printable++;
  }
  // Both answers were reached many times.
  CHECK(not_printable > 500);
  CHECK(printable > 500);
}
