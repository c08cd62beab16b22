#include "plan/plan.h"

#include "future.pb.h"
#include "plan/protection.h"
#include "secrets_test.pb.h"
#include "tests/plan/plan_pair.h"

#include <google/protobuf/util/json_util.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

using namespace owrap;
using nlohmann::json;
namespace v1 = openshell::compute::v1;
using owrap::test::plan_of;

namespace {

const char* kSandbox = R"({
  "id": "sb-1", "name": "one", "namespace": "ns", "workspace": "ws",
  "spec": {
    "log_level": "info",
    "environment": {"OPENSHELL_SANDBOX_TOKEN": "env-token", "OPENSHELL_SANDBOX_TOKEN_FILE": "/run/token",
                    "OPENSHELL_ENDPOINT": "http://gw", "APP": "1"},
    "sandbox_token": "jwt-secret",
    "command": ["sleep", "1"],
    "template": {
      "image": "busybox",
      "labels": {"openshell.ai/managed-by": "openshell", "team": "a"},
      "environment": {"OPENSHELL_SANDBOX_TOKEN": "tmpl-token", "X": "y"},
      "platform_config": {"runtime_class_name": "gvisor"},
      "driver_config": {"pod": {"node_selector": {"zone": "a"}}, "keep": true}
    }
  }
})";

v1::DriverSandbox parse(const std::string& text) {
  v1::DriverSandbox out;
  REQUIRE(google::protobuf::util::JsonStringToMessage(text, &out).ok());
  return out;
}

std::string text_of(const google::protobuf::Message& m) {
  std::string out;
  REQUIRE(google::protobuf::util::MessageToJsonString(m, &out).ok());
  return out;
}

// A patch array; `json x = {one}` would be `one` itself, not an array of it.
struct Patches {
  Patches(std::initializer_list<json> list) : value(json::array()) {
    for (const auto& item : list) value.push_back(item);
  }
  Patches(const json& whole) : value(whole) {}  // NOLINT: implicit by design
  json value;
};

// Applies and expects a refusal; the plan must be exactly as before.
std::string refused(Plan& plan, const std::string& hook, const Patches& patches, bool may_override = false,
                    const PatchRules& rules = {}) {
  const json before = plan.json();
  const auto owners = plan.owners();
  const size_t changes = plan.changes().size();
  const std::string view = text_of(plan.view());
  auto status = plan.apply(hook, patches.value, may_override, rules);
  REQUIRE_FALSE(status.ok());
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(plan.json() == before);
  CHECK(plan.owners() == owners);
  CHECK(plan.changes().size() == changes);
  CHECK(text_of(plan.view()) == view);
  CHECK(status.error_message().rfind("hook \"" + hook + "\": ", 0) == 0);
  return status.error_message();
}

void applied(Plan& plan, const std::string& hook, const Patches& patches, bool may_override = false,
             const PatchRules& rules = {}) {
  auto status = plan.apply(hook, patches.value, may_override, rules);
  INFO(status.error_message());
  REQUIRE(status.ok());
}

json op(const std::string& name, const std::string& path, json value = nullptr) {
  json out = {{"op", name}, {"path", path}};
  if (!value.is_null() || name == "add" || name == "replace" || name == "test") out["value"] = value;
  return out;
}

json op_from(const std::string& name, const std::string& from, const std::string& path) {
  return {{"op", name}, {"from", from}, {"path", path}};
}

}  // namespace

TEST_CASE("the view hides the token and OPENSHELL_SANDBOX_TOKEN* entries; write_back keeps them", "[plan]") {
  v1::DriverSandbox request = parse(kSandbox);
  Plan plan = plan_of(request);
  const std::string shown = plan.json().dump() + text_of(plan.view());
  CHECK(shown.find("jwt-secret") == std::string::npos);
  CHECK(shown.find("env-token") == std::string::npos);
  CHECK(shown.find("tmpl-token") == std::string::npos);
  CHECK(shown.find("OPENSHELL_SANDBOX_TOKEN") == std::string::npos);
  CHECK(plan.view().spec().environment().at("OPENSHELL_ENDPOINT") == "http://gw");  // shown, just protected

  applied(plan, "env", {op("add", "/spec/environment/EXTRA", "2"), op("remove", "/spec/template/environment/X")});
  REQUIRE(plan.write_back(request).ok());
  CHECK(request.spec().sandbox_token() == "jwt-secret");
  CHECK(request.spec().environment().at("OPENSHELL_SANDBOX_TOKEN") == "env-token");
  CHECK(request.spec().environment().at("OPENSHELL_SANDBOX_TOKEN_FILE") == "/run/token");
  CHECK(request.spec().environment().at("EXTRA") == "2");
  CHECK(request.spec().template_().environment().at("OPENSHELL_SANDBOX_TOKEN") == "tmpl-token");
  CHECK(request.spec().template_().environment().count("X") == 0);
}

TEST_CASE("an applied patch set is written back and nothing else", "[plan]") {
  v1::DriverSandbox request = parse(kSandbox);
  Plan plan = plan_of(request);
  applied(plan, "shape",
          {op("replace", "/spec/template/image", "alpine:3"), op("add", "/spec/template/labels/tenant", "acme"),
           op("remove", "/spec/template/labels/team"),
           op("add", "/spec/template/driver_config/pod/tolerations", json::array({{{"key", "gpu"}}})),
           op("replace", "/spec/template/driver_config/pod/node_selector/zone", 7), op("add", "/spec/command/-", "x"),
           op("test", "/spec/log_level", "info"), op("add", "/spec/resource_requirements", {{"gpu", json::object()}})});
  CHECK(plan.view().spec().template_().image() == "alpine:3");
  CHECK(plan.changes().size() == 7);  // the test is no change
  CHECK(plan.changes()[0].hook == "shape");
  CHECK(plan.changes()[0].op == "replace");
  CHECK(plan.changes()[0].path == "/spec/template/image");
  CHECK(plan.owners().at("/spec/template/labels/tenant") == "shape");
  CHECK(plan.owners().at("/spec/template/labels/team") == "shape");  // its removal
  CHECK(plan.owners().at("/spec/command/2") == "shape");

  REQUIRE(plan.write_back(request).ok());
  const auto& t = request.spec().template_();
  CHECK(t.image() == "alpine:3");
  CHECK(t.labels().at("tenant") == "acme");
  CHECK(t.labels().count("team") == 0);
  CHECK(t.labels().at("openshell.ai/managed-by") == "openshell");
  CHECK(t.driver_config()
            .fields()
            .at("pod")
            .struct_value()
            .fields()
            .at("node_selector")
            .struct_value()
            .fields()
            .at("zone")
            .number_value() == 7);
  CHECK(t.driver_config().fields().at("pod").struct_value().fields().at("tolerations").list_value().values_size() == 1);
  CHECK(t.driver_config().fields().at("keep").bool_value());
  CHECK(t.platform_config().fields().at("runtime_class_name").string_value() == "gvisor");
  CHECK(request.spec().command_size() == 3);
  CHECK(request.spec().has_resource_requirements());
  CHECK(request.spec().resource_requirements().has_gpu());  // presence is the request
  CHECK(request.spec().sandbox_token() == "jwt-secret");

  // Removing a field clears it on the request.
  Plan again = plan_of(request);
  applied(again, "strip", {op("remove", "/spec/template/driver_config"), op("remove", "/spec/resource_requirements")});
  REQUIRE(again.write_back(request).ok());
  CHECK_FALSE(request.spec().template_().has_driver_config());
  CHECK_FALSE(request.spec().has_resource_requirements());
}

TEST_CASE("fields this build does not know survive mutation and write-back", "[plan]") {
  openshell::compute::future::FutureSandbox future;
  future.set_id("sb-f");
  future.set_future_note("from a newer gateway");
  future.mutable_spec()->set_sandbox_token("jwt-secret");
  future.mutable_spec()->set_future_spec_field("spec-level");
  future.mutable_spec()->mutable_template_()->set_image("busybox");
  future.mutable_spec()->mutable_template_()->set_future_template_field(4242);

  v1::DriverSandbox request;
  REQUIRE(request.ParseFromString(future.SerializeAsString()));
  Plan plan = plan_of(request);
  CHECK(plan.json().dump().find("4242") == std::string::npos);  // unknown fields are not shown
  applied(plan, "img", {op("replace", "/spec/template/image", "alpine"), op("add", "/spec/log_level", "debug")});
  REQUIRE(plan.write_back(request).ok());

  openshell::compute::future::FutureSandbox back;
  REQUIRE(back.ParseFromString(request.SerializeAsString()));
  CHECK(back.future_note() == "from a newer gateway");
  CHECK(back.spec().future_spec_field() == "spec-level");
  CHECK(back.spec().template_().future_template_field() == 4242);
  CHECK(back.spec().template_().image() == "alpine");
  CHECK(back.spec().sandbox_token() == "jwt-secret");
  CHECK(request.spec().log_level() == "debug");
}

TEST_CASE("protected paths are refused naming hook, operation and path", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  struct Case {
    Patches patches;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{op("replace", "/id", "x")}, "patch 0 (replace /id): /id is driver-owned"},
      {{op("remove", "/name")}, "patch 0 (remove /name): /name is driver-owned"},
      {{op("add", "/workspace", "w")}, "/workspace is driver-owned"},
      {{op("add", "/status", {{"deleting", true}})}, "/status is driver-owned"},
      {{op("replace", "/spec/template/platform_config/runtime_class_name", "runc")},
       "/spec/template/platform_config/runtime_class_name is driver-owned (\"/spec/template/platform_config\")"},
      {{op("add", "/spec/environment/OPENSHELL_FOO", "1")},
       "patch 0 (add /spec/environment/OPENSHELL_FOO): /spec/environment/OPENSHELL_FOO is driver-owned"},
      {{op("replace", "/spec/environment/OPENSHELL_ENDPOINT", "http://evil")}, "is driver-owned"},
      {{op("add", "/spec/template/environment/OPENSHELL_SANDBOX_TOKEN", "mine")},
       "/spec/template/environment/OPENSHELL_SANDBOX_TOKEN is driver-owned"},
      {{op("replace", "/spec/template/labels/openshell.ai~1managed-by", "me")},
       "(replace /spec/template/labels/openshell.ai~1managed-by): /spec/template/labels/openshell.ai~1managed-by is "
       "driver-owned"},
      {{op("add", "/spec/template/labels/openshell.io~1sandbox-id", "x")}, "openshell.io~1sandbox-id is driver-owned"},
      {{op("add", "/spec/template/labels/openshell.managed", "x")}, "openshell.managed is driver-owned"},
      {{op("add", "/spec/sandbox_token", "forged")}, "/spec/sandbox_token is driver-owned"},
      // Ancestors of protected parts.
      {{op("replace", "/spec/environment", {{"APP", "1"}})},
       "(replace /spec/environment): /spec/environment contains \"/spec/environment/OPENSHELL_*\""},
      {{op("remove", "/spec/template/labels")}, "(remove /spec/template/labels): /spec/template/labels contains"},
      {{op("replace", "/spec", json::object())}, "(replace /spec): /spec contains"},
      {{op("remove", "/spec/template")}, "/spec/template contains"},
      {{op("replace", "", json::object())}, "the whole sandbox contains"},
      {{op("add", "/spec/template/labels", {{"team", "b"}})}, "(adding onto it replaces it)"},
      // Sources.
      {{op_from("move", "/spec/sandbox_token", "/spec/log_level")},
       "patch 0 (move from /spec/sandbox_token to /spec/log_level): /spec/sandbox_token is driver-owned"},
      {{op_from("copy", "/spec/template/platform_config", "/spec/template/driver_config/pc")},
       "(copy from /spec/template/platform_config to /spec/template/driver_config/pc): "
       "/spec/template/platform_config is driver-owned"},
      {{op_from("copy", "/spec/environment", "/spec/template/driver_config/env")}, "/spec/environment contains"},
      {{op_from("move", "/spec/template", "/spec/template2")}, "/spec/template contains"},
      // Destinations of move and copy are writes like add.
      {{op_from("copy", "/spec/log_level", "/spec/environment/OPENSHELL_LOG")}, "is driver-owned"},
  };
  for (const auto& c : cases) {
    INFO(c.patches.value.dump());
    std::string message = refused(plan, "stamp", c.patches);
    CHECK_THAT(message, Catch::Contains(c.expect));
  }
}

TEST_CASE("secret fields are known by the option, not the name, at any depth", "[plan]") {
  const auto& root = *openshell::compute::secrets_test::ExtendedCreateSandboxRequest::descriptor();
  auto spot = [&](const std::string& pointer) { return schema_spot(root, parse_pointer(pointer).value()); };
  CHECK(spot("/sandbox/spec/sandbox_token").secret == "/sandbox/spec/sandbox_token");
  CHECK(spot("/sandbox/spec").holds_secrets);
  CHECK_FALSE(spot("/sandbox/spec/template").holds_secrets);
  CHECK(spot("/credentials/3/api_key").secret == "/credentials/3/api_key");
  CHECK(spot("/credentials/3").holds_secrets);
  CHECK(spot("/credentials").holds_secrets);
  CHECK(spot("/credentials/0/name").secret.empty());
  CHECK(spot("/keyring/by_name/k/private_key").secret == "/keyring/by_name/k/private_key");
  CHECK(spot("/keyring/by_name").holds_secrets);
  CHECK(spot("/tree/children/0/children/1/pin").secret == "/tree/children/0/children/1/pin");
  CHECK(spot("/tree/children/0").holds_secrets);
  CHECK(spot("/pong/ping/ping_secret").secret == "/pong/ping/ping_secret");
  CHECK(spot("/pong").holds_secrets);
  CHECK(spot("/signing/keys/0").secret == "/signing");  // beneath a secret message field
  CHECK_FALSE(spot("/plain/more/0").holds_secrets);
  CHECK(spot("/plain/more/0").secret.empty());
  CHECK_FALSE(spot("/labels/anything").holds_secrets);  // a Struct is free-form

  auto protection = Protection::make(root, {});
  REQUIRE(protection.ok());
  CHECK(protection->inside(parse_pointer("/keyring/by_name/k/api_key").value()) ==
        "/keyring/by_name/k/api_key is a secret field");
  CHECK(protection->inside(parse_pointer("/signing/keys").value()) ==
        "/signing/keys lies inside the secret field /signing");
  CHECK(protection->contains(parse_pointer("/tree").value()) == "/tree contains a secret field");
  CHECK(protection->contains(parse_pointer("/plain").value()).empty());
}

TEST_CASE("adding a new container is judged by what it would write", "[plan]") {
  v1::DriverSandbox request = parse(R"({"id": "sb-2", "spec": {"template": {"image": "busybox"}}})");
  Plan plan = plan_of(request);
  CHECK_THAT(refused(plan, "env", {op("add", "/spec/template/environment", {{"A", "1"}, {"OPENSHELL_X", "2"}})}),
             Catch::Contains("(add /spec/template/environment): /spec/template/environment/OPENSHELL_X is "
                             "driver-owned"));
  CHECK_THAT(refused(plan, "lbl", {op("add", "/spec/template/labels", {{"openshell.ai/gateway-id", "g"}})}),
             Catch::Contains("/spec/template/labels/openshell.ai~1gateway-id is driver-owned"));
  applied(plan, "env", {op("add", "/spec/template/environment", {{"A", "1"}})});
  CHECK(plan.owners().at("/spec/template/environment/A") == "env");
}

TEST_CASE("the operator's extra prefixes are protected too", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  PatchRules rules;
  rules.extra_protected = {"/spec/template/labels/acme.com~1owner", "/spec/template/driver_config/pod/node_selector",
                           "/spec/template/labels/tenant.acme.com~1*"};
  CHECK_THAT(refused(plan, "h", {op("add", "/spec/template/labels/acme.com~1owner", "me")}, false, rules),
             Catch::Contains("/spec/template/labels/acme.com~1owner is protected by the operator"));
  CHECK_THAT(refused(plan, "h", {op("add", "/spec/template/labels/tenant.acme.com~1id", "t")}, false, rules),
             Catch::Contains("is protected by the operator (\"/spec/template/labels/tenant.acme.com~1*\")"));
  CHECK_THAT(refused(plan, "h", {op("remove", "/spec/template/driver_config/pod")}, false, rules),
             Catch::Contains("/spec/template/driver_config/pod contains \"/spec/template/driver_config/pod/"
                             "node_selector\", protected by the operator"));
  CHECK_THAT(refused(plan, "h", {op("add", "/x", 1)}, false, {{"no-slash"}}),
             Catch::Contains("extra protected path: \"no-slash\" is not a JSON pointer"));
  applied(plan, "h", {op("add", "/spec/template/labels/acme.com~1other", "ok")}, false, rules);
}

TEST_CASE("a patch that breaks the type is refused naming the operation that did", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  CHECK_THAT(refused(plan, "typo", {op("replace", "/spec/template/image", 5)}),
             Catch::Contains("hook \"typo\": patch 0 (replace /spec/template/image): /spec/template/image: the "
                             "result is not a DriverSandbox"));
  CHECK_THAT(refused(plan, "typo",
                     {op("replace", "/spec/log_level", "debug"), op("add", "/spec/tty", {{"on", true}}),
                      op("add", "/spec/template/image", "alpine")}),
             Catch::Contains("patch 1 (add /spec/tty): /spec/tty: the result is not a DriverSandbox"));
  // A mistake a later operation repairs is no mistake.
  applied(plan, "fixer", {op("replace", "/spec/template/image", 5), op("replace", "/spec/template/image", "ok")});
  CHECK_THAT(refused(plan, "typo", {op("add", "/spec/template/bogus", 1)}),
             Catch::Contains("patch 0 (add /spec/template/bogus): /spec/template/bogus: the result is not a "
                             "DriverSandbox: /spec/template/bogus: no such field"));
  // lowerCamel JSON names would slip past the checks that go by proto names.
  CHECK_THAT(refused(plan, "camel", {op("add", "/spec/sandboxToken", "forged")}),
             Catch::Contains("/spec/sandboxToken: no such field (fields go by their proto names)"));
  CHECK_THAT(refused(plan, "camel", {op("add", "/spec/template/platformConfig", {{"a", 1}})}),
             Catch::Contains("/spec/template/platformConfig: no such field"));
  // Inside a Struct any key goes: it is the base driver's schema.
  applied(plan, "camel", {op("add", "/spec/template/driver_config/pod/logLevel", "x")});
}

TEST_CASE("a patch set is all or nothing; a failed test refuses it", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  CHECK_THAT(refused(plan, "two", {op("replace", "/spec/template/image", "alpine"), op("replace", "/id", "x")}),
             Catch::Contains("patch 1 (replace /id): /id is driver-owned"));
  CHECK(plan.view().spec().template_().image() == "busybox");
  CHECK_THAT(
      refused(plan, "guard", {op("replace", "/spec/template/image", "alpine"), op("test", "/spec/log_level", "debug")}),
      Catch::Contains("patch 1 (test /spec/log_level): the test failed"));
  CHECK_THAT(refused(plan, "gone", {op("remove", "/spec/template/labels/nope")}),
             Catch::Contains("patch 0 (remove /spec/template/labels/nope): "));
  CHECK_THAT(refused(plan, "bad", {{{"op", "frobnicate"}, {"path", "/x"}}}),
             Catch::Contains("patch 0 (frobnicate /x): \"op\" must be one of"));
  CHECK_THAT(refused(plan, "bad", {op("add", "/spec/log_level", "x"), {{"op", "add"}, {"path", "/spec/tty"}}}),
             Catch::Contains("patch 1 (add /spec/tty): \"add\" needs a \"value\""));
  CHECK_THAT(refused(plan, "bad", {op("add", "spec", "x")}), Catch::Contains("is not a JSON pointer"));
  CHECK_THAT(refused(plan, "bad", json::object()), Catch::Contains("must be a JSON array"));
  CHECK_THAT(refused(plan, "bad", {op_from("copy", "/spec/nothing", "/spec/log_level")}),
             Catch::Contains("/spec/nothing does not exist"));
}

TEST_CASE("the first hook to set a path owns it", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  applied(plan, "a",
          {op("replace", "/spec/template/image", "alpine"),
           op("add", "/spec/template/driver_config/pod/node_selector/disk", "ssd"),
           op("remove", "/spec/template/labels/team")});
  applied(plan, "a", {op("replace", "/spec/template/image", "alpine:3")});  // its own path again

  CHECK_THAT(refused(plan, "b", {op("replace", "/spec/template/image", "debian")}),
             Catch::Contains("hook \"b\": patch 0 (replace /spec/template/image): /spec/template/image, which hook "
                             "\"a\" set first; hook \"b\" may not override it"));
  CHECK_THAT(refused(plan, "b", {op("remove", "/spec/template/driver_config/pod")}),
             Catch::Contains("/spec/template/driver_config/pod overlaps "
                             "/spec/template/driver_config/pod/node_selector/disk, which hook \"a\" set first"));
  CHECK_THAT(refused(plan, "b", {op("add", "/spec/template/labels/team", "b")}),
             Catch::Contains("/spec/template/labels/team, which hook \"a\" set first"));  // a removal is owned too
  CHECK_THAT(refused(plan, "b", {op_from("move", "/spec/template/image", "/spec/log_level")}),
             Catch::Contains("(move from /spec/template/image to /spec/log_level): /spec/template/image, which hook "
                             "\"a\""));
  // A path nobody set is free; one set by the gateway is not owned by a hook.
  applied(plan, "b", {op("replace", "/spec/template/driver_config/pod/node_selector/zone", "b")});
  CHECK(plan.owners().at("/spec/template/driver_config/pod/node_selector/zone") == "b");
  CHECK(plan.owners().at("/spec/template/driver_config/pod/node_selector/disk") == "a");

  applied(plan, "c", {op("replace", "/spec/template/image", "debian")}, /*may_override=*/true);
  CHECK(plan.owners().at("/spec/template/image") == "c");
  CHECK(plan.view().spec().template_().image() == "debian");
  CHECK_THAT(refused(plan, "a", {op("replace", "/spec/template/image", "alpine")}),
             Catch::Contains("which hook \"c\" set first; hook \"a\" may not override it"));
}

TEST_CASE("hooks appending to one array do not conflict; replacing an element does", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  applied(plan, "a", {op("add", "/spec/command/-", "--a")});
  applied(plan, "b", {op("add", "/spec/command/-", "--b"), op("add", "/spec/command/0", "env")});
  CHECK(plan.view().spec().command_size() == 5);
  CHECK(plan.owners().at("/spec/command/0") == "b");
  CHECK(plan.owners().at("/spec/command/3") == "a");  // moved with its element
  CHECK(plan.owners().at("/spec/command/4") == "b");
  CHECK_THAT(refused(plan, "b", {op("replace", "/spec/command/3", "--x")}),
             Catch::Contains("/spec/command/3, which hook \"a\" set first"));
  CHECK_THAT(refused(plan, "a", {op("remove", "/spec/command/4")}),
             Catch::Contains("/spec/command/4, which hook \"b\" set first"));
  CHECK_THAT(refused(plan, "a", {op("replace", "/spec/command", json::array({"x"}))}),
             Catch::Contains("/spec/command overlaps /spec/command/0, which hook \"b\" set first"));
  applied(plan, "a", {op("remove", "/spec/command/1")});  // the caller's "sleep": nobody's
  CHECK(plan.owners().at("/spec/command/2") == "a");
  CHECK(plan.owners().at("/spec/command/3") == "b");
  CHECK(plan.owners().count("/spec/command/4") == 0);

  // A hook that set the whole array owns its elements.
  applied(plan, "c", {op("add", "/spec/template/driver_config/volumes", json::array({"v1"}))});
  CHECK_THAT(refused(plan, "d", {op("replace", "/spec/template/driver_config/volumes/0", "v2")}),
             Catch::Contains("/spec/template/driver_config/volumes/0 overlaps /spec/template/driver_config/volumes, "
                             "which hook \"c\""));
  applied(plan, "d", {op("add", "/spec/template/driver_config/volumes/-", "v3")});
}

TEST_CASE("too many operations or too many bytes is a malformed reply", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  json many = json::array();
  for (int i = 0; i < 33; i++) many.push_back(op("add", "/spec/environment/K" + std::to_string(i), "v"));
  CHECK(refused(plan, "chatty", many) ==
        "hook \"chatty\": 33 patch operations, more than the limit of 32 (max_patches)");
  PatchRules roomy;
  roomy.max_patches = 40;
  applied(plan, "chatty", many, false, roomy);

  PatchRules small;
  small.max_bytes = 64;
  Patches big{op("add", "/spec/environment/BIG", std::string(100, 'x'))};
  CHECK_THAT(refused(plan, "big", big, false, small),
             Catch::Contains("hook \"big\": the patch set is ") && Catch::Contains("bytes, more than the limit of 64"));
}

TEST_CASE("preview checks and reports without applying", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  const json before = plan.json();
  auto changes = plan.preview("audit", Patches{op("replace", "/spec/template/image", "alpine")}.value, false, {});
  REQUIRE(changes.ok());
  REQUIRE(changes->size() == 1);
  CHECK(changes->at(0).value == "alpine");
  CHECK(plan.json() == before);
  CHECK(plan.owners().empty());
  auto refusal = plan.preview("audit", Patches{op("replace", "/id", "x")}.value, false, {});
  REQUIRE_FALSE(refusal.ok());
  CHECK(refusal.error() == "hook \"audit\": patch 0 (replace /id): /id is driver-owned");
}

TEST_CASE("JSON pointers and patterns", "[plan]") {
  CHECK(parse_pointer("").value().empty());
  CHECK(parse_pointer("/a~1b/c~0d/").value() == PathTokens{"a/b", "c~d", ""});
  CHECK(to_pointer({"a/b", "c~d"}) == "/a~1b/c~0d");
  CHECK_FALSE(parse_pointer("/a~2").ok());
  CHECK_FALSE(parse_pointer("a").ok());
  auto env = PathPattern::parse("/spec/environment/OPENSHELL_*").value();
  CHECK(env.covers({"spec", "environment", "OPENSHELL_"}));
  CHECK(env.covers({"spec", "environment", "OPENSHELL_X", "deeper"}));
  CHECK_FALSE(env.covers({"spec", "environment", "OPENSHELL"}));
  CHECK(env.is_below({"spec", "environment"}));
  CHECK(env.is_below({}));
  CHECK_FALSE(env.is_below({"spec", "template"}));
  CHECK_FALSE(PathPattern::parse("").ok());
}

TEST_CASE("what a patch set costs", "[plan]") {
  const v1::DriverSandbox request = parse(kSandbox);
  const Patches patches{op("add", "/spec/template/labels/tenant", "acme"),
                        op("add", "/spec/template/driver_config/pod/node_selector/disk", "ssd"),
                        op("add", "/spec/environment/REGION", "eu")};
  constexpr int kRounds = 500;
  std::chrono::nanoseconds from_total{0}, apply_total{0}, back_total{0};
  for (int i = 0; i < kRounds; i++) {
    auto t0 = std::chrono::steady_clock::now();
    Plan plan = plan_of(request);
    auto t1 = std::chrono::steady_clock::now();
    REQUIRE(plan.apply("defaults", patches.value, false, {}).ok());
    auto t2 = std::chrono::steady_clock::now();
    v1::DriverSandbox target = request;
    auto t3 = std::chrono::steady_clock::now();
    REQUIRE(plan.write_back(target).ok());
    auto t4 = std::chrono::steady_clock::now();
    from_total += t1 - t0;
    apply_total += t2 - t1;
    back_total += t4 - t3;
  }
  auto us = [&](std::chrono::nanoseconds total) { return std::to_string(total.count() / kRounds / 1000.0); };
  WARN("Plan::from " << us(from_total) << " us, apply (3 ops) " << us(apply_total) << " us, write_back "
                     << us(back_total) << " us");
}

// A hook's patches run on the plan as hooks are shown it: protobuf's form
// of the view ({} for a message whose only member a hook set to null), not
// the text an earlier hook wrote ({"gpu": null}). The plan used to keep the
// text, so the copy below carried "gpu" into a message without such a
// field; and after a refusal, the search for the operation to blame
// replayed from protobuf's form, where every prefix parsed, and read past
// the patch set (the wrapper terminated).
TEST_CASE("patches run on protobuf's form of the plan, not on what an earlier hook wrote", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  applied(plan, "first", {op("add", "/spec/resource_requirements", {{"gpu", nullptr}})});
  CHECK(plan.json().at(json::json_pointer("/spec/resource_requirements")) == json::object());
  applied(plan, "second", {op_from("copy", "/spec/resource_requirements", "/spec/template/resources")});
  CHECK(plan.view().spec().template_().has_resources());
  CHECK(plan.json().at(json::json_pointer("/spec/template/resources")) == json::object());
  CHECK(plan.changes().size() == 2);
  // A refusal names an operation of the set, and leaves the plan as it was.
  CHECK_THAT(refused(plan, "third", {op("add", "/spec/template/resources/gpu", 1)}),
             Catch::StartsWith("hook \"third\": patch 0 (add /spec/template/resources/gpu): "));
}

// A move onto an ancestor of its source: after it, the source's parent is
// the moved array, and the source's last token is no index of it. The
// removal's bookkeeping dereferenced array_index("x") (an empty optional):
// undefined behaviour, an abort with -D_GLIBCXX_ASSERTIONS; nothing this
// build can see, so this test passes either way.
TEST_CASE("a move onto its source's parent leaves ownership as a replace of that parent would", "[plan]") {
  Plan plan = plan_of(parse(kSandbox));
  applied(plan, "first", {op("add", "/spec/template/driver_config/list", {{"x", json::array({1, 2})}})});
  applied(plan, "first", {op_from("move", "/spec/template/driver_config/list/x", "/spec/template/driver_config/list")});
  CHECK(plan.json().at(json::json_pointer("/spec/template/driver_config/list")) == json::array({1, 2}));
  CHECK(plan.owners().at("/spec/template/driver_config/list") == "first");
  CHECK(plan.owners().count("/spec/template/driver_config/list/x") == 0);
}

TEST_CASE("a protection's remembered verdicts are the ones it judges, past its bound and from several threads",
          "[plan]") {
  const std::vector<std::string> extra = {"/spec/template/labels/acme.com~1*"};
  auto shared = Protection::make(*v1::DriverSandbox::descriptor(), extra);
  REQUIRE(shared.ok());
  std::vector<PathTokens> paths;
  for (const char* base : {"/spec/template/labels/acme.com~1", "/spec/environment/OPENSHELL_", "/spec/sandbox_token/",
                           "/spec/template/driver_config/", "/status/x"}) {
    for (int i = 0; i < 300; i++) paths.push_back(parse_pointer(base + std::to_string(i)).value());
  }
  paths.push_back({});
  paths.push_back({"spec"});
  paths.push_back({"spec", "template"});
  // 1,503 paths, more than the memo keeps: each asked four times on four
  // threads, each answer checked against a protection that never saw it.
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&] {
      for (int round = 0; round < 4; round++) {
        for (const auto& path : paths) {
          auto fresh = Protection::make(*v1::DriverSandbox::descriptor(), extra).value();
          if (shared->inside(path) != fresh.inside(path) || shared->contains(path) != fresh.contains(path)) wrong++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK_THAT(shared->inside(parse_pointer("/spec/template/labels/acme.com~17").value()),
             Catch::Contains("protected by the operator"));
  CHECK_THAT(shared->contains({"spec"}), Catch::Contains("contains"));
}

// Each patch set's copy of the view is made on the plan's arena while the
// copies stay small; a large view goes to the heap from the second set on,
// so the arena does not keep a large view once per set. Either way the
// result is the same.
TEST_CASE("patch sets' copies of the view leave the arena once it holds a large view", "[plan]") {
  for (size_t size : {size_t(100), size_t(300 * 1024)}) {
    INFO("a driver_config string of " << size << " bytes");
    v1::DriverSandbox sandbox = owrap::test::request_from(kSandbox);
    (*sandbox.mutable_spec()->mutable_template_()->mutable_driver_config()->mutable_fields())["big"].set_string_value(
        std::string(size, 'x'));
    auto plan = Plan::from(sandbox);
    REQUIRE(plan.ok());
    std::vector<bool> on_arena;
    for (int hook = 0; hook < 4; hook++) {
      std::string label = "h" + std::to_string(hook);
      json patches = json::array({{{"op", "add"}, {"path", "/spec/template/labels/" + label}, {"value", label}}});
      REQUIRE(plan->apply(label, patches, false, PatchRules{}).ok());
      on_arena.push_back(plan->view().GetArena() != nullptr);
    }
    CHECK(on_arena[0]);
    for (int hook = 1; hook < 4; hook++) CHECK(on_arena[hook] == (size < 1000));
    v1::DriverSandbox target = sandbox;
    REQUIRE(plan->write_back(target).ok());
    CHECK(target.spec().template_().labels().size() == sandbox.spec().template_().labels().size() + 4);
    CHECK(target.spec().template_().labels().at("h3") == "h3");
    CHECK(target.spec().template_().driver_config().fields().at("big").string_value().size() == size);
  }
}
