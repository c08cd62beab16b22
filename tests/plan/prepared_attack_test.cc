// A hostile reviewer's attacks on prepared patch sets (plan/patch_session.h
// PreparedPatches, Plan::apply_prepared), the message target's kept walk
// (plan/message_target.cc) and PathOwners::first_below (plan/owners.cc).
// Every prepared set must give what apply(prepared_to_json(ops)) gives on
// the JSON form (json_only): status, error text, view, JSON form, owners and
// changes; values pointed at must never change.
#include "plan/message_target.h"
#include "plan/owners.h"
#include "plan/plan.h"
#include "plan/write_back.h"
#include "tests/plan/plan_pair.h"

#include <google/protobuf/util/json_util.h>
#include <catch2/catch.hpp>

#include <limits>
#include <random>

using namespace owrap;
using nlohmann::json;
namespace v1 = openshell::compute::v1;
using owrap::test::plan_of;
using owrap::test::request_from;
using owrap::test::require_same_plans;
using owrap::test::text;

namespace {

const char* kRequest = R"({
  "id": "sb-1", "name": "one", "namespace": "ns",
  "spec": {
    "log_level": "info",
    "environment": {"APP": "1", "a/b": "2", "~": "t"},
    "command": ["sleep", "1", "2", "3"],
    "template": {
      "image": "busybox",
      "labels": {"team": "a", "a/b~c": "x", "y": "z"},
      "environment": {"X": "y"},
      "driver_config": {"pod": {"node_selector": {"zone": "a"}, "tolerations": [{"key": "k"}, [1, {"deep": "v"}]]},
                        "keep": true, "n": null, "list": [0, [1, [2, {"d": 3}]]], "num": 2.5}
    }
  }
})";

json op(const std::string& o, const std::string& path) {
  return {{"op", o}, {"path", path}};
}

json op(const std::string& o, const std::string& path, json value) {
  return {{"op", o}, {"path", path}, {"value", std::move(value)}};
}

// `set` (add, remove, replace with valid pointers) as an in-process hook
// would prepare it: values pointed at in `set` itself when `pointed`, else
// owned by each operation.
PreparedPatches prepare(const json& set, bool pointed) {
  PreparedPatches ops;
  for (const auto& raw : set) {
    auto path = parse_pointer(raw.at("path").get<std::string>());
    REQUIRE(path.ok());
    const std::string o = raw.at("op").get<std::string>();
    const json* value = o == "remove" ? nullptr : &raw.at("value");
    if (pointed) {
      ops.push_back(prepared_add(std::move(path.value()), value));
    } else {
      ops.push_back(prepared_add(std::move(path.value()), nullptr, value ? *value : json()));
    }
    ops.back().op = o;
  }
  return ops;
}

// Hook hN's prepared set sets[N] on one plan, the same as JSON on the JSON
// form on another, compared after each. Returns the last status.
grpc::Status prepared_vs_json(const v1::DriverSandbox& request, const std::vector<json>& sets, bool may_override,
                              PatchRules rules = {}, bool pointed = false) {
  Plan fast = plan_of(request);
  Plan reference = plan_of(request);
  PatchRules json_only = rules;
  json_only.json_only = true;
  grpc::Status last;
  for (size_t i = 0; i < sets.size(); i++) {
    const std::string hook = "h" + std::to_string(i);
    const json before = sets[i];
    PreparedPatches ops = prepare(sets[i], pointed);
    const json as_json = prepared_to_json(ops);
    INFO("hook " << hook << " set " << text(sets[i]) << " plan " << text(reference.json()));
    REQUIRE(as_json == sets[i]);
    grpc::Status a = fast.apply_prepared(hook, ops, may_override, rules);
    grpc::Status b = reference.apply(hook, as_json, may_override, json_only);
    INFO("prepared: " << a.error_message() << " | JSON: " << b.error_message());
    REQUIRE(a.ok() == b.ok());
    REQUIRE(a.error_message() == b.error_message());
    REQUIRE(sets[i] == before);  // values pointed at are never changed
    require_same_plans(fast, reference);
    last = a;
  }
  return last;
}

// Both value forms, with and without may_override.
void all_ways(const v1::DriverSandbox& request, const std::vector<json>& sets, PatchRules rules = {}) {
  for (bool pointed : {false, true}) {
    for (bool may_override : {false, true}) prepared_vs_json(request, sets, may_override, rules, pointed);
  }
}

json nested(int levels, json leaf) {
  for (int i = 0; i < levels; i++) leaf = json{{"a", std::move(leaf)}};
  return leaf;
}

}  // namespace

// ------------------------------------------------- Unsure after the whole set

// Plan::stage_on_message throws Unsure AFTER session.apply_all() returned
// (the patched view does not print back: -0.0, NaN, too deep), but
// apply_all(PreparedPatches&) gives the operations back their moved-out
// path/path_text only when the target throws midway. Plan::apply_prepared
// then runs prepared_to_json(ops) whose "path"s are all "" (the whole
// document).
TEST_CASE("prepared attack: -0.0 written by the last operation of a set", "[plan][prepared-attack]") {
  auto r = request_from(kRequest);
  prepared_vs_json(r, {json::array({op("add", "/spec/template/driver_config/z", -0.0)})}, true);
}

TEST_CASE("prepared attack: -0.0 written first, then a label, in one set", "[plan][prepared-attack]") {
  auto r = request_from(kRequest);
  prepared_vs_json(
      r, {json::array({op("add", "/spec/template/driver_config/z", -0.0), op("add", "/spec/template/labels/x", "y")})},
      false, {}, /*pointed=*/true);
}

TEST_CASE("prepared attack: a value nested near the printers' depth limit", "[plan][prepared-attack]") {
  auto r = request_from(kRequest);
  for (int levels = 18; levels <= 31; levels++) {
    INFO("levels " << levels);
    prepared_vs_json(r, {json::array({op("add", "/spec/template/driver_config/a", nested(levels, 1))})}, true);
  }
}

// ------------------------------------------------------- midway Unsure

// The message is unsure of the third operation (a missing member): the
// first two, already recorded, get their pointers back and the set runs
// again as JSON, escapes and all.
TEST_CASE("prepared attack: unsure midway after escaped pointers were recorded", "[plan][prepared-attack]") {
  auto r = request_from(kRequest);
  all_ways(r, {json::array({op("add", "/spec/template/labels/new~1one~0", "v"),
                            op("replace", "/spec/template/labels/a~1b~0c", "w"),
                            op("remove", "/spec/template/labels/missing")})});
  all_ways(r, {json::array({op("add", "/spec/environment/~0~1", "v"), op("remove", "/spec/environment/a~1b"),
                            op("replace", "/spec/template/driver_config/pod/tolerations/7", 1)})});
  all_ways(r, {json::array({op("add", "/spec/template/driver_config/k~1", "v"),
                            op("add", "/spec/template/driver_config/nope/deeper", 1)})});
}

// --------------------------------------------------- refusals and labels

TEST_CASE("prepared attack: refusals name the operation as its JSON does", "[plan][prepared-attack]") {
  auto r = request_from(kRequest);
  // driver-owned
  auto s =
      prepared_vs_json(r, {json::array({op("add", "/spec/template/labels/q", "1"), op("replace", "/id", "x")})}, false);
  CHECK(s.error_message().find("patch 1 (replace /id)") != std::string::npos);
  // another hook's change, with escapes in the path
  s = prepared_vs_json(
      r,
      {json::array({op("add", "/spec/template/labels/a~1b~0c", "mine")}),
       json::array({op("add", "/spec/template/labels/ok", "1"), op("remove", "/spec/template/labels/a~1b~0c")})},
      false, {}, true);
  CHECK(s.error_message().find("patch 1 (remove /spec/template/labels/a~1b~0c)") != std::string::npos);
  // the whole sandbox token's map entry, a secret
  all_ways(r, {json::array({op("add", "/spec/sandbox_token", "x")})});
  all_ways(r, {json::array({op("replace", "/spec/template/labels", json{{"openshell.io/x", "1"}})})});
}

TEST_CASE("prepared attack: remove and replace across hooks, both value forms", "[plan][prepared-attack]") {
  auto r = request_from(kRequest);
  all_ways(r, {json::array({op("replace", "/spec/template/driver_config/pod/node_selector", json{{"b", 1}}),
                            op("remove", "/spec/template/driver_config/keep")}),
               json::array({op("remove", "/spec/template/driver_config/pod/node_selector/b"),
                            op("replace", "/spec/template/driver_config/num", "s")}),
               json::array({op("replace", "/spec/template/driver_config/pod", json::object()),
                            op("add", "/spec/template/driver_config/pod/x", json::array())})});
}

// ------------------------------------------------------------ limits

// The size bound must never be below the real dump: at the limit exactly the
// set passes, one byte below it fails, with the JSON form's message.
TEST_CASE("prepared attack: max_bytes at the boundary with escapes and unicode", "[plan][prepared-attack]") {
  auto r = request_from(kRequest);
  const std::string nasty = std::string("q\"\\\x01\x1f/~\t\n") + "\xc3\xa9\xf0\x9f\x98\x80";
  const std::vector<json> values = {
      nasty,
      json{{nasty, json::array({nasty, 1.0 / 3.0, -1.2345678901234567e-308, std::numeric_limits<int64_t>::min(),
                                std::numeric_limits<uint64_t>::max(), nullptr, false})}},
      -1.7976931348623157e308,
      json::object(),
  };
  for (const json& value : values) {
    json set =
        json::array({op("add", "/spec/template/driver_config/" + escape_token(nasty), value),
                     op("add", "/spec/template/labels/" + escape_token(nasty + "l"), nasty),
                     op("replace", "/spec/template/labels/a~1b~0c", "\x7f"), op("remove", "/spec/template/labels/y")});
    const size_t exact = set.dump().size();
    for (size_t max : {exact - 1, exact, exact + 1}) {
      PatchRules rules;
      rules.max_bytes = max;
      INFO("exact " << exact << " max " << max);
      auto s = prepared_vs_json(r, {set}, true, rules, true);
      CHECK(s.ok() == (max >= exact));
      if (max < exact) CHECK(s.error_message().find("(max_bytes)") != std::string::npos);
    }
    for (size_t n : {set.size() - 1, set.size()}) {
      PatchRules rules;
      rules.max_patches = n;
      auto s = prepared_vs_json(r, {set}, false, rules);
      CHECK(s.ok() == (n == set.size()));
    }
  }
}

// ---------------------------------------------- the message target's kept walk

// Sequences in ONE set that replace or remove an ancestor of the last walk,
// or what held a deeper node, then go deeper again (run under
// AddressSanitizer: a stale node is a use after free).
TEST_CASE("prepared attack: one set replaces what the last walk went through", "[plan][prepared-attack]") {
  auto r = request_from(kRequest);
  const std::string dc = "/spec/template/driver_config";
  std::vector<json> sets = {
      json::array({op("add", dc + "/pod/node_selector/a", "1"),
                   op("replace", dc + "/pod", json{{"node_selector", {{"b", 1}}}}),
                   op("add", dc + "/pod/node_selector/c", 2), op("remove", dc + "/pod/node_selector/b"),
                   op("add", dc + "/pod/x", 3), op("add", dc + "/pod/node_selector/d", 4)}),
      json::array({op("add", dc + "/pod/tolerations/1/1/deep2", "x"), op("remove", dc + "/pod/tolerations/0"),
                   op("add", dc + "/pod/tolerations/0/1/deep3", "y"),
                   op("replace", dc + "/pod/tolerations/0", json::array({json::object()})),
                   op("add", dc + "/pod/tolerations/0/0/k", 1), op("add", dc + "/pod/tolerations/0/-", 5),
                   op("add", dc + "/pod/tolerations/0", json{{"z", 1}}), op("add", dc + "/pod/tolerations/1/0/k2", 2)}),
      json::array({op("add", dc + "/list/1/1/1/e", 4), op("remove", dc + "/list/1"),
                   op("add", dc + "/list/0", json::array({json::object()})), op("add", dc + "/list/0/0/f", 5),
                   op("replace", dc + "/list", json::array({json::array({json::object()})})),
                   op("add", dc + "/list/0/0/g", 6), op("remove", dc + "/list/0/0"), op("add", dc + "/list/0/-", 7)}),
      json::array(
          {op("add", "/spec/template/labels/p", "1"),
           op("replace", "/spec/template", json{{"labels", {{"q", "2"}}}, {"driver_config", {{"a", {{"b", 1}}}}}}),
           op("add", "/spec/template/labels/r", "3"), op("add", dc + "/a/c", 2), op("remove", dc + "/a/b"),
           op("add", dc + "/a/b", json{{"x", 1}}), op("add", dc + "/a/b/y", 2)}),
      json::array({op("remove", dc), op("add", dc, json{{"pod", {{"t", json::array()}}}}),
                   op("add", dc + "/pod/t/-", 1), op("add", dc + "/pod/t/0", json::object()),
                   op("add", dc + "/pod/t/0/u", 1), op("remove", dc + "/pod/t/1"), op("add", dc + "/pod/t/0/v", 2)}),
      json::array({op("add", "/spec/command/0", "a"), op("remove", "/spec/command/2"),
                   op("replace", "/spec/command/1", "b"), op("add", "/spec/command/-", "c"),
                   op("remove", "/spec/command/0"), op("add", "/spec/command/2", "d"),
                   op("replace", "/spec/command", json::array({"only"})), op("add", "/spec/command/0", "first")}),
      json::array({op("add", "/spec/template/labels/x", "1"), op("remove", "/spec/template/labels/team"),
                   op("replace", "/spec/template/labels", json{{"k", "v"}}), op("add", "/spec/template/labels/y", "2"),
                   op("remove", "/spec/template/labels/k"), op("add", "/spec/template/environment/E", "e"),
                   op("replace", "/spec/template/environment", json{{"F", "f"}}),
                   op("add", "/spec/template/environment/G", "g")}),
      json::array({op("add", dc + "/pod/node_selector/a", "1"), op("replace", "/spec/template/image", "alpine"),
                   op("add", dc + "/pod/node_selector/b", "2"), op("remove", "/spec/template/driver_config"),
                   op("add", "/spec/template/driver_config", json{{"pod", {{"node_selector", json::object()}}}}),
                   op("add", dc + "/pod/node_selector/c", "3")}),
  };
  size_t on_message = 0;
  for (const json& set : sets) {
    all_ways(r, {set});
    owrap::test::PlanPair pair(r);
    pair.apply("h0", set, true);
    pair.check_write_back();
    UNSCOPED_INFO("on the message: " << pair.fast().applied_on_message() << " " << text(set));
    on_message += pair.fast().applied_on_message();
  }
  CHECK(on_message >= sets.size() - 2);
}

// Random sets built against the document as the set so far left it (so
// most operations succeed), over long shared prefixes: the kept walk is
// reused, cut and rebuilt all the time.
namespace {

json random_op(const json& doc, std::mt19937& rng) {
  static const std::vector<std::string> roots = {"/spec/template/driver_config", "/spec/template/labels",
                                                 "/spec/environment", "/spec/command", "/spec/template/environment"};
  static const std::vector<json> values = {"s",
                                           1,
                                           json::array({json::object(), 1}),
                                           json{{"a", {{"x", 1}}}},
                                           json::object(),
                                           json::array(),
                                           json{{"node_selector", {{"a", "b"}}}},
                                           json::array({json::array({json{{"q", 1}}})})};
  const bool strings = rng() % 5 != 0;  // maps and command take strings
  std::string at = roots[rng() % roots.size()];
  auto tokens = parse_pointer(at);
  const json* node = find_at(doc, tokens.value());
  if (!node)
    return op("add", at, at.find("driver_config") != std::string::npos ? json{{"pod", {{"a", 1}}}} : json{{"k", "v"}});
  while (node->is_structured() && !node->empty() && rng() % 3 != 0) {
    if (node->is_object()) {
      auto it = node->begin();
      std::advance(it, rng() % node->size());
      at += "/" + escape_token(it.key());
      node = &*it;
    } else {
      size_t i = rng() % node->size();
      at += "/" + std::to_string(i);
      node = &(*node)[i];
    }
  }
  const json value = strings && at.find("driver_config") == std::string::npos ? json("v" + std::to_string(rng() % 9))
                                                                              : values[rng() % values.size()];
  const unsigned kind = rng() % 4;
  if (node->is_object()) {
    if (kind == 0 || node->empty()) return op("add", at + "/k" + std::to_string(rng() % 4), value);
    auto it = node->begin();
    std::advance(it, rng() % node->size());
    std::string member = at + "/" + escape_token(it.key());
    return kind == 1 ? op("remove", member) : kind == 2 ? op("replace", member, value) : op("add", member, value);
  }
  if (node->is_array()) {
    if (kind == 0 || node->empty()) {
      std::string index = rng() % 3 == 0 ? "-" : std::to_string(rng() % (node->size() + 1));
      return op("add", at + "/" + index, value);
    }
    std::string member = at + "/" + std::to_string(rng() % node->size());
    return kind == 1 ? op("remove", member) : op("replace", member, value);
  }
  return rng() % 2 ? op("remove", at) : op("replace", at, value);
}

}  // namespace

TEST_CASE("prepared attack: random sets with shared prefixes keep no stale node", "[plan][prepared-attack]") {
  std::mt19937 rng(7);
  int ok = 0, on_message = 0;
  for (int round = 0; round < 1500; round++) {
    auto r = request_from(kRequest);
    json doc = plan_of(r).json();
    json set = json::array();
    const size_t n = 3 + rng() % 12;
    for (size_t i = 0; i < n; i++) {
      json next = random_op(doc, rng);
      try {
        doc.patch_inplace(json::array({next}));
      } catch (const json::exception&) {
      }
      set.push_back(std::move(next));
    }
    auto s = prepared_vs_json(r, {set}, round % 2 == 0, {}, round % 3 == 0);
    if (s.ok()) ok++;
    owrap::test::PlanPair pair(r);
    pair.apply("h0", set, true);
    on_message += static_cast<int>(pair.fast().applied_on_message());
  }
  CHECK(ok > 500);
  CHECK(on_message > 300);
}

// -------------------------------------------------------------- owners

namespace {

// PathOwners as the rules read plainly, over every owned path.
struct PlainOwners {
  std::map<std::string, std::string> owned;

  static bool below(const std::string& p, const std::string& at) {
    return p.size() > at.size() && p.compare(0, at.size(), at) == 0 && p[at.size()] == '/';
  }
  bool conflicts(const std::string& pointer, const std::string& hook) const {
    for (const auto& [p, h] : owned) {
      if (h != hook && (p == pointer || below(p, pointer) || below(pointer, p))) return true;
    }
    return false;
  }
  void erase_at_and_below(const std::string& pointer) {
    for (auto it = owned.begin(); it != owned.end();)
      it = it->first == pointer || below(it->first, pointer) ? owned.erase(it) : std::next(it);
  }
  void leaves(const std::string& at, const json& v, const std::string& hook) {
    if (!v.is_object() || v.empty()) {
      owned[at] = hook;
      return;
    }
    for (const auto& [k, item] : v.items()) leaves(at + "/" + escape_token(k), item, hook);
  }
  void claim_set(const std::string& pointer, const json& v, const std::string& hook) {
    erase_at_and_below(pointer);
    leaves(pointer, v, hook);
  }
  void shift(const std::string& array, size_t index, int delta) {
    std::map<std::string, std::string> out;
    for (const auto& [p, h] : owned) {
      if (!below(p, array)) {
        out[p] = h;
        continue;
      }
      std::string rest = p.substr(array.size() + 1);
      size_t slash = rest.find('/');
      std::string token = rest.substr(0, slash);
      bool digits = !token.empty() && token.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || std::stoul(token) < index) {
        out[p] = h;
        continue;
      }
      size_t at = std::stoul(token);
      if (delta < 0 && at == index) continue;
      out[array + "/" + std::to_string(at + delta) + (slash == std::string::npos ? "" : rest.substr(slash))] = h;
    }
    owned = std::move(out);
  }
};

}  // namespace

TEST_CASE("prepared attack: owners against a plain reading, with \"\", ~0, ~1 and shifts", "[plan][prepared-attack]") {
  const std::vector<std::string> tokens = {"a", "a-b", "a.b", "a~0",      "a~1b", "",  "0",
                                           "1", "10",  "2",   "\xc3\xa9", "a!",   "~1"};
  std::mt19937 rng(11);
  for (int round = 0; round < 300; round++) {
    PathOwners owners;
    PlainOwners plain;
    auto pointer = [&] {
      std::string out;
      size_t depth = rng() % 4;
      for (size_t i = 0; i < depth; i++) out += "/" + tokens[rng() % tokens.size()];
      return out;
    };
    for (int step = 0; step < 30; step++) {
      const std::string hook = "h" + std::to_string(rng() % 3);
      const std::string p = pointer();
      INFO("round " << round << " step " << step << " pointer '" << p << "' hook " << hook);
      switch (rng() % 4) {
        case 0: {
          json v = rng() % 2 ? json("x") : json{{"a", 1}, {"a~b/c", {{"0", 2}}}, {"", json::object()}};
          owners.claim_set(p, v, hook);
          plain.claim_set(p, v, hook);
          break;
        }
        case 1: {
          auto tokens_of = parse_pointer(p);
          REQUIRE(tokens_of.ok());
          if (tokens_of.value().empty()) break;
          owners.claim_removal(tokens_of.value(), hook);
          plain.erase_at_and_below(p);
          plain.owned[p] = hook;
          break;
        }
        case 2: {
          auto tokens_of = parse_pointer(p);
          REQUIRE(tokens_of.ok());
          size_t index = rng() % 3;
          int delta = rng() % 2 ? 1 : -1;
          owners.shift(tokens_of.value(), index, delta);
          plain.shift(p, index, delta);
          break;
        }
        default:
          break;
      }
      REQUIRE(std::map<std::string, std::string>(owners.by_path().begin(), owners.by_path().end()) == plain.owned);
      const std::string q = rng() % 5 == 0 ? std::string() : pointer();
      auto c = owners.conflict(q, hook);
      INFO("conflict at '" << q << "'");
      REQUIRE(c.has_value() == plain.conflicts(q, hook));
      if (c) {
        REQUIRE(c->hook != hook);
        REQUIRE(plain.owned.count(c->path) == 1);
        REQUIRE(plain.owned.at(c->path) == c->hook);
      }
    }
  }
}
