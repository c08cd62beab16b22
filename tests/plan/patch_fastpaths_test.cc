// The plan's shortcuts against the long way they stand for: operations
// applied straight to the document against nlohmann's patch_inplace, the
// write-back by changed paths against the whole comparison, and the patch
// set's byte limit against the dump it bounds. Random cases, fixed seeds.
#include "plan/patch_session.h"
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

// ------------------------------------------------ operations on the document

const std::vector<std::string>& keys() {
  static const std::vector<std::string> k = {"a", "b", "c", "0", "1", "-", "x/y", "t~n", ""};
  return k;
}

json random_value(std::mt19937& rng, int depth = 0) {
  switch (rng() % (depth > 2 ? 4 : 6)) {
    case 0:
      return nullptr;
    case 1:
      return static_cast<int>(rng() % 5);
    case 2:
      return pick(rng, keys());
    case 3:
      return rng() % 2 == 0;
    case 4: {
      json out = json::array();
      for (unsigned i = rng() % 4; i > 0; i--) out.push_back(random_value(rng, depth + 1));
      return out;
    }
    default: {
      json out = json::object();
      for (unsigned i = rng() % 4; i > 0; i--) out[pick(rng, keys())] = random_value(rng, depth + 1);
      return out;
    }
  }
}

std::string escaped(const std::string& token) {
  return escape_token(token);
}

// A pointer that often exists, sometimes lacks its last token or its
// parent, sometimes passes through a scalar or indexes an array badly.
std::string random_pointer(std::mt19937& rng, const json& doc) {
  std::string out;
  const json* at = &doc;
  for (int depth = 0; depth < 4; depth++) {
    if (rng() % 4 == 0) break;
    std::string token;
    if (at && at->is_array()) {
      static const std::vector<std::string> odd = {"-", "01", "x", "99"};
      token = rng() % 3 == 0 ? pick(rng, odd) : std::to_string(rng() % (at->size() + 2));
      auto i = token.find_first_not_of("0123456789") == std::string::npos && !token.empty() &&
                       (token.size() == 1 || token[0] != '0')
                   ? std::stoul(token)
                   : static_cast<unsigned long>(-1);
      at = i < at->size() ? &(*at)[i] : nullptr;
    } else if (at && at->is_object() && !at->empty() && rng() % 3 != 0) {
      auto it = at->begin();
      std::advance(it, rng() % at->size());
      token = it.key();
      at = &*it;
    } else {
      token = pick(rng, keys());
      at = at && at->is_object() && at->contains(token) ? &(*at)[token] : nullptr;
    }
    out += "/" + escaped(token);
  }
  return out;
}

json random_document(std::mt19937& rng) {
  json doc = json::object();
  for (unsigned i = 1 + rng() % 4; i > 0; i--) doc[pick(rng, keys())] = random_value(rng);
  return doc;
}

const Protection& no_schema_protection() {
  // Random keys are not DriverSandbox fields: only driver-owned paths are
  // protected, and none of the random pointers is one.
  static const Protection p = Protection::make(*v1::DriverSandbox::descriptor(), {}).value();
  return p;
}

// ------------------------------------------------ write-back

const char* kSandbox = R"({
  "id": "sb-1", "name": "one", "namespace": "ns",
  "spec": {
    "log_level": "info",
    "environment": {"OPENSHELL_SANDBOX_TOKEN": "env-token", "APP": "1", "B": "2"},
    "sandbox_token": "jwt-secret",
    "command": ["sleep", "1"],
    "template": {
      "image": "busybox",
      "labels": {"team": "a", "tier": "gold"},
      "environment": {"OPENSHELL_SANDBOX_TOKEN_FILE": "/run/token", "X": "y"},
      "driver_config": {"pod": {"node_selector": {"zone": "a"}, "tolerations": [{"key": "k"}]}, "keep": true},
      "resources": {"cpu_limit": "1"}
    }
  }
})";

v1::DriverSandbox sandbox_with_unknown_fields() {
  return with_unknown_fields(kSandbox);
}

// Operations a prepare hook could send, most of them allowed.
json random_sandbox_op(std::mt19937& rng) {
  static const std::vector<std::string> labels = {"team", "tier", "new", "a/b"};
  static const std::vector<std::string> env = {"APP", "B", "NEW", "OPENSHELL_SANDBOX_TOKEN"};
  const std::string lbl = "/spec/template/labels/" + escape_token(pick(rng, labels));
  const std::string var = "/spec/environment/" + pick(rng, env);
  const std::string dc = "/spec/template/driver_config";
  switch (rng() % 16) {
    case 0:
      return {{"op", "add"}, {"path", lbl}, {"value", "v" + std::to_string(rng() % 3)}};
    case 1:
      return {{"op", "remove"}, {"path", lbl}};
    case 2:
      return {{"op", "replace"}, {"path", "/spec/template/image"}, {"value", "alpine"}};
    case 3:
      return {{"op", "add"}, {"path", var}, {"value", "1"}};
    case 4:
      return {{"op", "remove"}, {"path", var}};
    case 5:
      return {{"op", "add"}, {"path", dc + "/pod/node_selector/" + pick(rng, labels)}, {"value", "z"}};
    case 6:
      return {{"op", "add"}, {"path", dc + "/pod/tolerations/-"}, {"value", {{"key", "t"}}}};
    case 7:
      return {{"op", "replace"}, {"path", dc}, {"value", {{"pod", {{"x", rng() % 2 == 0}}}}}};
    case 8:
      return {{"op", "add"}, {"path", "/spec/template/labels"}, {"value", {{"only", "one"}}}};
    case 9:
      return {{"op", "add"}, {"path", "/spec/command/-"}, {"value", "x"}};
    case 10:
      return {{"op", "remove"}, {"path", dc + "/keep"}};
    case 11:
      return {{"op", "move"}, {"from", lbl}, {"path", "/spec/template/labels/moved"}};
    case 12:
      return {{"op", "copy"}, {"from", "/spec/template/image"}, {"path", var}};
    case 13:
      return {{"op", "add"}, {"path", "/spec/template/resources/memory_limit"}, {"value", "1Gi"}};
    case 14:
      return {{"op", "remove"}, {"path", "/spec/template/environment/X"}};
    default:
      return {{"op", "add"}, {"path", "/spec/log_level"}, {"value", "debug"}};
  }
}

// A string that escapes in every way dump() knows.
std::string random_text(std::mt19937& rng) {
  static const std::vector<std::string> parts = {"a", "\"", "\\", "\n", "\x01", "\x1f", "\u00e9", "\u20ac", "/", " "};
  std::string out;
  for (unsigned i = rng() % 60; i > 0; i--) out += pick(rng, parts);
  return out;
}

// The parent of `pointer` exists and is a string, number or boolean: where
// nlohmann's add asserts (aborting the process) and its remove does nothing.
bool lands_in_scalar(const json& doc, const std::string& pointer) {
  if (pointer.empty()) return false;
  json::json_pointer parent = json::json_pointer(pointer).parent_pointer();
  try {
    const json& at = doc.at(parent);
    return !at.is_structured() && !at.is_null();
  } catch (const json::exception&) {
    return false;
  }
}

bool would_abort_or_do_nothing(const json& doc, const json& op) {
  const std::string name = op["op"];
  if (name == "replace" || name == "test") return false;
  if (name != "move") return lands_in_scalar(doc, op["path"]);
  if (lands_in_scalar(doc, op["from"])) return true;
  json without = doc;
  try {
    without.at(json::json_pointer(op["from"].get<std::string>()));
    without.patch_inplace(json::array({{{"op", "remove"}, {"path", op["from"]}}}));
  } catch (const json::exception&) {
    return false;
  }
  return lands_in_scalar(without, op["path"]);
}

}  // namespace

TEST_CASE("operations change the document as nlohmann's patch does, or fail as it does", "[plan]") {
  std::mt19937 rng(17);
  int applied = 0, refused = 0, scalar_parents = 0;
  for (int i = 0; i < 30000; i++) {
    json doc = random_document(rng);
    static const std::vector<std::string> ops = {"add",    "remove",  "replace", "add",
                                                 "remove", "replace", "move",    "copy"};
    json op = {{"op", pick(rng, ops)}, {"path", random_pointer(rng, doc)}};
    if (op["op"] == "move" || op["op"] == "copy") op["from"] = random_pointer(rng, doc);
    if (op["op"] == "add" || op["op"] == "replace") op["value"] = random_value(rng);
    INFO("doc " << doc.dump() << " op " << op.dump());

    JsonTarget target(doc);
    PatchSession session(no_schema_protection(), "h", /*may_override=*/true, target, {});
    std::string why = session.apply(op, 0);
    if (op["path"] == "" || op.value("from", "-") == "") {
      REQUIRE_FALSE(why.empty());  // the whole plan holds driver-owned fields
      continue;
    }
    if (would_abort_or_do_nothing(doc, op)) {
      // Refused (a move's source beneath a scalar does not exist; otherwise
      // the scalar is named); nlohmann is not asked: it would abort.
      REQUIRE_FALSE(why.empty());
      if (why.find("not an object or array: it has no member") != std::string::npos) scalar_parents++;
      continue;
    }
    json expected = doc;
    bool expected_ok = true;
    try {
      expected.patch_inplace(json::array({op}));
    } catch (const json::exception&) {
      expected_ok = false;
    }
    REQUIRE(why.empty() == expected_ok);
    if (expected_ok) {
      REQUIRE(target.doc() == expected);
      applied++;
    } else {
      refused++;
    }
  }
  // Every outcome was exercised, many times.
  CHECK(applied > 3000);
  CHECK(refused > 2000);
  CHECK(scalar_parents > 300);
}

TEST_CASE("a hook adding beneath a string, number or boolean is refused, not a crash", "[plan]") {
  v1::DriverSandbox sandbox;
  REQUIRE(google::protobuf::util::JsonStringToMessage(kSandbox, &sandbox).ok());
  auto plan = Plan::from(sandbox);
  REQUIRE(plan.ok());
  auto status = plan->apply("h", json::array({{{"op", "add"}, {"path", "/spec/template/image/0"}, {"value", 1}}}),
                            false, PatchRules{});
  REQUIRE_FALSE(status.ok());
  CHECK(status.error_message() ==
        "hook \"h\": patch 0 (add /spec/template/image/0): /spec/template/image is a string, not an object or array: "
        "it has no member \"0\"");
  status = plan->apply("h", json::array({{{"op", "remove"}, {"path", "/spec/log_level/x"}}}), false, PatchRules{});
  REQUIRE_FALSE(status.ok());
  CHECK_THAT(status.error_message(), Catch::Contains("/spec/log_level is a string"));
  CHECK(plan->changes().empty());
}

TEST_CASE("the write-back by changed paths writes what comparing the whole plan writes", "[plan]") {
  std::mt19937 rng(23);
  // The request as the gateway sent it, some parts missing: a hook's add
  // then creates them (where the write-back copies whole messages).
  std::vector<v1::DriverSandbox> requests(4, sandbox_with_unknown_fields());
  requests[1].mutable_spec()->mutable_template_()->clear_driver_config();
  requests[2].mutable_spec()->mutable_template_()->clear_labels();
  requests[2].mutable_spec()->clear_environment();
  requests[3].mutable_spec()->clear_template_();
  int compared = 0;
  for (int round = 0; round < 4000; round++) {
    const v1::DriverSandbox& request = requests[round % requests.size()];
    auto plan = Plan::from(request);
    REQUIRE(plan.ok());
    for (int hook = 0; hook < 3; hook++) {
      json patches = json::array();
      for (unsigned n = 1 + rng() % 4; n > 0; n--) patches.push_back(random_sandbox_op(rng));
      (void)plan->apply("h" + std::to_string(hook), patches, /*may_override=*/true, PatchRules{});
    }
    if (plan->changes().empty()) continue;
    INFO("plan " << plan->json().dump());

    v1::DriverSandbox by_paths = request;
    REQUIRE(plan->write_back(by_paths).ok());
    v1::DriverSandbox whole = request;
    v1::DriverSandbox after = plan->view();
    write_changes(plan->original(), after, whole);
    REQUIRE(canonical_bytes(by_paths) == canonical_bytes(whole));
    // What the view never had is still there.
    CHECK(by_paths.spec().sandbox_token() == "jwt-secret");
    if (request.spec().environment().count("OPENSHELL_SANDBOX_TOKEN")) {
      CHECK(by_paths.spec().environment().at("OPENSHELL_SANDBOX_TOKEN") == "env-token");
    }
    CHECK(by_paths.GetReflection()->GetUnknownFields(by_paths).field_count() == 1);
    compared++;
  }
  CHECK(compared > 2000);
}

TEST_CASE("the byte limit of a patch set is its JSON text's size, exactly", "[plan]") {
  std::mt19937 rng(29);
  v1::DriverSandbox sandbox;
  REQUIRE(google::protobuf::util::JsonStringToMessage(kSandbox, &sandbox).ok());
  for (int i = 0; i < 2000; i++) {
    json patches = json::array();
    for (unsigned n = 1 + rng() % 3; n > 0; n--) {
      json value = rng() % 3 == 0 ? json{{random_text(rng), random_text(rng)}} : json(random_text(rng));
      patches.push_back(
          {{"op", "add"}, {"path", "/spec/template/driver_config/k" + std::to_string(n)}, {"value", value}});
    }
    const size_t size = patches.dump().size();
    INFO(patches.dump());
    PatchRules exact;
    exact.max_bytes = size;
    auto plan = Plan::from(sandbox);
    REQUIRE(plan.ok());
    CHECK(plan->apply("h", patches, false, exact).ok());
    PatchRules short_by_one;
    short_by_one.max_bytes = size - 1;
    auto again = Plan::from(sandbox);
    REQUIRE(again.ok());
    auto status = again->apply("h", patches, false, short_by_one);
    REQUIRE_FALSE(status.ok());
    CHECK(status.error_message() == "hook \"h\": the patch set is " + std::to_string(size) +
                                        " bytes, more than the limit of " + std::to_string(size - 1) + " (max_bytes)");
  }
}
