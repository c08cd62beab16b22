// A plan applied two ways side by side, for the differential tests of
// plan/message_target.h: with the default rules (the message, where it is
// sure) and with json_only (the JSON form alone, the reference). Every patch
// set must give the same outcome, error text, view, JSON form, owners and
// changes, a preview first; the write-backs onto the request the same bytes.
#pragma once

#include "plan/message_target.h"
#include "plan/plan.h"
#include "plan/write_back.h"

#include <google/protobuf/util/json_util.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace owrap::test {

// A value a hook may write that the JSON form prints otherwise (-0, NaN,
// infinities) or not at all (too deep), among plain ones, nested up to 13
// levels in objects and arrays.
inline nlohmann::json hostile_value(std::mt19937& rng) {
  static const std::vector<nlohmann::json> leaves = {
      "v",
      1,
      2.5,
      -0.0,
      std::nan(""),
      HUGE_VAL,
      -HUGE_VAL,
      nullptr,
      true,
      nlohmann::json::object(),
      nlohmann::json::array(),
  };
  nlohmann::json v = leaves[rng() % leaves.size()];
  for (unsigned levels = rng() % 14; levels > 0; levels--) {
    v = rng() % 2 ? nlohmann::json{{"k" + std::to_string(rng() % 3), std::move(v)}, {"s", "x"}}
                  : nlohmann::json::array({std::move(v), 0});
  }
  return v;
}

// One RFC 6902 operation (add, remove or replace) run on `target` as the
// plan's session would hand it over; MessageTarget::Unsure passes through.
inline void run_operation(MessageTarget& target, const nlohmann::json& raw) {
  PatchOp op;
  op.raw = &raw;
  op.op = raw["op"];
  op.path_text = raw["path"];
  op.path = parse_pointer(op.path_text).value();
  if (op.op != "remove") op.value = &raw["value"];
  target.run(op);
}

// A DriverSandbox from protobuf JSON text (a test's fixed request).
inline openshell::compute::v1::DriverSandbox request_from(const char* json_text) {
  openshell::compute::v1::DriverSandbox out;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json_text, &out).ok());
  return out;
}

// JSON for a failure message, invalid UTF-8 replaced.
inline std::string text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

inline Plan plan_of(const openshell::compute::v1::DriverSandbox& request) {
  auto plan = Plan::from(request);
  REQUIRE(plan.ok());
  return std::move(plan.value());
}

// The same view, JSON form, owners and change log, change by change.
inline void require_same_plans(const Plan& fast, const Plan& reference) {
  REQUIRE(canonical_bytes(fast.view()) == canonical_bytes(reference.view()));
  REQUIRE(fast.json() == reference.json());
  REQUIRE(fast.owners() == reference.owners());
  REQUIRE(fast.changes().size() == reference.changes().size());
  for (size_t i = 0; i < fast.changes().size(); i++) {
    const PlanChange& x = fast.changes()[i];
    const PlanChange& y = reference.changes()[i];
    REQUIRE(x.hook == y.hook);
    REQUIRE(x.op == y.op);
    REQUIRE(x.path == y.path);
    REQUIRE(x.from == y.from);
    REQUIRE(x.value == y.value);
    REQUIRE(x.path_tokens == y.path_tokens);
    REQUIRE(x.from_tokens == y.from_tokens);
  }
}

class PlanPair {
 public:
  explicit PlanPair(const openshell::compute::v1::DriverSandbox& request)
      : request_(request), fast_(plan_of(request)), reference_(plan_of(request)) {
    json_only_.json_only = true;
  }

  // Hook `name`'s patch set, both ways; the fast side's status.
  grpc::Status apply(const std::string& name, const nlohmann::json& patches, bool may_override) {
    INFO("hook " << name << " patches " << text(patches) << " plan " << reference_.json().dump());
    auto preview = fast_.preview(name, patches, may_override, PatchRules{});
    auto preview_reference = reference_.preview(name, patches, may_override, json_only_);
    REQUIRE(preview.ok() == preview_reference.ok());
    if (!preview.ok()) REQUIRE(preview.error() == preview_reference.error());

    auto prepared = prepared_ ? as_prepared(patches) : std::nullopt;
    if (prepared) prepared_sets_++;
    grpc::Status a = prepared ? fast_.apply_prepared(name, *prepared, may_override, PatchRules{})
                              : fast_.apply(name, patches, may_override, PatchRules{});
    grpc::Status b = reference_.apply(name, patches, may_override, json_only_);
    INFO("status " << a.error_message() << " | reference " << b.error_message());
    REQUIRE(reference_.applied_on_message() == 0);
    REQUIRE(a.ok() == b.ok());
    REQUIRE(a.error_message() == b.error_message());
    REQUIRE(a.ok() == preview.ok());
    require_same_plans(fast_, reference_);
    return a;
  }

  // Both plans written back onto the request give the same bytes.
  void check_write_back() const {
    openshell::compute::v1::DriverSandbox x = request_;
    openshell::compute::v1::DriverSandbox y = request_;
    REQUIRE(fast_.write_back(x).ok());
    REQUIRE(reference_.write_back(y).ok());
    REQUIRE(canonical_bytes(x) == canonical_bytes(y));
  }

  const Plan& fast() const { return fast_; }
  // The fast side applies what it can as a prepared set (an in-process
  // hook's form), made here from the JSON.
  void use_prepared() { prepared_ = true; }
  int prepared_sets() const { return prepared_sets_; }

  // `patches` as a prepared set: only add, remove and replace with valid
  // pointers and the values they need.
  static std::optional<PreparedPatches> as_prepared(const nlohmann::json& patches) {
    if (!patches.is_array()) return std::nullopt;
    PreparedPatches ops;
    for (const auto& raw : patches) {
      if (!is_patch_op(raw, {"add", "remove", "replace"})) return std::nullopt;
      auto path = parse_pointer(raw.at("path").get<std::string>());
      if (!path) return std::nullopt;
      const std::string op = raw.at("op").get<std::string>();
      if (op != "remove" && !raw.contains("value")) return std::nullopt;
      ops.push_back(prepared_add(std::move(path.value()), nullptr, op == "remove" ? nullptr : raw.at("value")));
      ops.back().op = op;
    }
    return ops;
  }

 private:
  openshell::compute::v1::DriverSandbox request_;
  Plan fast_;
  Plan reference_;
  PatchRules json_only_;
  bool prepared_ = false;
  int prepared_sets_ = 0;
};

}  // namespace owrap::test
